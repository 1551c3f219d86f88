// Orders & positions: the orders (filters, paging), the order manager's book against each broker's
// own positions, the last reconciliation with its adopt/flatten actions (admin), and the journal.
import { get, post, query } from '../api.js';
import { badge, card, el, field, fill, formValues, num, select, table, timeOfNs } from '../dom.js';

const PAGE_SIZE = 25;
const STATES = ['', 'NEW', 'SUBMITTED', 'WORKING', 'PARTIALLY_FILLED', 'FILLED', 'CANCELLED', 'REJECTED', 'UNKNOWN'];
const STRATEGY_FILTER = ['', 'ema', 'supertrend', 'zeroday', 'reconcile'];

export function createOrders(ctx) {
  let offset = 0;
  let filters = {};
  const filterForm = el('form', { class: 'form inline', id: 'order-filters' },
    field('strategy', select('strategy', STRATEGY_FILTER, '')),
    field('symbol', el('input', { name: 'symbol', placeholder: 'any' })),
    field('broker', select('broker', ['', 'schwab', 'tastytrade'], '')),
    field('state', select('state', STATES, '')),
    el('button', { type: 'submit', text: 'Filter' }));
  filterForm.addEventListener('submit', (event) => {
    event.preventDefault();
    filters = formValues(filterForm);
    offset = 0;
    ctx.refreshNow();
  });
  const orders = el('div', { id: 'orders-table' });
  const pager = el('div', { class: 'pager' });
  const book = el('div', { id: 'book-table' });
  const brokers = el('div', { id: 'broker-positions' });
  const reconcile = el('div', { id: 'reconcile' });
  const journal = el('div', { id: 'journal' });
  const element = el('div', { class: 'grid wide', id: 'orders' },
    card('Orders', filterForm, orders, pager),
    card('Positions: book and brokers', book, brokers),
    card('Reconciliation', reconcile),
    card('Journal', journal));

  function page(delta) {
    offset = Math.max(0, offset + delta);
    ctx.refreshNow();
  }

  async function refresh() {
    const [list, positions, report, entries] = await Promise.all([
      get(`/api/orders${query({ ...filters, offset, limit: PAGE_SIZE })}`),
      get('/api/positions'),
      get('/api/reconcile'),
      get(`/api/journal${query({ limit: 30 })}`),
    ]);
    fill(orders, orderTable(list.orders));
    fill(pager,
      el('button', { disabled: offset === 0, onclick: () => page(-PAGE_SIZE), text: '‹ newer' }),
      el('span', { class: 'muted', text: ` ${offset + 1}-${offset + list.count} ` }),
      el('button', { disabled: !list.has_more, onclick: () => page(PAGE_SIZE), text: 'older ›' }));
    renderPositions(book, brokers, positions);
    renderReconcile(ctx, reconcile, report);
    fill(journal, journalTable(entries.entries));
  }
  return { element, refresh };
}

function orderTable(rows) {
  return table([
    { label: 'time', value: (o) => timeOfNs(o.updated_ns || o.created_ns) },
    { label: 'strategy', value: (o) => o.strategy },
    { label: 'symbol', value: (o) => o.symbol },
    { label: 'broker', value: (o) => o.broker },
    { label: 'leg', value: (o) => o.leg },
    { label: 'side', value: (o) => o.side },
    { label: 'qty', value: (o) => `${o.filled_quantity}/${o.quantity}` },
    { label: 'price', value: (o) => o.avg_fill_price || (o.stop_price ? `stop ${o.stop_price}` : '-') },
    { label: 'state', value: (o) => badge(o.state) },
    { label: 'client id', value: (o) => el('code', { text: o.client_order_id }) },
    { label: 'broker id', value: (o) => el('code', { text: o.broker_order_id || '-' }) },
    { label: 'reason', value: (o) => [o.detail || o.intent_reason, o.reason].filter(Boolean).join(': ') || '-' },
  ], rows, { empty: 'no orders' });
}

