// Overview: trading states with their reasons, today's P&L and equity curve, loss-limit usage,
// alerts, brokers (connection, account, token expiry) and the market data feeds. Everything but
// the equity curve comes from the one /api/status document the shell polls.
import { get } from '../api.js';
import { badge, card, duration, el, fill, money, signClass, table, timeOf } from '../dom.js';
import { drawEquity, drawGauge } from '../charts.js';

const STRATEGIES = ['ema', 'supertrend', 'zeroday'];

export function createOverview() {
  const states = el('div');
  const pnl = el('div', { class: 'figures' });
  const equity = el('div', { class: 'chart', id: 'equity-chart' });
  const gauge = el('div', { class: 'chart gauge', id: 'loss-gauge' });
  const lossTable = el('div');
  const alerts = el('div');
  const brokers = el('div');
  const feeds = el('div');
  const element = el('div', { class: 'grid', id: 'overview' },
    card('Trading state', states),
    card("Today's P&L", pnl, equity),
    card('Loss limits', gauge, lossTable),
    card('Alerts', alerts),
    card('Brokers', brokers),
    card('Market data', feeds));

  async function refresh(status) {
    renderStates(states, status);
    renderPnl(pnl, status.risk);
    renderLoss(gauge, lossTable, status.risk);
    renderAlerts(alerts, status.alerts);
    renderBrokers(brokers, status);
    renderFeeds(feeds, status);
    const curve = await get('/api/pnl/intraday');
    drawEquity(equity, curve.points || []);
  }
  return { element, refresh };
}

function stateOf(scopes, name) {
  // A scope the risk engine has no state for is ACTIVE (its default).
  return (scopes && scopes[name]) || { state: 'ACTIVE', reason: '' };
}

function renderStates(container, status) {
  const scopes = status.trading_state || {};
  const global = stateOf(scopes, 'global');
  const strategies = status.strategies || {};
  const rows = STRATEGIES.map((name) => {
    const tickers = Object.values((strategies[name] && strategies[name].tickers) || {});
    return { name, ...stateOf(scopes, name), running: strategies[name] && strategies[name].running,
      tickers: tickers.length, live: tickers.filter((t) => t.running).length };
  });
  const halts = (status.divergences && status.divergences.halts) || [];
  fill(container,
    el('p', { class: 'headline' }, badge(global.state), ' ',
      el('span', { class: 'reason', id: 'global-reason', text: global.reason || 'no halt' })),
    global.since ? el('p', { class: 'muted', text: `since ${timeOf(global.since)} by ${global.by || '?'}` }) : null,
    table([
      { label: 'strategy', value: (r) => r.name },
      { label: 'state', value: (r) => badge(r.state) },
      { label: 'reason', value: (r) => r.reason || '-' },
      { label: 'threads', value: (r) => `${r.live} / ${r.tickers} ticker(s)${r.running ? ' (started)' : ''}` },
    ], rows),
    halts.length ? el('p', { class: 'warn', text: `${halts.length} ticker(s) halted by reconciliation: see Orders & positions` }) : null);
}

function renderPnl(container, risk) {
  const loss = (risk && risk.daily_loss && risk.daily_loss.global) || {};
  fill(container,
    figure('realized', loss.realized), figure('unrealized', loss.unrealized), figure('total', loss.total, 'pnl-total'),
    el('p', { class: 'muted', text: `session since ${timeOf(risk && risk.session_start)}` }));
}

function figure(label, value, id) {
  return el('div', { class: 'figure' }, el('span', { class: 'muted', text: label }),
    el('strong', { class: signClass(value), id, text: money(value) }));
}

