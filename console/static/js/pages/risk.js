// Risk: the limits and their current use, recent denials; for an admin the limits form, the kill
// switch and resume, each behind a confirmation.
import { api, get, post } from '../api.js';
import { badge, card, el, field, fill, money, select, table, timeOf } from '../dom.js';

const STRATEGIES = ['ema', 'supertrend', 'zeroday'];
// Single-valued limits the form edits (the per-symbol caps and per-strategy loss limits follow them).
const LIMIT_FIELDS = [
  ['daily_loss_limit_global', 'daily loss limit, global (USD)'],
  ['daily_loss_limit_per_strategy', 'daily loss limit, each strategy (USD)'],
  ['max_position', 'max position per symbol (contracts/shares)'],
  ['max_order_quantity', 'max order quantity'],
  ['max_orders_per_minute', 'max orders per minute per ticker'],
  ['risk_per_trade', 'risk per trade (USD, risk sizing)'],
];

export function createRisk(ctx) {
  const states = el('div', { id: 'risk-states' });
  const limits = el('div', { id: 'risk-limits' });
  const usage = el('div', { id: 'risk-usage' });
  const denials = el('div', { id: 'risk-denials' });
  const form = ctx.isAdmin ? el('form', { class: 'form', id: 'limits-form' }) : null;
  let loaded = null; // the limits the form was filled from
  const element = el('div', { class: 'grid wide', id: 'risk' },
    card('Trading states', states, ctx.isAdmin ? emergency(ctx) : null),
    card('Limits', limits, form),
    card('Usage', usage),
    card('Recent risk decisions', denials));

  if (form) {
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const changes = changedLimits(form, loaded || {});
      if (!Object.keys(changes).length) {
        ctx.notify('nothing changed');
        return;
      }
      const reply = await ctx.act('limits', () => api('/api/risk', { method: 'PUT', body: changes }));
      if (reply) loaded = null; // refill the form from what the API now holds
    });
  }

  async function refresh() {
    const risk = await get('/api/risk');
    renderStates(states, risk.usage.states);
    renderLimits(limits, risk.limits);
    if (form && loaded === null) {
      loaded = risk.limits;
      fillForm(form, risk.limits);
    }
    renderUsage(usage, risk.usage);
    fill(denials, table([
      { label: 'time', value: (d) => timeOf(d.ts) },
      { label: 'ticker', value: (d) => `${d.strategy || ''} ${d.symbol || ''}` },
      { label: 'decision', value: (d) => badge(d.allowed === '1' ? 'allowed' : 'denied') },
      { label: 'reason', value: (d) => [d.reason, d.detail || d.message].filter(Boolean).join(': ') || '-' },
    ], risk.recent_denials || [], { empty: 'no decisions recorded' }));
  }
  return { element, refresh };
}

function renderStates(container, scopes) {
  const rows = ['global', ...STRATEGIES].map((scope) => ({ scope, ...((scopes || {})[scope] || { state: 'ACTIVE' }) }));
  fill(container, table([
    { label: 'scope', value: (s) => s.scope },
    { label: 'state', value: (s) => el('span', { 'data-scope': s.scope }, badge(s.state)) },
    { label: 'reason', value: (s) => s.reason || '-' },
    { label: 'since', value: (s) => (s.since ? `${timeOf(s.since)} (${s.by || '?'})` : '-') },
    { label: 'resumes', value: (s) => (s.resumes_at ? timeOf(s.resumes_at) : '-') },
  ], rows));
}

function emergency(ctx) {
  const scope = select('scope', ['global', ...STRATEGIES], 'global');
  return el('div', { class: 'emergency' },
    el('button', { class: 'action danger big', id: 'kill-switch', text: 'KILL SWITCH', onclick: async () => {
      const ok = await ctx.confirm('Halt all trading, cancel every open order and flatten every position at every broker?',
        'Halt and flatten');
      if (!ok) return;
      const reply = await ctx.act('kill switch', () => post('/api/kill-switch'));
      if (reply) ctx.notify('HALTED: orders cancelled, positions flattened (see Orders & positions)', 'warn');
    } }),
    el('span', { class: 'resume' }, scope,
      el('button', { class: 'action', id: 'resume', text: 'Resume', onclick: async () => {
        if (!await ctx.confirm(`Return ${scope.value} to ACTIVE?`, 'Resume')) return;
        ctx.act(`resume ${scope.value}`, () => post('/api/resume', { scope: scope.value }));
      } })));
}

function renderLimits(container, limits) {
  const rows = [
    ...LIMIT_FIELDS.map(([name, label]) => ({ label, value: limits[name] })),
    { label: 'sizing', value: limits.sizing_mode },
    ...Object.entries(limits.daily_loss_limit_by_strategy || {}).map(([s, v]) => ({ label: `daily loss limit, ${s}`, value: v })),
    ...Object.entries(limits.max_position_by_symbol || {}).map(([s, v]) => ({ label: `max position ${s}`, value: v })),
  ];
  fill(container, table([
    { label: 'limit', value: (r) => r.label },
    { label: 'value', value: (r) => (r.value === null || r.value === undefined ? 'none' : String(r.value)) },
  ], rows));
}

