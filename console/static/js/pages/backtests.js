// Backtests: start one (admin), watch its progress, read its report: metrics, equity and drawdown,
// trades, and its last bars with the strategy's lines and the trades as markers. The jobs the API
// keeps (a week each) are listed newest first, a page at a time; any of them opens from the list.
import { get, post, query } from '../api.js';
import { badge, card, el, field, fill, formValues, money, num, select, table, timeOf } from '../dom.js';
import { drawBacktestEquity, drawBacktestPrice } from '../charts.js';

const CURRENT_KEY = 'console.backtest';
const PAGE_SIZE = 15;
const METRICS = ['net_pnl', 'return_pct', 'max_drawdown', 'max_drawdown_pct', 'sharpe', 'win_rate', 'profit_factor',
  'trades', 'winners', 'losers', 'final_equity'];

export function createBacktests(ctx) {
  let current = sessionStorage.getItem(CURRENT_KEY);
  let offset = 0;
  let drawn = null; // the job whose results are drawn
  const select_ = (id) => { current = id; sessionStorage.setItem(CURRENT_KEY, id); ctx.refreshNow(); };
  const jobs = el('div', { id: 'backtest-jobs' });
  const pager = el('div', { class: 'pager' });
  const progress = el('div', { id: 'backtest-progress' });
  const metrics = el('div', { id: 'backtest-metrics' });
  const equity = el('div', { class: 'chart', id: 'backtest-equity' });
  const price = el('div', { class: 'chart tall', id: 'backtest-price' });
  const trades = el('div', { id: 'backtest-trades' });
  const open = el('form', { class: 'form inline' }, field('job id', el('input', { name: 'id', required: true })),
    el('button', { type: 'submit', text: 'Open' }));
  open.addEventListener('submit', (event) => {
    event.preventDefault();
    select_(formValues(open).id);
  });
  const element = el('div', { class: 'grid wide', id: 'backtests' },
    ctx.isAdmin ? card('New backtest', backtestForm(ctx, select_)) : null,
    card('Jobs', jobs, pager, open),
    card('Report', progress, metrics),
    card('Equity and drawdown', equity),
    card('Last bars with trades', price),
    card('Trades', trades));

  async function refresh() {
    const list = await get(`/api/backtest${query({ offset, limit: PAGE_SIZE })}`);
    fill(jobs, jobTable(list.jobs, current, select_));
    fill(pager,
      offset > 0 ? el('button', { class: 'link', text: 'newer', onclick: () => { offset = Math.max(0, offset - PAGE_SIZE); ctx.refreshNow(); } }) : null,
      el('span', { class: 'muted', text: ` ${list.total} job(s) kept ` }),
      list.has_more ? el('button', { class: 'link', text: 'older', onclick: () => { offset += PAGE_SIZE; ctx.refreshNow(); } }) : null);
    if (!current) return;
    const job = await get(`/api/backtest/${encodeURIComponent(current)}`);
    const pct = Math.round((job.progress || 0) * 100);
    fill(progress,
      el('p', {}, el('code', { text: job.id }), ' ', badge(job.status), ` ${pct} %`),
      el('progress', { max: 100, value: pct, id: 'backtest-progress-bar' }),
      job.job.error ? el('p', { class: 'down', text: job.job.error }) : null,
      el('p', { class: 'muted', text: `submitted ${timeOf(job.job.submitted_at)}${job.job.finished_at ? `, finished ${timeOf(job.job.finished_at)}` : ''}` }));
    const report = job.report;
    fill(metrics, report ? metricTable(report) : null);
    if (job.status === 'done' && drawn !== job.id && report) {
      const results = await get(`/api/backtest/${encodeURIComponent(job.id)}/results`);
      drawBacktestEquity(equity, results.equity);
      drawBacktestPrice(price, results);
      fill(trades, tradeTable(results));
      drawn = job.id;
    }
  }
  return { element, refresh };
}

