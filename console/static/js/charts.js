// The console's charts, drawn by plotly.js (window.Plotly, served by the app from the installed
// plotly package; see api/console.py). Plotly.react redraws in place, so polling keeps zoom and
// hover state. Each chart element carries data-points (what was drawn) for tests and debugging.

const COLORS = ['#38bdf8', '#f59e0b', '#a78bfa', '#f472b6', '#34d399', '#fb7185'];
const UP = '#22c55e';
const DOWN = '#ef4444';

const CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ['toImage', 'select2d', 'lasso2d'] };

function layout(extra = {}) {
  return {
    margin: { l: 56, r: 12, t: 8, b: 32 },
    paper_bgcolor: 'rgba(0,0,0,0)',
    plot_bgcolor: 'rgba(0,0,0,0)',
    font: { color: '#cbd5e1', size: 11 },
    legend: { orientation: 'h', x: 0, y: 1.12 },
    xaxis: { gridcolor: '#1e293b', rangeslider: { visible: false }, type: 'date' },
    yaxis: { gridcolor: '#1e293b', automargin: true },
    uirevision: 'keep', // polling redraws keep the user's zoom
    ...extra,
  };
}

export function available() {
  return typeof window.Plotly !== 'undefined';
}

function draw(element, traces, chartLayout, points) {
  if (!available()) {
    element.textContent = 'charts unavailable: plotly.min.js did not load';
    return;
  }
  window.Plotly.react(element, traces, chartLayout, CONFIG);
  element.dataset.points = String(points);
}

const dateOfNs = (ns) => new Date(Number(ns) / 1e6);

// Bars with the strategy's lines, its fills as markers and the armed stop. `chart`:
// {bars: [{start_ns, open, high, low, close, lines: {name: value} | null}], lines: [names],
//  markers: [{ts_ns, side, leg, price, quantity, broker, reason}], stop}.
export function drawPrice(element, chart) {
  const bars = chart.bars || [];
  const x = bars.map((b) => dateOfNs(b.start_ns));
  const traces = [{
    type: 'candlestick', name: chart.symbol || 'price', x,
    open: bars.map((b) => b.open), high: bars.map((b) => b.high),
    low: bars.map((b) => b.low), close: bars.map((b) => b.close),
    increasing: { line: { color: UP } }, decreasing: { line: { color: DOWN } },
  }];
  (chart.lines || []).forEach((name, i) => {
    const y = bars.map((b) => (b.lines && b.lines[name] !== undefined ? b.lines[name] : null));
    if (y.some((v) => v !== null)) {
      traces.push({ type: 'scatter', mode: 'lines', name, x, y, line: { width: 1.5, color: COLORS[i % COLORS.length] } });
    }
  });
  traces.push(...markerTraces(chart.markers || [], (m) => dateOfNs(m.ts_ns)));
  if (chart.stop !== null && chart.stop !== undefined && x.length) {
    traces.push({ type: 'scatter', mode: 'lines', name: 'armed stop', x: [x[0], x[x.length - 1]],
      y: [chart.stop, chart.stop], line: { dash: 'dot', color: DOWN, width: 1 } });
  }
  draw(element, traces, layout(), bars.length);
}

function markerTraces(markers, timeOf) {
  const traces = [];
  for (const [side, symbol, color] of [['BUY', 'triangle-up', UP], ['SELL', 'triangle-down', DOWN]]) {
    const mine = markers.filter((m) => m.side === side && m.price !== null && m.price !== '');
    if (!mine.length) continue;
    traces.push({
      type: 'scatter', mode: 'markers', name: side === 'BUY' ? 'buys' : 'sells',
      x: mine.map(timeOf), y: mine.map((m) => Number(m.price)),
      text: mine.map((m) => `${m.leg} ${m.side} ${m.quantity} @ ${m.price} (${m.broker}): ${m.reason}`),
      hoverinfo: 'text+x', marker: { symbol, size: 11, color, line: { color: '#0f172a', width: 1 } },
    });
  }
  return traces;
}

// The session's equity: points [{ts, realized, unrealized, total}].
export function drawEquity(element, points) {
  const x = points.map((p) => new Date(p.ts));
  const traces = [
    { type: 'scatter', mode: 'lines', name: 'total', x, y: points.map((p) => Number(p.total)), line: { color: COLORS[0] } },
    { type: 'scatter', mode: 'lines', name: 'realized', x, y: points.map((p) => Number(p.realized)),
      line: { color: COLORS[1], dash: 'dot' } },
  ];
  draw(element, traces, layout(), points.length);
}

// Loss-limit usage in percent (null: no limit set).
export function drawGauge(element, percent, label) {
  const value = percent === null || percent === undefined ? 0 : Number(percent);
  const traces = [{
    type: 'indicator', mode: 'gauge+number', value,
    number: { suffix: ' %', font: { size: 26 } },
    title: { text: label, font: { size: 12 } },
    gauge: {
      axis: { range: [0, 100] },
      bar: { color: value >= 80 ? DOWN : value >= 50 ? '#f59e0b' : UP },
      bgcolor: '#1e293b', borderwidth: 0,
      steps: [{ range: [80, 100], color: 'rgba(239,68,68,0.25)' }],
    },
  }];
  draw(element, traces, { ...layout(), margin: { l: 36, r: 36, t: 36, b: 10 } }, 1);
}