function fillForm(form, limits) {
  const byStrategy = limits.daily_loss_limit_by_strategy || {};
  fill(form,
    LIMIT_FIELDS.map(([name, label]) => field(label, el('input', { name, value: limits[name] ?? '', placeholder: 'none', inputmode: 'decimal' }))),
    field('sizing', select('sizing_mode', ['fixed', 'risk'], limits.sizing_mode)),
    STRATEGIES.map((s) => field(`daily loss limit, ${s} (USD)`, el('input', { name: `by_strategy.${s}`, value: byStrategy[s] ?? '', placeholder: 'the per-strategy limit' }))),
    field('max position by symbol (e.g. /MES=2, NVDA=100)', el('input', { name: 'by_symbol', value: capsText(limits.max_position_by_symbol), placeholder: 'none' })),
    el('button', { class: 'action primary', type: 'submit', text: 'Save limits' }));
}

// Only what the form changed: an emptied field removes that limit (null).
function changedLimits(form, loaded) {
  const changes = {};
  const byStrategy = {};
  let byStrategyChanged = false;
  for (const input of form.querySelectorAll('[name]')) {
    const value = input.value.trim() === '' ? null : input.value.trim();
    if (input.name === 'by_symbol') continue; // wantedCaps below
    if (input.name.startsWith('by_strategy.')) {
      const strategy = input.name.slice('by_strategy.'.length);
      const before = (loaded.daily_loss_limit_by_strategy || {})[strategy] ?? null;
      if (value !== null) byStrategy[strategy] = value;
      if (String(before) !== String(value)) byStrategyChanged = true;
    } else {
      const before = loaded[input.name] ?? null;
      if (String(before) !== String(value)) changes[input.name] = value;
    }
  }
  // The API replaces a map whole: a changed map is sent with every entry the form keeps.
  if (byStrategyChanged) changes.daily_loss_limit_by_strategy = byStrategy;
  const caps = wantedCaps(form.querySelector('[name=by_symbol]').value, loaded.max_position_by_symbol || {});
  if (capsText(caps) !== capsText(loaded.max_position_by_symbol)) changes.max_position_by_symbol = caps;
  return changes;
}

function capsText(caps) {
  return Object.entries(caps || {}).map(([symbol, cap]) => `${symbol}=${cap}`).join(', ');
}

// "SYMBOL=N, ..." as the caps map, a symbol already capped spelt as the API holds it. The API
// canonicalises and validates each symbol and number (a bad entry is its 400).
function wantedCaps(text, before) {
  const wanted = {};
  for (const entry of text.split(/[,\s]+/).filter(Boolean)) {
    const [symbol, cap = ''] = entry.split('=');
    const known = Object.keys(before).find((s) => s.replace('/', '').toUpperCase() === symbol.replace('/', '').toUpperCase());
    wanted[known || symbol] = cap;
  }
  return wanted;
}

function renderUsage(container, usage) {
  const loss = usage.daily_loss || {};
  const lossRows = [['global', loss.global || {}], ...Object.entries(loss.strategies || {})].map(([scope, u]) => ({ scope, ...u }));
  const rates = Object.entries((usage.orders_per_minute || {}).tickers || {}).map(([ticker, count]) => ({ ticker, count }));
  fill(container,
    el('p', { class: 'muted', text: `session since ${timeOf(usage.session_start)}` }),
    table([
      { label: 'scope', value: (r) => r.scope },
      { label: 'realized', value: (r) => money(r.realized) },
      { label: 'unrealized', value: (r) => money(r.unrealized) },
      { label: 'total', value: (r) => money(r.total) },
      { label: 'limit', value: (r) => (r.limit ? money(r.limit) : 'none') },
      { label: 'used', value: (r) => (r.used_pct === null || r.used_pct === undefined ? '-' : `${r.used_pct} %`) },
    ], lossRows),
    el('h3', { text: `Orders in the last minute (limit ${(usage.orders_per_minute || {}).limit ?? 'none'})` }),
    table([
      { label: 'ticker', value: (r) => r.ticker },
      { label: 'orders', value: (r) => String(r.count) },
    ], rates, { empty: 'none' }),
    el('h3', { text: 'Positions against their caps' }),
    table([
      { label: 'ticker', value: (p) => `${p.strategy} ${p.symbol}` },
      { label: 'broker', value: (p) => p.broker },
      { label: 'quantity', value: (p) => String(p.quantity) },
      { label: 'cap', value: (p) => (p.limit ? String(p.limit) : 'none') },
      { label: 'used', value: (p) => (p.used_pct === null || p.used_pct === undefined ? '-' : `${p.used_pct} %`) },
    ], (usage.max_position || {}).positions || [], { empty: 'flat' }));
}
