// Strategies: per ticker its thread, last bar, indicators, position per broker, armed stop, last
// signal and error; start/stop per strategy, manual trades and ticker edits (admin); and the
// price chart of one ticker with the lines its strategy computed and its fills.
import { api, get, post, query } from '../api.js';
import { badge, card, el, field, fill, formValues, num, select, table, timeOfNs } from '../dom.js';
import { drawPrice } from '../charts.js';
import { catalog } from '../catalog.js';

const STRATEGIES = ['ema', 'supertrend', 'zeroday'];
const CHART_BARS = 200;
// The manual trades each strategy's trigger takes (engine/manual.py) and where they go.
const MANUAL = {
  ema: { path: '/api/ema-manual-trigger', actions: ['LONG', 'SHORT', 'CLOSE'] },
  zeroday: { path: '/api/manual-trigger', actions: ['call', 'put', 'close'] },
};

export function createStrategies(ctx) {
  let selected = null; // {strategy, symbol}
  const controls = el('div', { class: 'controls' });
  const tickers = el('div');
  const chartTitle = el('h3', { class: 'chart-title', text: 'no ticker selected' });
  const chart = el('div', { class: 'chart tall', id: 'price-chart' });
  const details = el('div', { class: 'details' });
  const element = el('div', { class: 'grid wide', id: 'strategies' },
    card('Strategies', controls, tickers),
    card('Chart', chartTitle, chart, details),
    ctx.isAdmin ? card('Add or change a ticker', tickerForm(ctx)) : null);

  async function refresh(status) {
    const strategies = status.strategies || {};
    const rows = [];
    for (const name of STRATEGIES) {
      for (const [symbol, t] of Object.entries((strategies[name] && strategies[name].tickers) || {})) {
        rows.push({ strategy: name, symbol, ...t });
      }
    }
    if (ctx.isAdmin) renderControls(ctx, controls, strategies);
    if (!selected || !rows.some((r) => r.strategy === selected.strategy && r.symbol === selected.symbol)) {
      const first = rows.find((r) => r.running) || rows[0];
      selected = first ? { strategy: first.strategy, symbol: first.symbol } : null;
    }
    fill(tickers, tickerTable(ctx, rows, selected, (r) => { selected = { strategy: r.strategy, symbol: r.symbol }; }));
    if (!selected) {
      chartTitle.textContent = 'no ticker configured';
      fill(details);
      return;
    }
    const row = rows.find((r) => r.strategy === selected.strategy && r.symbol === selected.symbol);
    const reply = await get(`/api/strategies/chart${query({ ...selected, limit: CHART_BARS })}`);
    const data = reply.data;
    chartTitle.textContent = `${data.strategy} ${data.symbol} ${data.timeframe}`;
    drawPrice(chart, data);
    chart.dataset.ticker = `${data.strategy}:${data.symbol}`;
    chart.dataset.lastBar = data.bars.length ? String(data.bars[data.bars.length - 1].end_ns) : '';
    chart.dataset.markers = String(data.markers.length);
    fill(details, tickerDetails(row));
  }
  return { element, refresh };
}

function renderControls(ctx, container, strategies) {
  fill(container, STRATEGIES.map((name) => {
    const running = Boolean(strategies[name] && strategies[name].running);
    return el('div', { class: 'control' }, el('strong', { text: name }), ' ', badge(running ? 'started' : 'stopped'), ' ',
      el('button', { class: 'action', 'data-action': `start-${name}`, disabled: running,
        onclick: () => ctx.act(`start ${name}`, () => get(`/api/start-trading${query({ strategy: name })}`)), text: 'Start' }),
      el('button', { class: 'action', 'data-action': `stop-${name}`, disabled: !running,
        onclick: () => ctx.act(`stop ${name}`, () => get(`/api/stop-trading${query({ strategy: name })}`)), text: 'Stop' }));
  }));
}

function positionText(t) {
  const held = (t.positions && t.positions.positions) || [];
  if (!held.length) return 'flat';
  return held.map((p) => `${p.broker} ${p.quantity > 0 ? '+' : ''}${p.quantity} @ ${p.avg_price ?? '?'}`).join(', ');
}

function indicatorText(values) {
  return Object.entries(values || {}).filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `${k} ${num(v)}`).join(' · ') || '-';
}

function notes(t) {
  return [t.last_error && `error: ${t.last_error}`, t.stale_feed, t.exit_pending && `exit pending: ${t.exit_pending}`,
    t.divergence && `divergence: ${t.divergence.note || JSON.stringify(t.divergence)}`, t.warmup_note]
    .filter(Boolean).join(' | ') || '-';
}

function tickerTable(ctx, rows, selected, choose) {
  return table([
    { label: 'ticker', value: (r) => el('button', { class: 'link', 'data-chart': `${r.strategy}:${r.symbol}`,
      onclick: () => { choose(r); ctx.refreshNow(); }, text: `${r.strategy} ${r.symbol}` }) },
    { label: 'timeframe', value: (r) => r.timeframe },
    { label: 'thread', value: (r) => [badge(r.running ? 'running' : 'stopped'), r.restarts ? ` ${r.restarts} restart(s)` : '',
      r.running && !r.warmed_up ? ' warming up' : ''] },
    { label: 'last bar', value: (r) => (r.last_bar ? `${timeOfNs(r.last_bar.end_ns)} close ${num(r.last_bar.close)}` : '-') },
    { label: 'indicators', value: (r) => indicatorText(r.indicators) },
    { label: 'position', value: (r) => el('span', { class: 'position', text: positionText(r) }) },
    { label: 'stop', value: (r) => num(r.indicators && r.indicators.stop) },
    { label: 'last signal', value: (r) => r.last_signal || '-' },
    { label: 'notes', value: (r) => notes(r) },
    ...(ctx.isAdmin ? [{ label: 'actions', value: (r) => actions(ctx, r) }] : []),
  ], rows, {
    empty: 'no tickers yet',
    rowClass: (r) => (selected && r.strategy === selected.strategy && r.symbol === selected.symbol ? 'selected' : ''),
  });
}

