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

// A backtest: equity and drawdown over time ({time, equity, drawdown} as text).
export function drawBacktestEquity(element, equity) {
  const x = equity.map((p) => new Date(p.time));
  const traces = [
    { type: 'scatter', mode: 'lines', name: 'equity', x, y: equity.map((p) => Number(p.equity)), line: { color: COLORS[0] } },
    { type: 'scatter', mode: 'lines', name: 'drawdown', x, y: equity.map((p) => -Number(p.drawdown)), yaxis: 'y2',
      fill: 'tozeroy', line: { color: DOWN, width: 1 } },
  ];
  const chartLayout = layout({
    yaxis: { gridcolor: '#1e293b', domain: [0.35, 1], title: { text: 'equity' } },
    yaxis2: { gridcolor: '#1e293b', domain: [0, 0.28], title: { text: 'drawdown' } },
  });
  draw(element, traces, chartLayout, equity.length);
}

// A backtest's last bars (bars.csv rows: start, open, high, low, close, <lines>) with its trades.
export function drawBacktestPrice(element, results) {
  const bars = results.bars || [];
  const x = bars.map((b) => new Date(b.start));
  const traces = [{
    type: 'candlestick', name: 'price', x,
    open: bars.map((b) => Number(b.open)), high: bars.map((b) => Number(b.high)),
    low: bars.map((b) => Number(b.low)), close: bars.map((b) => Number(b.close)),
    increasing: { line: { color: UP } }, decreasing: { line: { color: DOWN } },
  }];
  (results.lines || []).forEach((name, i) => {
    traces.push({ type: 'scatter', mode: 'lines', name, x,
      y: bars.map((b) => (b[name] === '' || b[name] === undefined ? null : Number(b[name]))),
      line: { width: 1.5, color: COLORS[i % COLORS.length] } });
  });
  const first = x.length ? x[0].getTime() : Infinity;
  const markers = [];
  for (const t of results.trades || []) {
    const long = t.side === 'LONG';
    markers.push({ time: t.entry_time, side: long ? 'BUY' : 'SELL', leg: 'open', price: t.entry_price,
      quantity: t.quantity, broker: 'backtest', reason: t.entry_reason });
    markers.push({ time: t.exit_time, side: long ? 'SELL' : 'BUY', leg: 'close', price: t.exit_price,
      quantity: t.quantity, broker: 'backtest', reason: `${t.exit_reason} (net ${t.net_pnl})` });
  }
  const shown = markers.filter((m) => new Date(m.time).getTime() >= first);
  traces.push(...markerTraces(shown, (m) => new Date(m.time)));
  draw(element, traces, layout(), bars.length);
}
