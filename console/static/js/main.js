// The console's shell: login, the tabs, the polling loop that refreshes the open page (every
// POLL_MS, so the page is never more than about 2 s behind), the "backend unreachable" banner,
// and the way back to the login form when the token expires.
import { api, on, post, session } from './api.js';
import { el, fill } from './dom.js';
import { createOverview } from './pages/overview.js';
import { createStrategies } from './pages/strategies.js';
import { createOrders } from './pages/orders.js';
import { createRisk } from './pages/risk.js';
import { createBacktests } from './pages/backtests.js';

const POLL_MS = 1500;
const PAGES = {
  overview: ['Overview', createOverview],
  strategies: ['Strategies', createStrategies],
  orders: ['Orders & positions', createOrders],
  risk: ['Risk', createRisk],
  backtests: ['Backtests', createBacktests],
};

const $ = (id) => document.getElementById(id);
let page = null; // {name, element, refresh(status)}
let pollGeneration = 0; // a new login starts a new loop; the old one ends at its next turn
let wakeUp = null; // resolves the wait between two polls early (after an action)

// --- what every page gets --------------------------------------------------------------------
const ctx = {
  get isAdmin() { return session.isAdmin; },
  refreshNow() { refreshSoon(); },
  notify(message, kind = 'info') {
    const toast = $('toast');
    toast.className = `toast ${kind}`;
    toast.textContent = message;
    toast.hidden = false;
    clearTimeout(ctx.toastTimer);
    ctx.toastTimer = setTimeout(() => { toast.hidden = true; }, kind === 'error' ? 9000 : 5000);
  },
  // An action's request: the toast says what the API answered; the page refreshes at once.
  async act(label, request) {
    try {
      const reply = await request();
      ctx.notify(reply.message || `${label}: done`, reply.partial ? 'warn' : 'ok');
      return reply;
    } catch (error) {
      if (error.status !== 0 && error.status !== 401) ctx.notify(`${label}: ${error.message}`, 'error');
      return null;
    } finally {
      refreshSoon();
    }
  },
  confirm(text, confirmLabel = 'Confirm') {
    const dialog = $('confirm-dialog');
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = confirmLabel;
    dialog.returnValue = '';
    dialog.showModal();
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    });
  },
};

// --- login -----------------------------------------------------------------------------------
function showLogin(message = '') {
  pollGeneration += 1;
  session.clear();
  page = null;
  $('app-view').hidden = true;
  $('login-view').hidden = false;
  $('login-message').textContent = message;
  $('login-form').reset();
  $('login-email').focus();
}

async function login(event) {
  event.preventDefault();
  const email = $('login-email').value.trim();
  const password = $('login-password').value;
  $('login-message').textContent = '';
  try {
    const reply = await post('/api/login', { email, password });
    session.save(reply.token, reply.role || 'viewer', email);
    startApp();
  } catch (error) {
    $('login-message').textContent = error.status === 0 ? 'The backend is unreachable.' : error.message;
  }
}

function logout() {
  showLogin('Logged out.');
}

// --- pages and polling -----------------------------------------------------------------------
function startApp() {
  $('login-view').hidden = true;
  $('app-view').hidden = false;
  $('user').textContent = `${session.email} (${session.role})`;
  document.body.classList.toggle('viewer', !session.isAdmin);
  route();
  poll(++pollGeneration);
}

function route() {
  if (!session.token) return;
  const name = PAGES[location.hash.slice(1)] ? location.hash.slice(1) : 'overview';
  for (const link of $('tabs').querySelectorAll('a')) {
    link.classList.toggle('active', link.dataset.page === name);
  }
  if (page && page.name === name) return;
  const [, create] = PAGES[name];
  page = { name, ...create(ctx) };
  fill($('page'), page.element);
  refreshSoon();
}

function refreshSoon() {
  if (wakeUp) wakeUp();
}

async function poll(generation) {
  while (generation === pollGeneration) {
    await refresh();
    await new Promise((resolve) => {
      wakeUp = resolve;
      setTimeout(resolve, POLL_MS);
    });
    wakeUp = null;
  }
}

// One status document for the header and the page (pages fetch what else they need).
async function refresh() {
  const current = page;
  if (!current) return;
  let status = null;
  try {
    status = await api('/api/status');
    renderHeader(status);
  } catch {
    return; // unreachable or expired: the banner or the login form says so
  }
  try {
    await current.refresh(status);
  } catch (error) {
    if (error.status > 0 && error.status !== 401) ctx.notify(error.message, 'error');
  }
}

function renderHeader(status) {
  const mode = status.mode || {};
  const badge = $('mode-badge');
  badge.textContent = mode.trading_mode ? `${mode.trading_mode} · ${mode.market_data_source}` : '';
  badge.className = `badge ${mode.live ? 'live' : 'paper'}`;
  const global = (status.trading_state && status.trading_state.global) || {};
  const state = $('global-state');
  state.textContent = global.state || '?';
  state.className = `state ${String(global.state || '').toLowerCase()}`;
  state.title = global.reason || '';
}

// --- wiring ----------------------------------------------------------------------------------
function buildTabs() {
  fill($('tabs'), Object.entries(PAGES).map(([name, [label]]) => el('a', { href: `#${name}`, 'data-page': name, text: label })));
}

on('unreachable', () => {
  const banner = $('banner');
  banner.textContent = 'The backend is unreachable: retrying. What you see may be out of date.';
  banner.hidden = false;
});
on('reachable', () => { $('banner').hidden = true; });
on('expired', (reply) => {
  if (session.token) showLogin(`Your login has expired or was revoked (${(reply && reply.message) || 'unauthorized'}): log in again.`);
});

buildTabs();
$('login-form').addEventListener('submit', login);
$('logout').addEventListener('click', logout);
window.addEventListener('hashchange', route);
if (session.token) startApp(); else showLogin();