function actions(ctx, r) {
  const manual = MANUAL[r.strategy];
  const buttons = manual ? manual.actions.map((action) => el('button', {
    class: 'action small', 'data-action': `${action.toLowerCase()}-${r.symbol}`,
    onclick: () => ctx.act(`${action} ${r.symbol}`, () => post(manual.path, { ticker: r.symbol, action })),
    text: action,
  })) : [];
  buttons.push(el('button', {
    class: 'action small danger', 'data-action': `delete-${r.strategy}-${r.symbol}`, text: 'Delete',
    onclick: async () => {
      if (!await ctx.confirm(`Delete ${r.strategy} ${r.symbol}? A position it holds is closed.`, 'Delete')) return;
      ctx.act(`delete ${r.symbol}`, () => api('/api/delete-ticker', { method: 'DELETE', body: { strategy: r.strategy, symbol: r.symbol } }));
    },
  }));
  return el('div', { class: 'buttons' }, buttons);
}

function tickerDetails(row) {
  if (!row) return null;
  const facts = [
    ['strategy position', row.position || '-'], ['per broker', positionText(row)],
    ['armed stop', num(row.indicators && row.indicators.stop)], ['last signal', row.last_signal || '-'],
    ['last error', row.last_error || '-'], ['started', row.started_at || '-'],
    ['last bar received', row.last_bar_received || '-'],
  ];
  return el('dl', { class: 'facts', id: 'ticker-facts' }, facts.map(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
}

// --- the add/change ticker form (admin) ----------------------------------------------------
function tickerForm(ctx) {
  const form = el('form', { class: 'form', id: 'ticker-form' });
  const emaFields = el('fieldset', { class: 'ema-fields' });
  const supertrendFields = el('fieldset', { class: 'supertrend-fields', hidden: true },
    field('ATR period', el('input', { name: 'atr_period', type: 'number', min: 1, placeholder: '10' })),
    field('multiplier', el('input', { name: 'multiplier', type: 'number', step: '0.1', placeholder: '3.0' })),
    field('trailing stop ATR', el('input', { name: 'trailing_stop_atr', type: 'number', step: '0.1', placeholder: '2.0' })),
    field('take profit ATR', el('input', { name: 'take_profit_atr', type: 'number', step: '0.1', placeholder: '3.0' })));
  const strategy = select('strategy', STRATEGIES, 'ema');
  const symbol = el('input', { name: 'symbol', list: 'symbol-list', required: true, placeholder: '/MES' });
  const timeframe = el('input', { name: 'timeframe', list: 'timeframe-list', required: true, placeholder: '1Min or 100t' });
  const lists = el('div', { hidden: true });
  // ema/supertrend on their first start: wait for a live signal, or take the side the rules hold now
  const startField = field('at first start', select('start_behavior', ['wait_for_signal', 'join_current'], 'wait_for_signal'));
  fill(form,
    field('strategy', strategy), field('symbol', symbol), field('timeframe', timeframe), lists,
    field('Schwab quantity', el('input', { name: 'schwab_quantity', type: 'number', min: 0, value: 0 })),
    field('Tastytrade quantity', el('input', { name: 'tastytrade_quantity', type: 'number', min: 0, value: 1 })),
    emaFields, supertrendFields, startField,
    el('label', { class: 'check' }, el('input', { name: 'trade_enabled', type: 'checkbox', checked: true }), ' trade enabled'),
    el('button', { class: 'action primary', type: 'submit', text: 'Save ticker' }));
  const trendLine = (name, value) => select(name, ['EMA', 'SMA', 'WilderSmoother'], value);
  fill(emaFields,
    field('fast line', trendLine('trend_line_1', 'EMA')),
    field('fast period', el('input', { name: 'period_1', type: 'number', min: 1, value: 9 })),
    field('slow line', trendLine('trend_line_2', 'EMA')),
    field('slow period', el('input', { name: 'period_2', type: 'number', min: 2, value: 21 })),
    field('stop (ticks)', el('input', { name: 'stop_loss_ticks', type: 'number', min: 0, placeholder: '0 = none' })));
  strategy.addEventListener('change', () => {
    supertrendFields.hidden = strategy.value !== 'supertrend';
    emaFields.hidden = strategy.value === 'supertrend';
    startField.hidden = strategy.value === 'zeroday';
  });
  catalog().then((c) => {
    fill(lists,
      el('datalist', { id: 'symbol-list' }, c.symbols.map((s) => el('option', { value: s }))),
      el('datalist', { id: 'timeframe-list' }, c.timeframes.map((s) => el('option', { value: s }))));
  }).catch(() => {});
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const values = formValues(form);
    const hidden = form.querySelectorAll('fieldset[hidden] [name]');
    for (const input of hidden) delete values[input.name];
    if (startField.hidden) delete values.start_behavior;
    ctx.act(`save ${values.symbol}`, () => post('/api/add-ticker', values));
  });
  return form;
}