// A backtest's charts are drawn by bar number with dates as tick labels (as report.html does), so
// the lines do not run straight across nights, weekends and holidays when no bar exists.
function dateTicks(times, count = 8) {
  if (!times.length) return {};
  const spanDays = (times[times.length - 1] - times[0]) / 86_400_000;
  const picks = [...new Set(Array.from({ length: Math.min(count, times.length) },
    (_, i) => Math.round((i * (times.length - 1)) / Math.max(1, Math.min(count, times.length) - 1))))];
  const text = (t) => {
    const iso = new Date(t).toISOString();
    return spanDays > 3 ? iso.slice(0, 10) : iso.slice(5, 16).replace('T', ' ');
  };
  return { type: 'linear', tickmode: 'array', tickvals: picks, ticktext: picks.map((i) => text(times[i])) };
}

const whenText = (t) => new Date(t).toISOString().slice(0, 16).replace('T', ' ');

// The number of the last bar starting at or before `time` (ms), or -1 before the first.
function barAt(starts, time) {
  let lo = 0;
  let hi = starts.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (starts[mid] <= time) { found = mid; lo = mid + 1; } else hi = mid - 1;
  }
  return found;
}

// A backtest: equity and drawdown by point ({time, equity, drawdown} as text, evenly thinned).
export function drawBacktestEquity(element, equity) {
  const times = equity.map((p) => new Date(p.time).getTime());
  const x = equity.map((_, i) => i);
  const when = times.map(whenText);
  const traces = [
    { type: 'scatter', mode: 'lines', name: 'equity', x, y: equity.map((p) => Number(p.equity)), customdata: when,
      hovertemplate: '%{customdata}<br>equity %{y:,.2f}<extra></extra>', line: { color: COLORS[0] } },
    { type: 'scatter', mode: 'lines', name: 'drawdown', x, y: equity.map((p) => -Number(p.drawdown)), yaxis: 'y2',
      customdata: when, hovertemplate: '%{customdata}<br>drawdown %{y:,.2f}<extra></extra>',
      fill: 'tozeroy', line: { color: DOWN, width: 1 } },
  ];
  const chartLayout = layout({
    xaxis: { gridcolor: '#1e293b', ...dateTicks(times) },
    yaxis: { gridcolor: '#1e293b', domain: [0.35, 1], title: { text: 'equity' } },
    yaxis2: { gridcolor: '#1e293b', domain: [0, 0.28], title: { text: 'drawdown' } },
  });
  draw(element, traces, chartLayout, equity.length);
}

// A backtest's last bars (bars.csv rows: start, open, high, low, close, <lines>) with its trades,
// each fill on the bar it happened in.
export function drawBacktestPrice(element, results) {
  const bars = results.bars || [];
  const starts = bars.map((b) => new Date(b.start).getTime());
  const x = bars.map((_, i) => i);
  const when = starts.map(whenText);
  const traces = [{
    type: 'candlestick', name: 'price', x, text: when, hoverinfo: 'text+y',
    open: bars.map((b) => Number(b.open)), high: bars.map((b) => Number(b.high)),
    low: bars.map((b) => Number(b.low)), close: bars.map((b) => Number(b.close)),
    increasing: { line: { color: UP } }, decreasing: { line: { color: DOWN } },
  }];
  (results.lines || []).forEach((name, i) => {
    traces.push({ type: 'scatter', mode: 'lines', name, x, customdata: when,
      hovertemplate: `%{customdata}<br>${name.replace(/[<>&]/g, '')} %{y:,.2f}<extra></extra>`,
      y: bars.map((b) => (b[name] === '' || b[name] === undefined ? null : Number(b[name]))),
      line: { width: 1.5, color: COLORS[i % COLORS.length] } });
  });
  const markers = [];
  for (const t of results.trades || []) {
    const long = t.side === 'LONG';
    markers.push({ time: t.entry_time, side: long ? 'BUY' : 'SELL', leg: 'open', price: t.entry_price,
      quantity: t.quantity, broker: 'backtest', reason: `${t.entry_reason}, ${t.entry_time}` });
    markers.push({ time: t.exit_time, side: long ? 'SELL' : 'BUY', leg: 'close', price: t.exit_price,
      quantity: t.quantity, broker: 'backtest', reason: `${t.exit_reason} (net ${t.net_pnl}), ${t.exit_time}` });
  }
  const placed = markers.map((m) => ({ ...m, bar: barAt(starts, new Date(m.time).getTime()) }))
    .filter((m) => m.bar >= 0);
  traces.push(...markerTraces(placed, (m) => m.bar));
  draw(element, traces, layout({ xaxis: { gridcolor: '#1e293b', rangeslider: { visible: false }, ...dateTicks(starts) } }),
    bars.length);
}
