// Backtests: start one (admin), watch its progress, read its report: metrics, equity and drawdown,
// trades, and its last bars with the strategy's lines and the trades as markers. The jobs started
// or opened in this tab are listed (the API keeps each job for a week; there is no job list).
import { get, post } from '../api.js';
import { badge, card, el, field, fill, formValues, money, num, select, table, timeOf } from '../dom.js';
import { drawBacktestEquity, drawBacktestPrice } from '../charts.js';

const JOBS_KEY = 'console.backtests';
const METRICS = ['net_pnl', 'return_pct', 'max_drawdown', 'max_drawdown_pct', 'sharpe', 'win_rate', 'profit_factor',
  'trades', 'winners', 'losers', 'final_equity'];

function knownJobs() {
  try { return JSON.parse(sessionStorage.getItem(JOBS_KEY) || '[]'); } catch { return []; }
}

function remember(id) {
  const jobs = [id, ...knownJobs().filter((j) => j !== id)].slice(0, 20);
  sessionStorage.setItem(JOBS_KEY, JSON.stringify(jobs));
}

export function createBacktests(ctx) {
  let current = knownJobs()[0] || null;
  let drawn = null; // the job whose results are drawn
  const jobs = el('div', { id: 'backtest-jobs' });
  const progress = el('div', { id: 'backtest-progress' });
  const metrics = el('div', { id: 'backtest-metrics' });
  const equity = el('div', { class: 'chart', id: 'backtest-equity' });
  const price = el('div', { class: 'chart tall', id: 'backtest-price' });
  const trades = el('div', { id: 'backtest-trades' });
  const open = el('form', { class: 'form inline' }, field('job id', el('input', { name: 'id', required: true })),
    el('button', { type: 'submit', text: 'Open' }));
  open.addEventListener('submit', (event) => {
    event.preventDefault();
    current = formValues(open).id;
    remember(current);
    ctx.refreshNow();
  });
  const element = el('div', { class: 'grid wide', id: 'backtests' },
    ctx.isAdmin ? card('New backtest', backtestForm(ctx, (id) => { current = id; remember(id); })) : null,
    card('Jobs', open, jobs),
    card('Report', progress, metrics),
    card('Equity and drawdown', equity),
    card('Last bars with trades', price),
    card('Trades', trades));

  async function refresh() {
    const ids = knownJobs();
    fill(jobs, ids.length ? el('ul', { class: 'jobs' }, ids.map((id) => el('li', {},
      el('button', { class: `link${id === current ? ' selected' : ''}`, text: id, onclick: () => { current = id; ctx.refreshNow(); } }))))
      : el('p', { class: 'muted', text: 'no backtest in this tab yet' }));
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
    if (job.status === 'done' && drawn !== job.id) {
      const results = await get(`/api/backtest/${encodeURIComponent(job.id)}/results`);
      drawBacktestEquity(equity, results.equity);
      drawBacktestPrice(price, results);
      fill(trades, tradeTable(results));
      drawn = job.id;
    }
  }
  return { element, refresh };
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
