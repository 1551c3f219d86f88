"""One self-contained HTML report per backtest (report.html) and per sweep (sweep.html).

The page embeds plotly.js (`include_plotlyjs=True` for the first chart: the file opens offline, no
CDN) and draws: the key figures, equity with buy and hold and the drawdown, the monthly returns
heatmap with the yearly table, the price chart with the strategy's lines (EMAs, Supertrend, stops)
and the entry/exit markers, the breakdowns and the trades table.

Charts are plotted against the bar (or session) number, with dates as tick labels, so nights,
weekends and holidays take no room and no line is drawn across a closed market. Long runs are
thinned for the page only: the equity keeps the lowest and highest bar of each slice (the drawdowns
stay visible), the price chart merges consecutive bars into one candle (the note says how many).

Every text that comes from the user or the data (symbols, file descriptions, reasons, parameters)
is HTML-escaped, in the tables and in the charts (plotly renders a subset of HTML in titles, names
and hover text, and shows escaped entities as plain characters).
"""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from backtest.data import NS, utc_iso

if TYPE_CHECKING:
    from backtest.engine import BacktestResult
    from backtest.report import TradeRow

MAX_EQUITY_POINTS = 20_000
MAX_CANDLES = 3_000
MAX_TRADE_ROWS = 2_000
_NOT_PRICE_LINES = frozenset({"atr", "direction"})
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}.sub{color:#5b6577;margin:0 0 16px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:8px}
.card{border:1px solid #dde2ea;border-radius:6px;padding:8px 10px}.card b{display:block;font-size:17px}
.card span{color:#5b6577;font-size:12px}table{border-collapse:collapse;font-size:13px;margin:4px 0}
th,td{border-bottom:1px solid #e6e9ef;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f4f6f9;position:sticky;top:0}td.l,th.l{text-align:left}.pos{color:#137333}.neg{color:#b3261e}
.scroll{max-height:520px;overflow:auto;border:1px solid #e6e9ef}.note{color:#5b6577;font-size:12px}
"""


def esc(value: Any) -> str:
    """HTML-escaped text of any value (None -> empty)."""
    return "" if value is None else html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:,.{digits}f}"
    return str(value)


def _cls(value: Any) -> str:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return ""
    return "pos" if f > 0 else "neg" if f < 0 else ""


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1, signed: Sequence[int] = ()) -> str:
    head = "".join(f'<th class="{"l" if k < left else ""}">{esc(h)}</th>' for k, h in enumerate(headers))
    body = []
    for row in rows:
        cells = []
        for k, v in enumerate(row):
            classes = " ".join(c for c in ("l" if k < left else "", _cls(v) if k in signed else "") if c)
            cells.append(f'<td class="{classes}">{esc(_fmt(v))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class _Page:
    """Collects sections; the first chart carries plotly.js, the rest reuse it."""

    def __init__(self, title: str, subtitle: str) -> None:
        self.parts: list[str] = [f"<h1>{esc(title)}</h1>", f'<p class="sub">{esc(subtitle)}</p>']
        self.title = title
        self._js_included = False

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{esc(text)}</h2>")

    def chart(self, fig: Any) -> None:
        import plotly.io as pio

        self.parts.append(pio.to_html(fig, include_plotlyjs=not self._js_included, full_html=False,
                                      config={"displaylogo": False, "responsive": True}))
        self._js_included = True

    def write(self, path: Path) -> None:
        doc = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
               f"<title>{esc(self.title)}</title><style>{_CSS}</style></head><body>"
               + "\n".join(self.parts) + "</body></html>\n")
        path.write_text(doc, encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# x axis: bar numbers labelled with dates
# ---------------------------------------------------------------------------------------------

def _iso(ns: np.ndarray) -> np.ndarray:
    """utc_iso for an int64 array, vectorised (a string per point is the slow part of a big page)."""
    text = np.datetime_as_string(np.asarray(ns, dtype=np.int64).astype("datetime64[ms]"), unit="ms")
    return np.char.add(text.astype(str), "Z")


def _date_ticks(x: np.ndarray, times_ns: np.ndarray, count: int = 8) -> dict[str, Any]:
    """tickvals/ticktext for an axis of point numbers `x` whose times are `times_ns`."""
    if x.size == 0:
        return {}
    span_days = (int(times_ns[-1]) - int(times_ns[0])) / (86_400 * NS)
    picks = np.unique(np.linspace(0, x.size - 1, min(count, x.size)).round().astype(np.int64))
    fmt = (lambda s: s[:10]) if span_days > 3 else (lambda s: s[5:16].replace("T", " "))
    return {"tickmode": "array", "tickvals": [float(x[i]) for i in picks],
            "ticktext": [fmt(utc_iso(int(times_ns[i]))) for i in picks]}


def thin_indices(series: np.ndarray, max_points: int) -> np.ndarray:
    """Indices to plot: all of them, or each slice's lowest and highest point plus both ends."""
    n = series.size
    if n <= max_points:
        return np.arange(n)
    k = math.ceil(n / (max_points // 2))
    pad = (-n) % k
    padded = np.concatenate((series, np.full(pad, series[-1])))
    blocks = padded.reshape(-1, k)
    base = np.arange(blocks.shape[0]) * k
    picks = np.concatenate((base + blocks.argmin(axis=1), base + blocks.argmax(axis=1), [0, n - 1]))
    return np.unique(np.minimum(picks, n - 1))


# ---------------------------------------------------------------------------------------------
# backtest report
# ---------------------------------------------------------------------------------------------

def candle_size(bars: int) -> int:
    """Bars merged into one candle of the price chart (the engine's `line_every`)."""
    return max(1, math.ceil(bars / MAX_CANDLES))


def chart_title(result: BacktestResult) -> str:
    """From the instrument traded (its name, symbol and exchange), not only the --symbol typed."""
    inst = result.instrument
    cfg = result.config
    name = getattr(inst, "description", "") or str(inst.symbol)
    exchange = getattr(inst, "exchange", "")
    where = f"{inst.symbol}, {exchange}" if exchange else str(inst.symbol)
    return f"{name} ({where}) · {cfg.strategy.value} · {cfg.tf.display}"


def _strategy_text(report: dict[str, Any]) -> str:
    p = report.get("parameters", {})
    if report.get("strategy") == "ema":
        rule = f"{p.get('trend_line_1')} {p.get('period_1')} / {p.get('trend_line_2')} {p.get('period_2')}"
    elif report.get("strategy") == "supertrend":
        rule = f"Supertrend ATR {p.get('atr_period')} x {p.get('multiplier')}"
    else:
        rule = str(report.get("strategy"))
    return (f"{rule} · {report.get('quantity')} contract(s) · commission {report.get('commission_per_contract')}"
            f" · slippage {report.get('slippage_ticks')} tick(s) · {report.get('from')} → {report.get('to')}"
            f" · {report.get('data')}")


def _cards(report: dict[str, Any]) -> str:
    m = report["metrics"]
    hold = report.get("buy_and_hold", {})
    items = [
        ("Net P&L", m.get("net_pnl")), ("Return %", m.get("return_pct")), ("CAGR %", m.get("cagr_pct")),
        ("Buy & hold return %", hold.get("return_pct")), ("Sharpe", m.get("sharpe")), ("Sortino", m.get("sortino")),
        ("Calmar", m.get("calmar")), ("Max drawdown", m.get("max_drawdown")),
        ("Max drawdown %", m.get("max_drawdown_pct")), ("Max DD start", m.get("max_drawdown_start")),
        ("Max DD trough", m.get("max_drawdown_trough")), ("Max DD recovery", m.get("max_drawdown_recovery") or "not recovered"),
        ("Max DD length (days)", m.get("max_drawdown_duration_days")),
        ("Longest drawdown (days)", m.get("longest_drawdown_days")), ("Trades", m.get("trades")),
        ("Win rate", None if m.get("win_rate") is None else round(m["win_rate"] * 100, 2)),
        ("Profit factor", m.get("profit_factor")), ("Expectancy", m.get("expectancy")),
        ("Average win", m.get("average_win")), ("Average loss", m.get("average_loss")),
        ("Payoff ratio", m.get("payoff_ratio")), ("Best trade", m.get("best_trade")),
        ("Worst trade", m.get("worst_trade")), ("Max consecutive wins", m.get("max_consecutive_wins")),
        ("Max consecutive losses", m.get("max_consecutive_losses")), ("Exposure %", m.get("exposure_pct")),
        ("Avg trade duration (h)", None if m.get("average_trade_duration_s") is None
         else round(m["average_trade_duration_s"] / 3600, 2)),
        ("Commission", m.get("commission")), ("Risk denials", m.get("risk_denials")),
    ]
    # Green/red only where the sign says good/bad (a drawdown or a count has no sign to colour).
    signed = {"Net P&L", "Return %", "CAGR %", "Buy & hold return %", "Sharpe", "Sortino", "Calmar", "Expectancy",
              "Average win", "Average loss", "Best trade", "Worst trade"}
    cells = "".join(f'<div class="card"><span>{esc(k)}</span><b class="{_cls(v) if k in signed else ""}">'
                    f'{esc(_fmt(v))}</b></div>' for k, v in items)
    return f'<div class="cards">{cells}</div>'


def _equity_figure(result: BacktestResult, hold: np.ndarray, title: str) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    eq = result.equity
    end = result.data.bars.end_ns
    peak = np.maximum.accumulate(eq) if eq.size else eq
    dd = eq - peak
    idx = np.unique(np.concatenate((thin_indices(eq, MAX_EQUITY_POINTS), thin_indices(dd, MAX_EQUITY_POINTS))))
    x = idx.astype(np.float64)
    when = _iso(end[idx])
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=(0.72, 0.28), vertical_spacing=0.04)
    fig.add_trace(go.Scatter(x=x, y=eq[idx], name="strategy", line={"width": 1.3, "color": "#1f5fbf"},
                             customdata=when, hovertemplate="%{customdata}<br>equity %{y:,.2f}<extra></extra>"), 1, 1)
    if hold.size:
        fig.add_trace(go.Scatter(x=x, y=hold[idx], name="buy & hold", line={"width": 1, "color": "#9aa3b2"},
                                 customdata=when, hovertemplate="%{customdata}<br>buy & hold %{y:,.2f}<extra></extra>"),
                      1, 1)
    fig.add_trace(go.Scatter(x=x, y=dd[idx], name="drawdown", fill="tozeroy", line={"width": 0.8, "color": "#c0392b"},
                             customdata=when, hovertemplate="%{customdata}<br>drawdown %{y:,.2f}<extra></extra>"), 2, 1)
    ticks = _date_ticks(x, end[idx])
    fig.update_xaxes(**ticks, row=2, col=1)
    fig.update_xaxes(showticklabels=False, row=1, col=1)
    fig.update_layout(title={"text": esc(title)}, height=520, margin={"l": 60, "r": 20, "t": 50, "b": 40},
                      hovermode="x unified", legend={"orientation": "h", "y": 1.06})
    fig.update_yaxes(title_text="equity", row=1, col=1)
    fig.update_yaxes(title_text="drawdown", row=2, col=1)
    return fig


def _monthly_figure(months: Sequence[dict[str, Any]]) -> Any | None:
    import plotly.graph_objects as go

    if not months:
        return None
    years = sorted({int(r["year"]) for r in months})
    z: list[list[float | None]] = [[None] * 12 for _ in years]
    for r in months:
        z[years.index(int(r["year"]))][int(r["month"]) - 1] = r["return_pct"]
    text = [["" if v is None else f"{v:.2f}" for v in row] for row in z]
    top = max((abs(v) for row in z for v in row if v is not None), default=1.0) or 1.0
    fig = go.Figure(go.Heatmap(z=z, x=list(_MONTHS), y=[str(y) for y in years], text=text, texttemplate="%{text}",
                               colorscale="RdYlGn", zmid=0, zmin=-top, zmax=top, colorbar={"title": {"text": "%"}},
                               hovertemplate="%{y} %{x}: %{z:.2f} %<extra></extra>"))
    fig.update_layout(title={"text": "Monthly returns (%)"}, height=120 + 32 * len(years),
                      margin={"l": 60, "r": 20, "t": 40, "b": 30}, yaxis={"autorange": "reversed", "type": "category"})
    return fig


def _indicator_columns(result: BacktestResult, picks: np.ndarray) -> dict[str, np.ndarray]:
    """Price-level indicator values at the bars `picks` (NaN where undefined), plus the Supertrend
    direction; read only at those bars, so a million-bar run costs a few thousand look-ups. They
    come from every bar's values (a run with bars.*) or from the engine's `line_every` samples."""
    inds = result.indicators
    if isinstance(inds, dict):  # columnar form
        return {k: np.asarray(v, dtype=np.float64)[picks] for k, v in inds.items()
                if k not in _NOT_PRICE_LINES or k == "direction"}
    if inds:
        size = len(inds)
        chosen = [inds[i] if i < size else {} for i in picks.tolist()]
    else:
        sampled = result.extra.get("sampled_lines") or {}
        chosen = [sampled.get(i, {}) for i in picks.tolist()]
    keys: list[str] = []
    for d in chosen:
        keys += [k for k in d if k not in keys and k not in _NOT_PRICE_LINES]
    if "supertrend" in keys:
        keys.append("direction")
    return {k: np.array([np.nan if d.get(k) is None else float(d[k]) for d in chosen], dtype=np.float64) for k in keys}


def _line_names(result: BacktestResult) -> dict[str, str]:
    cfg = result.config
    return {"fast": f"{cfg.trend_line_1} {cfg.period_1}", "slow": f"{cfg.trend_line_2} {cfg.period_2}",
            "sf": "EMA (fast)", "f": "EMA (mid)", "s": "EMA (slow)", "stop": "stop", "take_profit": "take profit",
            "supertrend": "Supertrend"}


def _price_figure(result: BacktestResult, rows: Sequence[TradeRow], title: str) -> tuple[Any | None, str]:
    import plotly.graph_objects as go

    b = result.data.bars
    n = len(b)
    if n == 0:
        return None, ""
    k = candle_size(n)
    starts = np.arange(0, n, k)
    last = np.minimum(starts + k - 1, n - 1)
    o, c = b.open[starts], b.close[last]
    h, lo = np.maximum.reduceat(b.high, starts), np.minimum.reduceat(b.low, starts)
    x = np.arange(starts.size, dtype=np.float64)
    when = _iso(b.start_ns[starts])
    fig = go.Figure(go.Candlestick(x=x, open=o, high=h, low=lo, close=c, name="price", text=when,
                                   increasing={"line": {"color": "#26a69a", "width": 1}},
                                   decreasing={"line": {"color": "#ef5350", "width": 1}}))
    names = _line_names(result)
    cols = _indicator_columns(result, last)
    palette = ["#1f5fbf", "#f39c12", "#8e44ad", "#16a085", "#7f8c8d"]
    for j, (key, col) in enumerate((kk, v) for kk, v in cols.items() if kk != "direction"):
        y = col
        style: dict[str, Any] = {"width": 1.2, "color": palette[j % len(palette)]}
        if key in ("stop", "take_profit"):
            style = {"width": 1, "dash": "dot", "color": "#c0392b" if key == "stop" else "#27ae60"}
        if key == "supertrend" and "direction" in cols:
            up = np.where(cols["direction"] > 0, y, np.nan)
            down = np.where(cols["direction"] < 0, y, np.nan)
            fig.add_trace(go.Scatter(x=x, y=up, name="Supertrend (up)", mode="lines",
                                     line={"width": 1.4, "color": "#2e7d32"}, connectgaps=False))
            fig.add_trace(go.Scatter(x=x, y=down, name="Supertrend (down)", mode="lines",
                                     line={"width": 1.4, "color": "#c62828"}, connectgaps=False))
            continue
        fig.add_trace(go.Scatter(x=x, y=y, name=esc(names.get(key, key)), mode="lines", line=style,
                                 connectgaps=False))
    entry_bar = np.array([r.trade.entry_bar for r in rows], dtype=np.int64)
    exit_bar = np.array([r.trade.exit_bar for r in rows], dtype=np.int64)
    side = np.array([r.trade.side for r in rows], dtype=np.int64)
    entry_px = np.array([float(r.entry_price) for r in rows], dtype=np.float64)
    exit_px = np.array([float(r.exit_price) for r in rows], dtype=np.float64)
    if any(r.trade.option for r in rows):  # zeroday: premiums, not index levels; mark at the bar's close
        entry_px, exit_px = b.close[entry_bar], b.close[exit_bar]
    entry_when = _iso(np.array([r.trade.entry_ns for r in rows], dtype=np.int64))
    exit_when = _iso(np.array([r.trade.exit_ns for r in rows], dtype=np.int64))
    entry_text = np.array([esc(f"{w} {r.trade.entry_reason} @ {r.entry_price}" + (f" {r.trade.option}" if r.trade.option
                                                                                   else ""))
                           for w, r in zip(entry_when, rows)], dtype=str)
    for label, mask, symbol, color in (("long entry", side > 0, "triangle-up", "#1b8a3a"),
                                       ("short entry", side < 0, "triangle-down", "#c0392b")):
        if mask.any():
            fig.add_trace(go.Scatter(
                x=entry_bar[mask] // k, y=entry_px[mask], mode="markers", name=label, text=entry_text[mask],
                marker={"symbol": symbol, "size": 10, "color": color, "line": {"width": 1, "color": "#222"}},
                hovertemplate="%{text}<extra>" + label + "</extra>"))
    if rows:
        exit_text = np.array([esc(f"{w} {r.trade.exit_reason} @ {r.exit_price}, net {r.net}")
                              for w, r in zip(exit_when, rows)], dtype=str)
        fig.add_trace(go.Scatter(x=exit_bar // k, y=exit_px, mode="markers", name="exit", text=exit_text,
                                 marker={"symbol": "x", "size": 8, "color": "#222"},
                                 hovertemplate="%{text}<extra>exit</extra>"))
    fig.update_xaxes(**_date_ticks(x, b.start_ns[starts]), rangeslider={"visible": False})
    fig.update_layout(title={"text": esc(title)}, height=560, margin={"l": 60, "r": 20, "t": 50, "b": 40},
                      legend={"orientation": "h", "y": 1.05})
    note = ""
    if k > 1:
        note = f"Each candle merges {k} consecutive bars ({n:,} bars in all); markers sit on the candle holding the fill."
    if result.config.strategy.value == "zeroday":
        note += (" zeroday: the chart shows SPX; the markers sit at the index's close of the bar of each option "
                 "trade, whose premiums the hover text and the trades table give.")
    return fig, note


def _trade_table(rows: Sequence[TradeRow]) -> str:
    shown = list(enumerate(rows, 1))
    note = ""
    if len(shown) > MAX_TRADE_ROWS:
        half = MAX_TRADE_ROWS // 2
        shown = shown[:half] + shown[-half:]
        note = f'<p class="note">{len(rows):,} trades: the first and last {half:,} are shown; trades.csv has all.</p>'
    with_option = any(r.trade.option for r in rows)
    headers = ["#", "side", "qty", "entry time", "entry", "entry reason", "exit time", "exit", "exit reason",
               "gross", "commission", "net", "hours", "bars"] + (["option"] if with_option else [])
    body = [[k, "LONG" if r.trade.side > 0 else "SHORT", r.trade.quantity, utc_iso(r.trade.entry_ns),
             str(r.entry_price), r.trade.entry_reason, utc_iso(r.trade.exit_ns), str(r.exit_price), r.trade.exit_reason,
             str(r.gross), str(r.commission), str(r.net), round((r.trade.exit_ns - r.trade.entry_ns) / NS / 3600, 2),
             r.trade.exit_bar - r.trade.entry_bar] + ([r.trade.option] if with_option else [])
            for k, r in shown]
    return note + f'<div class="scroll">{_table(headers, body, left=0, signed=(11,))}</div>'


def _group_rows(groups: dict[str, dict[str, Any]]) -> list[list[Any]]:
    return [[name, g["trades"], g["net_pnl"], g["winners"], g["losers"],
             None if g["win_rate"] is None else round(g["win_rate"] * 100, 2), g["average_trade"], g["profit_factor"]]
            for name, g in groups.items()]


def write_report_html(path: Path, result: BacktestResult, rows: Sequence[TradeRow], report: dict[str, Any]) -> None:
    from backtest.statistics import buy_and_hold_equity

    title = chart_title(result)
    page = _Page(title, _strategy_text(report))
    page.add(_cards(report))
    page.heading("Equity and drawdown")
    page.chart(_equity_figure(result, buy_and_hold_equity(result), f"Equity: {title}"))
    page.add('<p class="note">Plotted by bar: closed-market time takes no room.</p>')

    page.heading("Monthly and yearly returns")
    monthly = _monthly_figure(report.get("monthly_returns", []))
    if monthly is not None:
        page.chart(monthly)
    hold_years = {r["year"]: r["return_pct"] for r in report.get("buy_and_hold", {}).get("yearly_returns", [])}
    page.add(_table(["year", "strategy %", "buy & hold %"],
                    [[r["year"], r["return_pct"], hold_years.get(r["year"])] for r in report.get("yearly_returns", [])],
                    signed=(1, 2)))

    page.heading("Price, lines and trades")
    price, note = _price_figure(result, rows, title)
    if price is not None:
        page.chart(price)
    if note:
        page.add(f'<p class="note">{esc(note)}</p>')

    page.heading("Breakdowns")
    group_headers = ["", "trades", "net P&L", "winners", "losers", "win rate %", "average", "profit factor"]
    page.add(_table(group_headers, _group_rows(report.get("by_side", {})), signed=(2, 6)))
    page.add(_table(["exit reason", *group_headers[1:]], _group_rows(report.get("by_exit_reason", {})), signed=(2, 6)))
    durations = report.get("trade_durations", {})
    page.add(_table(["duration", "average h", "median h", "min h", "max h", "average bars"],
                    [[name, *(None if d.get(f) is None else round(d[f] / 3600, 2)
                              for f in ("average_s", "median_s", "min_s", "max_s")), d.get("average_bars")]
                     for name, d in durations.items()]))
    page.add(_table(["drawdown start", "trough", "recovery", "depth", "depth %", "days", "bars"],
                    [[d["start"], d["trough"], d["recovery"] or "not recovered", d["depth"], d["depth_pct"],
                      d["duration_days"], d["bars"]] for d in report.get("drawdowns", [])], left=3))

    page.heading("Trades")
    page.add(_trade_table(rows))
    page.write(path)


# ---------------------------------------------------------------------------------------------
# sweep / optimisation report
# ---------------------------------------------------------------------------------------------

def _heatmap(rows: Sequence[dict[str, Any]], px: str, py: str, metric: str, title: str, minimise: bool) -> Any | None:
    """`metric` over two parameters; with more parameters each cell shows the best over the others."""
    import plotly.graph_objects as go

    xs = sorted({r[px] for r in rows if r.get(px) is not None})
    ys = sorted({r[py] for r in rows if r.get(py) is not None})
    if not xs or not ys:
        return None
    z: list[list[float | None]] = [[None] * len(xs) for _ in ys]
    for r in rows:
        v = r.get(metric)
        if v is None or r.get(px) is None or r.get(py) is None:
            continue
        f = float(v)
        i, j = ys.index(r[py]), xs.index(r[px])
        cur = z[i][j]
        if cur is None or (f < cur if minimise else f > cur):
            z[i][j] = f
    fig = go.Figure(go.Heatmap(z=z, x=[str(v) for v in xs], y=[str(v) for v in ys],
                               colorscale="RdYlGn_r" if minimise else "RdYlGn",
                               colorbar={"title": {"text": esc(metric)}},
                               hovertemplate=esc(px) + " %{x}, " + esc(py) + " %{y}: %{z:.4g}<extra></extra>"))
    fig.update_layout(title={"text": esc(title)}, height=460, margin={"l": 70, "r": 20, "t": 50, "b": 50},
                      xaxis={"title": {"text": esc(px)}, "type": "category"},
                      yaxis={"title": {"text": esc(py)}, "type": "category"})
    return fig


def _bars(rows: Sequence[dict[str, Any]], px: str, metrics: Sequence[tuple[str, str]], title: str) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    ordered = sorted((r for r in rows if r.get(px) is not None), key=lambda r: r[px])
    for key, label in metrics:
        fig.add_trace(go.Scatter(x=[r[px] for r in ordered], y=[None if r.get(key) is None else float(r[key])
                                                               for r in ordered], mode="lines+markers", name=esc(label)))
    fig.update_layout(title={"text": esc(title)}, height=400, xaxis={"title": {"text": esc(px)}})
    return fig


def _is_oos_scatter(rows: Sequence[dict[str, Any]], metric: str, params: Sequence[str]) -> Any | None:
    import plotly.graph_objects as go

    pts = [r for r in rows if r.get(f"is_{metric}") is not None and r.get(f"oos_{metric}") is not None]
    if not pts:
        return None
    text = [esc(", ".join(f"{p}={r.get(p)}" for p in params)) for r in pts]
    xs = [float(r[f"is_{metric}"]) for r in pts]
    ys = [float(r[f"oos_{metric}"]) for r in pts]
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="markers", text=text, marker={"size": 7, "color": "#1f5fbf"},
                               hovertemplate="%{text}<br>in-sample %{x:.4g}<br>out-of-sample %{y:.4g}<extra></extra>"))
    lo, hi = min(xs + ys), max(xs + ys)
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="out-of-sample = in-sample",
                             line={"dash": "dot", "color": "#9aa3b2"}))
    fig.update_layout(title={"text": esc(f"In-sample vs out-of-sample {metric} per candidate "
                                         "(points far below the line were fitted to noise)")},
                      height=460, showlegend=False, xaxis={"title": {"text": "in-sample"}},
                      yaxis={"title": {"text": "out-of-sample"}})
    return fig


def write_sweep_html(path: Path, doc: dict[str, Any], params: Sequence[str], columns: Sequence[str]) -> None:
    """The ranked candidates, the parameter heatmaps (in-sample and out-of-sample side by side when
    the run was split) and the walk-forward folds."""
    metric = doc["rank_by"]
    ranked: list[dict[str, Any]] = doc["results"]
    split = doc.get("split")
    title = doc.get("title") or "Parameter search"
    subtitle = (f"{doc.get('optimizer', 'grid')} over {', '.join(params)} · {doc.get('points')} candidates · ranked by "
                f"{'in-sample ' if split else ''}{metric}" + (f" · {split}" if split else ""))
    page = _Page(title, subtitle)
    minimise = metric == "max_drawdown"
    summary = doc.get("overfitting")
    if summary:
        shown_summary = [[k.replace("_", " "), ", ".join(f"{a}={b}" for a, b in v.items()) if isinstance(v, dict) else v]
                         for k, v in summary.items()]
        page.add(_table(["overfitting check", "value"], shown_summary, left=1))
    if split:
        metric_keys = [(f"is_{metric}", f"in-sample {metric}"), (f"oos_{metric}", f"out-of-sample {metric}")]
    else:
        metric_keys = [(metric, metric)]
    if len(params) >= 2:
        for key, label in metric_keys:
            fig = _heatmap(ranked, params[0], params[1], key, f"{label} by {params[0]} and {params[1]}"
                           + (" (best over the other parameters)" if len(params) > 2 else ""), minimise)
            if fig is not None:
                page.chart(fig)
    elif len(params) == 1:
        page.chart(_bars(ranked, params[0], metric_keys, f"{metric} by {params[0]}"))
    if split:
        scatter = _is_oos_scatter(ranked, metric, params)
        if scatter is not None:
            page.chart(scatter)
    folds = doc.get("folds") or []
    if folds:
        page.heading("Walk-forward folds: the in-sample best, tested on the following window")
        page.add(_table(["fold", "train", "test", "best parameters", f"in-sample {metric}", f"out-of-sample {metric}"],
                        [[f["fold"], f"{f['train_from']} → {f['train_to']}", f"{f['test_from']} → {f['test_to']}"
                          if f.get("test_from") else "-", ", ".join(f"{k}={v}" for k, v in f["best"].items()),
                          f.get("is_value"), f.get("oos_value")] for f in folds], left=4))
    page.heading("Ranked candidates")
    shown = ranked[:500]
    page.add(f'<div class="scroll">{_table(list(columns), [[r.get(c) for c in columns] for r in shown], left=0)}</div>')
    if len(ranked) > len(shown):
        page.add(f'<p class="note">The best {len(shown)} of {len(ranked)} are shown; sweep.csv has all.</p>')
    page.write(path)