function renderLoss(gauge, container, risk) {
  const daily = (risk && risk.daily_loss) || {};
  const global = daily.global || {};
  drawGauge(gauge, global.used_pct, global.limit ? `global limit ${money(global.limit)}` : 'no global limit set');
  const rows = Object.entries(daily.strategies || {}).map(([name, u]) => ({ name, ...u }));
  fill(container, table([
    { label: 'strategy', value: (r) => r.name },
    { label: 'P&L', value: (r) => el('span', { class: signClass(r.total), text: money(r.total) }) },
    { label: 'limit', value: (r) => (r.limit ? money(r.limit) : 'none') },
    { label: 'used', value: (r) => (r.used_pct === null || r.used_pct === undefined ? '-' : `${r.used_pct} %`) },
  ], rows, { empty: 'no P&L this session' }));
}

function renderAlerts(container, alerts) {
  if (!Array.isArray(alerts)) {
    fill(container, el('p', { class: 'muted', text: 'alerts are not available' }));
    return;
  }
  fill(container, table([
    { label: 'time', value: (a) => timeOf(a.ts || a.time) },
    { label: 'severity', value: (a) => badge(a.severity || '?') },
    { label: 'kind', value: (a) => a.kind || a.type || '' },
    { label: 'message', value: (a) => a.message || '' },
  ], alerts, { empty: 'no alerts' }));
}

function renderBrokers(container, status) {
  const accounts = (status.brokers && status.brokers.accounts) || [];
  const paused = (status.brokers && status.brokers.paused) || {};
  const now = Date.parse(status.generated_at) || Date.now();
  const rows = accounts.map((a) => {
    const live = a.live || {};
    const account = a.orders_go_to === 'live' ? live : (a.paper || {});
    return { name: a.broker, goTo: a.orders_go_to, account, live, paused: paused[a.broker] };
  });
  fill(container, table([
    { label: 'broker', value: (r) => r.name },
    { label: 'orders go to', value: (r) => r.goTo },
    { label: 'connection', value: (r) => badge(r.account.connected ? 'connected' : 'disconnected') },
    { label: 'account', value: (r) => r.account.account || '-' },
    { label: 'live login', value: (r) => (r.live.configured ? (r.live.connected ? 'connected' : (r.live.message || 'not connected')) : 'not configured') },
    { label: 'token expires in', value: (r) => expiry(r.live, now) },
    { label: 'note', value: (r) => [r.paused ? `paused: ${r.paused}` : '', ...((r.account.warnings) || [])].filter(Boolean).join('; ') || '-' },
  ], rows, { empty: 'no brokers' }));
}

function expiry(live, now) {
  const at = live.refresh_token_expires_at || live.access_token_expires_at;
  if (!at) return live.configured ? 'does not expire' : '-';
  const seconds = (Date.parse(at) - now) / 1000;
  return el('span', { class: seconds < 86400 ? 'down' : '', text: seconds <= 0 ? 'expired' : duration(seconds) });
}

function renderFeeds(container, status) {
  const feeds = status.feeds || {};
  const now = Date.parse(status.generated_at) / 1000 || Date.now() / 1000;
  const symbols = Object.entries(feeds.symbols || {}).map(([symbol, s]) => ({ symbol, ...s }));
  const sources = Object.values(feeds.feeds || {});
  fill(container,
    el('p', { class: 'muted', text: `source ${feeds.source || '?'}, stale after ${feeds.stale_feed_seconds ?? '?'} s` }),
    table([
      { label: 'feed', value: (f) => f.feed },
      { label: 'state', value: (f) => badge(f.stale ? 'stale' : f.state || '?') },
      { label: 'trades', value: (f) => String(f.trades ?? '-') },
      { label: 'error', value: (f) => f.error || '-' },
    ], sources, { empty: 'no feed' }),
    table([
      { label: 'instrument', value: (s) => s.symbol },
      { label: 'last trade', value: (s) => (s.last_trade_wall ? `${duration(Math.max(0, now - s.last_trade_wall))} ago` : 'none yet') },
      { label: 'stale', value: (s) => badge(s.stale ? 'stale' : 'fresh') },
      { label: 'session', value: (s) => badge(s.market_open ? 'open' : 'closed') },
    ], symbols, { empty: 'no instrument subscribed' }));
}
