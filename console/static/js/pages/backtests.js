// Backtests: start one (admin), watch its progress, read its report: metrics, equity and drawdown,
// trades, and its last bars with the strategy's lines and the trades as markers. The jobs the API
// keeps (a week each) are listed newest first, a page at a time; any of them opens from the list.
import { get, post, query, session } from '../api.js';
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
  const ranking = el('div', { id: 'backtest-ranking' });
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
    card('Parameter search: ranked candidates', ranking),
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
    if (drawn !== job.id) fill(ranking, job.kind === 'sweep' ? el('p', { class: 'muted', text: 'the search is running' }) : null);
    if (job.status === 'done' && drawn !== job.id && job.kind === 'sweep') {
      fill(ranking, rankingTable(await get(job.sweep_url)));
      drawn = job.id;
    }
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

// A finished search: its candidates best first with the columns sweep.csv has (in-sample and
// out-of-sample figures when split), how the in-sample ranking held out of sample, and the walk-
// forward folds. The heatmaps are on the search's page (sweep.html, downloaded with the token).
const SHOWN_ROWS = 50;
function rankingTable(found) {
  const over = found.overfitting;
  const rows = found.results.slice(0, SHOWN_ROWS);
  return [
    el('p', { class: 'muted', text: `${found.optimizer}: ${found.points} candidates${found.skipped ? ` (${found.skipped} invalid skipped)` : ''}, `
      + `ranked by ${found.split ? 'in-sample ' : ''}${found.rank_by}${found.split ? `, ${found.split}` : ''}`
      + `${found.results.length > rows.length ? ` (best ${rows.length} shown)` : ''}` }),
    over ? el('p', { id: 'backtest-overfitting', text: `out of sample: the in-sample best ranks ${over.best_in_sample_oos_rank} `
      + `of ${over.candidates}; rank correlation in/out ${num(over.rank_correlation_is_oos, 2)}` }) : null,
    table(found.columns.map((name) => ({ label: name, value: (row) => cell(row[name]) })), rows, { empty: 'no valid candidate' }),
    el('button', { class: 'link', id: 'backtest-sweep-html', text: 'download the search page (heatmaps)',
      onclick: () => download(`/api/backtest/${encodeURIComponent(found.id)}/sweep.html`, `backtest-${found.id}-sweep.html`) }),
  ];
}

function cell(value) {
  if (value === null || value === undefined) return '';
  return typeof value === 'number' && !Number.isInteger(value) ? num(value, 4) : String(value);
}

async function download(path, name) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${session.token}` }, cache: 'no-store' });
  if (!response.ok) return;
  const url = URL.createObjectURL(await response.blob());
  const link = el('a', { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
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

// The search fields as the API takes them: none unless axes are given; only the chosen
// optimizer's and split's own options.
function searchOptions(values) {
  const { split } = values;
  delete values.split;
  if (!values.sweep) {
    for (const name of ['optimizer', 'trials', 'seed', 'rank_by', 'train_fraction', 'walk_forward', 'anchored']) delete values[name];
    return;
  }
  values.sweep = values.sweep.split(/\s+/).filter(Boolean);
  if (values.optimizer !== 'optuna') { delete values.trials; delete values.seed; }
  if (split !== 'train') delete values.train_fraction;
  else if (!values.train_fraction) values.train_fraction = '0.7';
  if (split !== 'walk') { delete values.walk_forward; delete values.anchored; }
  else if (!values.walk_forward) values.walk_forward = '4';
  if (!values.anchored) delete values.anchored;
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
    el('fieldset', { class: 'search', id: 'backtest-search' },
      el('legend', { text: 'parameter search (optional): rank candidates instead of one run' }),
      field('axes, space-separated (NAME=start:stop:step or NAME=a,b,c)', el('input', { name: 'sweep',
        placeholder: 'period_1=5:20:1 period_2=20:60:5' })),
      field('optimizer', select('optimizer', ['grid', 'optuna'], 'grid')),
      field('trials (optuna)', el('input', { name: 'trials', type: 'number', min: 1, max: 500, placeholder: '100' })),
      field('seed (optuna)', el('input', { name: 'seed', type: 'number', min: 0, placeholder: '0' })),
      field('rank by', select('rank_by', ['net_pnl', 'return_pct', 'cagr_pct', 'sharpe', 'sortino', 'calmar',
        'profit_factor', 'win_rate', 'expectancy', 'max_drawdown', 'max_drawdown_pct', 'trades'], 'net_pnl')),
      field('split', select('split', [['', 'none (all in-sample)'], ['train', 'train / test'], ['walk', 'walk-forward']], '')),
      field('train fraction', el('input', { name: 'train_fraction', placeholder: '0.7' })),
      field('walk-forward folds', el('input', { name: 'walk_forward', type: 'number', min: 1, max: 10, placeholder: '4' })),
      field('anchored walk-forward', el('input', { name: 'anchored', type: 'checkbox' }))),
    el('button', { class: 'action primary', type: 'submit', text: 'Start backtest' }));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const values = formValues(form);
    values.data = values.data.split(',').map((p) => p.trim()).filter(Boolean);
    if (values.strategy === 'supertrend') { delete values.period_1; delete values.period_2; }
    searchOptions(values);
    const reply = await ctx.act('backtest', () => post('/api/backtest', values));
    if (reply && reply.id) {
      started(reply.id);
      ctx.notify(`backtest ${reply.id} queued`, 'ok');
    }
  });
  return form;
}