function jobTable(rows, current, open) {
  const figure = (j, name, digits) => (j.metrics && j.metrics[name] !== undefined ? num(j.metrics[name], digits) : '');
  return table([
    { label: 'job', value: (j) => el('button', { class: `link${j.id === current ? ' selected' : ''}`, 'data-job': j.id,
      text: j.id, onclick: () => open(j.id) }) },
    { label: 'state', value: (j) => [badge(j.status), j.status === 'running' ? ` ${Math.round(j.progress * 100)} %` : ''] },
    { label: 'what', value: (j) => `${j.kind === 'sweep' ? 'search: ' : ''}${j.strategy || ''} ${j.symbol || ''} ${j.timeframe || ''}` },
    { label: 'submitted', value: (j) => timeOf(j.submitted_at) },
    { label: 'finished', value: (j) => timeOf(j.finished_at) },
    { label: 'net P&L', value: (j) => (j.metrics && j.metrics.net_pnl !== undefined
      ? el('span', { class: Number(j.metrics.net_pnl) >= 0 ? 'up' : 'down', text: money(j.metrics.net_pnl) }) : '') },
    { label: 'trades', value: (j) => figure(j, 'trades', 0) },
    { label: 'sharpe', value: (j) => figure(j, 'sharpe', 2) },
    { label: 'max DD', value: (j) => figure(j, 'max_drawdown', 2) },
  ], rows, { empty: 'no backtest jobs yet', rowClass: (j) => (j.id === current ? 'selected' : null) });
}

function metricTable(report) {
  const m = report.metrics || {};
  const rows = [
    { name: 'strategy', value: `${report.strategy} ${report.symbol} ${report.timeframe}` },
    { name: 'data', value: `${report.data} (${timeOf(report.from)} - ${timeOf(report.to)})` },
    ...METRICS.filter((k) => m[k] !== undefined).map((k) => ({ name: k, value: typeof m[k] === 'number' ? num(m[k], 4) : String(m[k]) })),
  ];
  return table([{ label: 'metric', value: (r) => r.name }, { label: 'value', value: (r) => r.value }], rows);
}

function tradeTable(results) {
  const rows = [...results.trades].reverse();
  return [
    el('p', { class: 'muted', text: `${results.trades_total} trades${results.trades_total > rows.length ? ` (last ${rows.length} shown)` : ''}` }),
    table([
      { label: '#', value: (t) => t.trade },
      { label: 'side', value: (t) => t.side },
      { label: 'qty', value: (t) => t.quantity },
      { label: 'entry', value: (t) => `${timeOf(t.entry_time)} @ ${t.entry_price} (${t.entry_reason})` },
      { label: 'exit', value: (t) => `${timeOf(t.exit_time)} @ ${t.exit_price} (${t.exit_reason})` },
      { label: 'net', value: (t) => el('span', { class: Number(t.net_pnl) >= 0 ? 'up' : 'down', text: money(t.net_pnl) }) },
    ], rows, { empty: 'no trades' }),
  ];
}

function backtestForm(ctx, started) {
  const form = el('form', { class: 'form', id: 'backtest-form' },
    field('strategy', select('strategy', ['ema', 'supertrend'], 'ema')),
    field('symbol', el('input', { name: 'symbol', required: true, value: '/ES' })),
    field('timeframe', el('input', { name: 'timeframe', required: true, value: '5Min' })),
    field('fast period (ema)', el('input', { name: 'period_1', type: 'number', min: 1, value: 9 })),
    field('slow period (ema)', el('input', { name: 'period_2', type: 'number', min: 2, value: 21 })),
    field('data file(s), comma-separated', el('input', { name: 'data', required: true,
      placeholder: '../shared/data/bars/index-future-2006.1min.csv' })),
    field('from', el('input', { name: 'from', placeholder: '2006-01-02' })),
    field('to', el('input', { name: 'to', placeholder: '2006-02-01' })),
    field('quantity', el('input', { name: 'quantity', type: 'number', min: 1, value: 1 })),
    field('commission per contract', el('input', { name: 'commission', placeholder: '0' })),
    el('button', { class: 'action primary', type: 'submit', text: 'Start backtest' }));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const values = formValues(form);
    values.data = values.data.split(',').map((p) => p.trim()).filter(Boolean);
    if (values.strategy === 'supertrend') { delete values.period_1; delete values.period_2; }
    const reply = await ctx.act('backtest', () => post('/api/backtest', values));
    if (reply && reply.id) {
      started(reply.id);
      ctx.notify(`backtest ${reply.id} queued`, 'ok');
    }
  });
  return form;
}