function renderPositions(bookContainer, brokerContainer, positions) {
  fill(bookContainer, el('h3', { text: 'Order manager book' }), table([
    { label: 'strategy', value: (p) => p.strategy },
    { label: 'symbol', value: (p) => p.symbol },
    { label: 'broker', value: (p) => p.broker },
    { label: 'key', value: (p) => p.key },
    { label: 'quantity', value: (p) => String(p.quantity) },
    { label: 'avg price', value: (p) => p.avg_price || '-' },
  ], positions.positions, { empty: 'flat everywhere' }));
  const rows = [];
  for (const [broker, held] of Object.entries(positions.brokers || {})) {
    if (!held.ok) rows.push({ broker, key: '-', quantity: `cannot read: ${held.error}`, avg_price: '' });
    for (const p of held.positions) rows.push({ broker, ...p });
  }
  const paused = Object.entries(positions.paused_brokers || {});
  fill(brokerContainer, el('h3', { text: "Brokers' own positions" }), table([
    { label: 'broker', value: (p) => p.broker },
    { label: 'key', value: (p) => p.key },
    { label: 'quantity', value: (p) => String(p.quantity) },
    { label: 'avg price', value: (p) => p.avg_price || '-' },
  ], rows, { empty: 'no broker holds a position' }),
  paused.length ? el('p', { class: 'warn', text: `paused: ${paused.map(([b, why]) => `${b} (${why})`).join(', ')}` }) : null);
}

function renderReconcile(ctx, container, reply) {
  const report = reply.report;
  const mismatches = [];
  for (const b of (report && report.brokers) || []) {
    for (const m of b.mismatches || []) mismatches.push({ broker: b.broker, ...m });
  }
  fill(container,
    report
      ? el('p', {}, badge(report.ok ? 'ok' : 'mismatch'), ` last run ${timeOfNs(report.ts_ns)}`,
        report.brokers.filter((b) => b.error).map((b) => ` · ${b.broker}: ${b.error}`))
      : el('p', { class: 'muted', text: 'no reconciliation has run yet' }),
    ctx.isAdmin ? el('button', { class: 'action', 'data-action': 'reconcile-now', text: 'Reconcile now',
      onclick: () => ctx.act('reconcile', () => post('/api/reconcile')) }) : null,
    table([
      { label: 'broker', value: (m) => m.broker },
      { label: 'key', value: (m) => m.key },
      { label: 'book', value: (m) => String(m.oms_quantity) },
      { label: 'broker holds', value: (m) => String(m.broker_quantity) },
      { label: 'tickers', value: (m) => (m.affected || []).map((a) => a.join(' ')).join(', ') || '-' },
      ...(ctx.isAdmin ? [{ label: 'resolve', value: (m) => resolveButtons(ctx, m) }] : []),
    ], mismatches, { empty: 'no mismatches' }),
    el('h3', { text: 'Halted tickers' }),
    table([
      { label: 'strategy', value: (h) => h.strategy },
      { label: 'symbol', value: (h) => h.symbol },
      { label: 'reason', value: (h) => h.reason },
    ], reply.halts || [], { empty: 'none' }));
}

function resolveButtons(ctx, m) {
  // The lane that absorbs the difference: the affected ticker's strategy when there is one.
  const first = (m.affected && m.affected[0] && m.affected[0][0]) || 'ema';
  const strategy = select('strategy', ['ema', 'supertrend', 'zeroday'], first);
  return el('div', { class: 'buttons' }, strategy,
    el('button', { class: 'action small', text: 'Adopt', onclick: async () => {
      if (!await ctx.confirm(`Make the book take ${m.broker}'s position at ${m.key} into ${strategy.value}?`, 'Adopt')) return;
      ctx.act(`adopt ${m.key}`, () => post('/api/reconcile/adopt', { broker: m.broker, key: m.key, strategy: strategy.value }));
    } }),
    el('button', { class: 'action small danger', text: 'Flatten', onclick: async () => {
      if (!await ctx.confirm(`Close ${m.broker}'s whole position at ${m.key}?`, 'Flatten')) return;
      ctx.act(`flatten ${m.key}`, () => post('/api/reconcile/flatten', { broker: m.broker, key: m.key }));
    } }));
}

function journalTable(entries) {
  return table([
    { label: 'time', value: (e) => timeOfNs(e.ts_ns) },
    { label: 'event', value: (e) => e.event },
    { label: 'strategy', value: (e) => e.strategy || '-' },
    { label: 'symbol', value: (e) => e.symbol || '-' },
    { label: 'broker', value: (e) => e.broker || '-' },
    { label: 'client id', value: (e) => el('code', { text: e.client_order_id || '-' }) },
    { label: 'change', value: (e) => (e.state ? `${e.prev_state || '∅'} → ${e.state}` : e.kind || '-') },
    { label: 'qty / price', value: (e) => (e.quantity ? `${e.filled_quantity || 0}/${e.quantity} ${e.price ? `@ ${num(e.price)}` : ''}` : '-') },
    { label: 'reason', value: (e) => [e.intent_reason, e.reason, e.detail].filter(Boolean).join(': ') || '-' },
  ], entries, { empty: 'the journal is empty' });
}
