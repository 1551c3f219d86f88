"""The request and response models of every endpoint (see api/contract.py).

Leaf fields validate with the domain's own parsers (domain/parsing.py, `parse_strategy`,
`canonical_symbol`, `Timeframe.parse`, ...) and declare their JSON schema next to them, so a value
the document calls valid is one the domain accepts. The document shows the canonical spellings;
the parsers also take the dashboard's variants ("MES" for "/MES", "ema " for "ema", "5" for
"5Min", a number sent as a string), which the descriptions mention.

Response models list the fields clients read; `extra="allow"` documents that more may appear
(the answers carry diagnostic fields), so adding one never breaks a client or the contract.
"""
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from api.validation import MAX_TEXT
from auth.users import MAX_EMAIL_LENGTH, MAX_PASSWORD_LENGTH
from backtest.jobs import (MAX_COMMISSION, MAX_DATA_FILES, MAX_LIST, MAX_SEARCH_CANDIDATES, MAX_WALK_FORWARD_FOLDS,
                          RESULT_POINTS, RESULT_TRADES)
from backtest.sweep import RANK_KEYS, SWEEPABLE
from config.instruments import CATALOG, Symbol, canonical_symbol
from config.timeframes import ALLOWED_HOURS, ALLOWED_MINUTES, Timeframe
from domain.orders import BROKERS, OrderState
from domain.parsing import FALSE_WORDS, TRUE_WORDS, ParseError, parse_bool, parse_decimal, parse_float, parse_int
from domain.tickers import (MAX_PERIOD, MAX_QUANTITY, StartBehavior, StrategyName, TrendLine, parse_strategy,
                            parse_trend_line)
from engine.chart import MAX_BARS as CHART_MAX_BARS
from engine.manual import EMA_ACTIONS, ZERODAY_ACTIONS
from risk.limits import MAX_CONTRACTS, MAX_RATE
from risk.state import GLOBAL_SCOPE

INTEGER_TEXT = r"^[+-]?[0-9]{1,18}$"
DECIMAL_TEXT = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?$"
SYMBOLS = sorted(set(CATALOG) | {s.lstrip("/") for s in CATALOG})
TIMEFRAMES = [f"{m}Min" for m in ALLOWED_MINUTES] + [f"{h}Hour" for h in ALLOWED_HOURS] + ["1Day"]
STRATEGIES = [s.value for s in StrategyName]


# ------------------------------------------------------------------------------------ leaf types
def whole(minimum: int, maximum: int, *, text: bool = True, description: str | None = None) -> Any:
    """An integer in [minimum, maximum]. In a JSON body also as a string of digits (`text`); in a
    query string always as text (OpenAPI serialises it so)."""
    number: dict[str, Any] = {"type": "integer", "minimum": minimum, "maximum": maximum}
    schema: dict[str, Any] = {"anyOf": [number, {"type": "string", "pattern": INTEGER_TEXT}]} if text else number
    if description:
        schema["description"] = description
    return Annotated[int, BeforeValidator(lambda raw: parse_int(raw, minimum, maximum)), WithJsonSchema(schema)]


def decimal_number(minimum: float, maximum: float, *, description: str | None = None) -> Any:
    """A finite number in [minimum, maximum], in JSON also as a decimal string."""
    schema: dict[str, Any] = {"anyOf": [{"type": "number", "minimum": minimum, "maximum": maximum},
                                        {"type": "string", "pattern": DECIMAL_TEXT}]}
    if description:
        schema["description"] = description
    return Annotated[float, BeforeValidator(lambda raw: parse_float(raw, minimum, maximum)), WithJsonSchema(schema)]


def _amount(raw: object) -> str:
    return str(parse_decimal(raw, kind="a positive amount"))


def _broker(raw: object) -> str:
    if not isinstance(raw, str) or raw not in BROKERS:
        raise ParseError(f"must be one of {', '.join(BROKERS)}")
    return raw


def _iso_time(raw: object) -> datetime:
    """ISO date or time; naive means UTC."""
    try:
        if not isinstance(raw, str):
            raise ValueError
        value = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ParseError("must be an ISO date or time, e.g. 2025-06-10 or 2025-06-10T14:30:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


Flag = Annotated[bool, BeforeValidator(parse_bool), WithJsonSchema(
    {"anyOf": [{"type": "boolean"}, {"type": "string", "enum": [*TRUE_WORDS, *FALSE_WORDS]}]})]
Strategy = Annotated[StrategyName, BeforeValidator(parse_strategy),
                     WithJsonSchema({"type": "string", "enum": STRATEGIES})]
CatalogSymbol = Annotated[Symbol, BeforeValidator(canonical_symbol), WithJsonSchema(
    {"type": "string", "enum": SYMBOLS, "description": "a catalog symbol; futures with or without the slash"})]
TimeframeField = Annotated[Timeframe, BeforeValidator(Timeframe.parse), WithJsonSchema({
    "anyOf": [{"type": "string", "enum": TIMEFRAMES}, {"type": "string", "pattern": r"^[0-9]{1,6}t$"}],
    "description": "a time bar (also as 1, 5m, 1h, 1d) or a tick chart: a bar every N trades (512t)"})]
TrendLineField = Annotated[TrendLine, BeforeValidator(parse_trend_line),
                           WithJsonSchema({"type": "string", "enum": [t.value for t in TrendLine]})]
StartBehaviorField = Annotated[StartBehavior, WithJsonSchema({"type": "string", "enum": [b.value for b in StartBehavior]})]
Amount = Annotated[str, BeforeValidator(_amount), WithJsonSchema(
    {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string", "pattern": DECIMAL_TEXT}],
     "description": "USD, greater than 0"})]
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
DataPaths = Annotated[
    list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=MAX_DATA_FILES),
    BeforeValidator(lambda raw: [raw] if isinstance(raw, str) else raw),  # one path may come bare
    WithJsonSchema({"anyOf": [{"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1,
                               "maxItems": MAX_DATA_FILES}, {"type": "string", "minLength": 1}]})]
Broker = Annotated[str, BeforeValidator(_broker), WithJsonSchema({"type": "string", "enum": list(BROKERS)})]
IsoTime = Annotated[datetime, BeforeValidator(_iso_time), WithJsonSchema(
    {"type": "string", "description": "ISO date or time (UTC unless it says), e.g. 2025-06-10 or "
                                      "2025-06-10T14:30:00Z"})]


class Model(BaseModel):
    """Requests: unknown fields are ignored (old dashboards send more), types checked strictly."""

    model_config = ConfigDict(extra="ignore", arbitrary_types_allowed=True)


class Closed(Model):
    """A request whose unknown fields are refused: a typo there would silently change nothing."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class Reply(BaseModel):
    model_config = ConfigDict(extra="allow")


# --------------------------------------------------------------------------------- the envelope
class ErrorReply(Reply):
    """Every failure: `error` is the sentence the dashboard shows, `message` the same or longer,
    `code` a stable word for programs where one exists, `field` the offending input."""

    success: Literal[False]
    error: str
    message: str
    code: str | None = Field(None, description="e.g. risk_denied, market_closed, service_unavailable")
    field: str | None = Field(None, description="the request field at fault")


class Done(Reply):
    success: Literal[True]


class MessageReply(Done):
    message: str


# ------------------------------------------------------------------------------------ auth
class LoginBody(Model):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"email": "admin@localhost", "password": "the printed password"}]})

    email: Annotated[str, Field(min_length=1, max_length=MAX_EMAIL_LENGTH)]
    password: Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)]


class LoginReply(Done):
    token: str = Field(description="send as `Authorization: Bearer <token>`")
    role: Literal["admin", "viewer"]


class UpdateCredentialsBody(Model):
    currentPassword: Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)]
    newEmail: Annotated[str, Field(max_length=MAX_EMAIL_LENGTH)] | None = None
    newPassword: Annotated[str, Field(max_length=MAX_PASSWORD_LENGTH)] | None = None


class TokenReply(MessageReply):
    token: str


# ------------------------------------------------------------------------------------ tickers
class StrategyQuery(Model):
    strategy: Strategy


class TickerMap(Done):
    data: dict[str, list[str]] = Field(description=(
        "symbol -> the dashboard's positional row of strings: ema/zeroday `[timeframe, schwab_qty, "
        "TRUE|FALSE, tastytrade_qty, trend_line_1, period_1, trend_line_2, period_2]` (zeroday then "
        "call_enabled, put_enabled), supertrend the first four"))
    params: dict[str, dict[str, Any]] = Field(description="symbol -> the parameters beyond the row")


class AddTickerBody(Model):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"strategy": "ema", "symbol": "/MES", "timeframe": "1Min", "trend_line_1": "EMA", "period_1": 9,
         "trend_line_2": "EMA", "period_2": 21, "schwab_quantity": 0, "tastytrade_quantity": 1, "trade_enabled": True},
        {"strategy": "supertrend", "symbol": "NVDA", "timeframe": "1Hour", "schwab_quantity": 2,
         "tastytrade_quantity": 0, "trade_enabled": False, "atr_period": 10, "multiplier": 3.0}]})

    strategy: Strategy
    symbol: CatalogSymbol
    timeframe: TimeframeField
    trade_enabled: Flag
    schwab_quantity: whole(0, MAX_QUANTITY, description="0 for futures (Schwab's API cannot trade them)")
    tastytrade_quantity: whole(0, MAX_QUANTITY)
    trend_line_1: TrendLineField | None = Field(None, description="ema/zeroday; default EMA")
    period_1: whole(1, MAX_PERIOD) | None = Field(None, description="ema/zeroday (required there); below period_2")
    trend_line_2: TrendLineField | None = Field(None, description="ema/zeroday; default EMA")
    period_2: whole(1, MAX_PERIOD) | None = Field(None, description="ema/zeroday (required there)")
    stop_loss_ticks: whole(0, 100_000) | None = Field(None, description="ema: stop distance in ticks, 0 = off")
    stop_loss_atr: decimal_number(0.0, 100.0) | None = Field(None, description="ema: stop distance in ATRs, 0 = off")
    atr_period: whole(1, MAX_PERIOD) | None = Field(None, description="ema (default 14) and supertrend (default 10)")
    multiplier: decimal_number(0.1, 100.0) | None = Field(None, description="supertrend; default 3.0")
    trailing_stop_atr: decimal_number(0.0, 100.0) | None = Field(None, description="supertrend; default 2.0, 0 = off")
    take_profit_atr: decimal_number(0.0, 100.0) | None = Field(None, description="supertrend; default 3.0, 0 = off")
    call_enabled: Flag | None = Field(None, description="zeroday: may buy calls (default true)")
    put_enabled: Flag | None = Field(None, description="zeroday: may buy puts (default true)")
    start_behavior: StartBehaviorField | None = Field(None, description=(
        "ema/supertrend, on the first start with nothing in the book: wait_for_signal (default) stays flat "
        "until a live signal; join_current takes the position the rules hold after the warm-up at once"))


class DeleteTickerArgs(Model):
    """Sent as the JSON body or as query parameters."""

    strategy: Strategy | None = None
    symbol: CatalogSymbol | None = None


# ------------------------------------------------------------------------------------ trading
class TickerActionBody(Model):
    ticker: CatalogSymbol
    action: Annotated[str, Field(min_length=1, max_length=20)]


class ZerodayTriggerBody(TickerActionBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"ticker": "SPX", "action": "call"}]})

    ticker: Annotated[Symbol, BeforeValidator(canonical_symbol), WithJsonSchema({"type": "string", "enum": ["SPX"]})]
    action: Annotated[str, WithJsonSchema({"type": "string", "enum": ZERODAY_ACTIONS.words()})]


class EmaTriggerBody(TickerActionBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"ticker": "/MES", "action": "LONG"}]})

    action: Annotated[str, WithJsonSchema({"type": "string", "enum": EMA_ACTIONS.words(), "description": "any case"})]


class SpxButtonBody(Model):
    model_config = ConfigDict(json_schema_extra={"examples": [{"action": "buy_call", "symbol": "SPX"}]})

    action: Annotated[str, WithJsonSchema({"type": "string", "enum": ["buy_call", "buy_put", "close_position"]})]
    symbol: Annotated[str, WithJsonSchema({"type": "string", "enum": ["SPX"]})] | None = None
    strike: Annotated[Any, WithJsonSchema({"description": "refused unless empty: the ATM contract is traded"})] = None
    expiration: Annotated[Any, WithJsonSchema({"type": "string", "format": "date",
                                               "description": "only today's (New York) date"})] = None


class ManualReply(MessageReply):
    partial: bool
    results: list[dict[str, Any]] = Field(description="one entry per broker: status and reason")


class ManualRefusal(ErrorReply):
    results: list[dict[str, Any]] | None = None


class PositionQuery(Model):
    strategy: Strategy
    ticker: CatalogSymbol


class PositionReply(Done):
    data: dict[str, Any] | None


# ------------------------------------------------------------------------------------ brokers
class SchwabLinkBody(Model):
    authorizationLink: Text = Field(description="the full redirect URL Schwab sent the browser to")


class SchwabTokenLinkBody(Model):
    refresh_token_link: Text | None = Field(None, description="the full redirect URL")
    token: Text | None = Field(None, description="the same, as one dashboard build names it")


class TastyCodeBody(Model):
    """One of the two Tastytrade logins; which one is the field sent, never guessed from the text."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"authorizationCode": "https://127.0.0.1:8183/callback?code=...&state=..."},
        {"refreshToken": "<the refresh token Create Grant showed>"}]})

    authorizationCode: Text | None = Field(
        None, description="the authorize-URL login: the redirect URL, or the bare code from it")
    refreshToken: Text | None = Field(
        None, validation_alias=AliasChoices("refreshToken", "refresh_token"),
        description="a personal application's login: the refresh token made on my.tastytrade.com under OAuth "
                    "Applications > Manage > Create Grant (also accepted as `refresh_token`)")


class ConnectionReply(Reply):
    success: bool = Field(description="whether Tastytrade is connected")
    message: str
    connected: bool | None = None


class ListReply(Done):
    data: list[dict[str, Any]]


# ------------------------------------------------------------------------------------ meta
class HealthReply(Reply):
    success: bool
    redis: dict[str, Any]
    mode: Literal["paper", "live"]
    version: str


class OpenApiReply(BaseModel):
    model_config = ConfigDict(extra="allow")
    openapi: str
    paths: dict[str, Any]


# ------------------------------------------------------------------------------------ bars
class BarsQuery(Model):
    symbol: CatalogSymbol
    timeframe: TimeframeField
    limit: whole(1, 5000, text=False) | None = Field(None, description="default 100")


class BarsReply(Done):
    data: list[dict[str, Any]] = Field(description="completed bars, oldest first")
    symbol: str
    timeframe: str


# ------------------------------------------------------------------------------------ risk
class RiskLimitsBody(Closed):
    """Partial: only the fields sent change; null removes a limit."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"daily_loss_limit_global": "500", "max_position": 5, "max_orders_per_minute": 30}]})

    daily_loss_limit_global: Amount | None = None
    daily_loss_limit_per_strategy: Amount | None = None
    daily_loss_limit_by_strategy: dict[Literal["ema", "supertrend", "zeroday"], Amount | None] | None = None
    max_position: whole(1, MAX_CONTRACTS) | None = None
    max_position_by_symbol: dict[CatalogSymbol, whole(1, MAX_CONTRACTS) | None] | None = None
    max_order_quantity: whole(1, MAX_CONTRACTS) | None = None
    max_orders_per_minute: whole(1, MAX_RATE) | None = None
    sizing_mode: Literal["fixed", "risk"] | None = None
    risk_per_trade: Amount | None = Field(None, description="required with sizing_mode risk")


class RiskReply(Done):
    limits: dict[str, Any]
    usage: dict[str, Any] | None = None
    recent_denials: list[Any] | None = None


class ResumeBody(Model):
    model_config = ConfigDict(json_schema_extra={"examples": [{"scope": "global"}]})

    scope: Annotated[str, WithJsonSchema({"type": "string", "enum": [GLOBAL_SCOPE, *STRATEGIES]})] = GLOBAL_SCOPE


class ResumeReply(Done):
    scope: str
    state: dict[str, Any]


class ReportReply(Done):
    report: dict[str, Any] | None


# ------------------------------------------------------------------------------------ monitoring
class TradeFilterQuery(Model):
    strategy: Strategy | None = None
    symbol: CatalogSymbol | None = None
    broker: Broker | None = None
    from_: IsoTime | None = Field(None, alias="from", description="exits at or after")
    to: IsoTime | None = Field(None, description="exits before; after from")


class TradesQuery(TradeFilterQuery):
    offset: whole(0, 10_000_000, text=False) | None = Field(None, description="default 0")
    limit: whole(0, 1000, text=False) | None = Field(None, description="default 100")
    format: Literal["json", "csv"] | None = None


class TradesReply(Done):
    trades: list[dict[str, Any]]
    total: int
    offset: int
    limit: int


class PnlReply(Done):
    pnl: dict[str, Any]


class IntradayEquityReply(Done):
    session_start: str = Field(description="where the loss limits' session began (ISO 8601)")
    points: list[dict[str, Any]] = Field(description="oldest first: {ts, realized, unrealized, total}, decimals as "
                                                     "text, sampled by the P&L refresh")


class StatusReply(Done):
    pass


class StrategiesReply(Done):
    data: dict[str, Any] = Field(description="strategy -> {running, tickers: {symbol: status}}")


class ChartQuery(Model):
    strategy: Strategy
    symbol: CatalogSymbol
    limit: whole(1, CHART_MAX_BARS, text=False) | None = Field(None, description=f"default {CHART_MAX_BARS}")


class ChartReply(Done):
    data: dict[str, Any] = Field(description=(
        "{strategy, symbol, timeframe, lines: [indicator names drawn], bars: [bar + lines: {name: value} or null "
        "for a bar the running strategy did not compute], markers: [{ts_ns, side, leg, price, quantity, broker, "
        "reason}], position, stop}"))


# ------------------------------------------------------------------------------------ backtest
def _backtest_symbol(raw: object) -> str:
    """A catalog symbol (canonical), or another symbol's text for a research instrument (its
    tick_size is then required; backtest/jobs.py checks that)."""
    try:
        return canonical_symbol(raw)
    except ValueError:
        if isinstance(raw, str) and raw.strip():
            return raw.strip()
        raise


BacktestSymbol = Annotated[str, BeforeValidator(_backtest_symbol), WithJsonSchema({
    "type": "string", "minLength": 1, "maxLength": 21,
    "description": f"a catalog symbol ({', '.join(SYMBOLS)}), or any other with tick_size"})]
DecimalText = Annotated[str, BeforeValidator(lambda raw: str(parse_decimal(raw, 0))), WithJsonSchema(
    {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string", "pattern": DECIMAL_TEXT}]})]


class BacktestBody(Closed):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"strategy": "ema", "symbol": "/MES", "timeframe": "5Min", "period_1": 9, "period_2": 21,
         "data": ["MES_1min.csv"], "from": "2025-01-02", "to": "2025-03-01"}]})

    strategy: Strategy
    symbol: BacktestSymbol
    timeframe: TimeframeField
    data: DataPaths = Field(description="data file paths (CSV, Parquet or DBN) under an allowed data directory")
    trend_line_1: TrendLineField | None = None
    period_1: whole(1, MAX_PERIOD) | None = None
    trend_line_2: TrendLineField | None = None
    period_2: whole(1, MAX_PERIOD) | None = None
    stop_loss_ticks: whole(0, 100_000) | None = None
    stop_loss_atr: decimal_number(0.0, 100.0) | None = None
    atr_period: whole(1, MAX_PERIOD) | None = None
    multiplier: decimal_number(0.1, 100.0) | None = None
    trailing_stop_atr: decimal_number(0.0, 100.0) | None = None
    take_profit_atr: decimal_number(0.0, 100.0) | None = None
    from_: str | None = Field(None, alias="from", description="ISO date/time")
    to: str | None = Field(None, description="ISO date/time, after from")
    quantity: whole(1, 10_000) | None = Field(None, description="default 1")
    commission: Annotated[str, BeforeValidator(lambda raw: str(parse_decimal(raw, 0, MAX_COMMISSION))), WithJsonSchema(
        {"anyOf": [{"type": "number", "minimum": 0, "maximum": MAX_COMMISSION},
                   {"type": "string", "pattern": DECIMAL_TEXT}],
         "description": "USD per contract per fill; default 0"})] | None = None
    slippage_ticks: whole(0, 1000) | None = Field(None, description="default 0")
    instrument: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    tz: Annotated[str, Field(min_length=1, max_length=40)] | None = Field(None, description="of naive times; UTC")
    bar_time: Literal["start", "end"] | None = None
    tick_size: DecimalText | None = Field(None, description="a symbol outside the catalog: its minimum price step")
    contract_multiplier: DecimalText | None = Field(
        None, description="a symbol outside the catalog: currency per 1.0 price point per contract; default 1")
    calendar: Annotated[str, Field(min_length=1, max_length=40)] | None = Field(
        None, description="a symbol outside the catalog: a pandas_market_calendars or exchange_calendars name, "
                          "24/5 or 24/7 (default)")
    allow_off_tick: Flag | None = Field(None, description="run on prices off the tick (fills rounded) instead of a 400")
    # A parameter search (as the CLI's --sweep ...): the job ranks the candidates instead of one run.
    sweep: Annotated[list[Annotated[str, Field(min_length=3, max_length=200)]],
                     Field(min_length=1, max_length=len(SWEEPABLE))] | None = Field(
        None, description=("axes NAME=start:stop:step (stop inclusive) or NAME=v1,v2,...; NAME one of "
                           f"{', '.join(SWEEPABLE)}; a grid spans at most {MAX_SEARCH_CANDIDATES} points"))
    optimizer: Literal["grid", "optuna"] | None = Field(None, description="default grid")
    trials: whole(1, MAX_SEARCH_CANDIDATES) | None = Field(None, description="optuna: candidates per fold; default 100")
    seed: whole(0, 2**31 - 1) | None = Field(None, description="optuna: sampler seed; default 0")
    train_fraction: decimal_number(0.0, 1.0) | None = Field(
        None, description="train on the first share of the bars, test on the rest (0 < f < 1)")
    walk_forward: whole(1, MAX_WALK_FORWARD_FOLDS) | None = Field(None, description="walk-forward folds")
    anchored: Flag | None = Field(None, description="walk-forward: every training window starts at the first bar")
    rank_by: Annotated[str, WithJsonSchema({"type": "string", "enum": list(RANK_KEYS)})] | None = Field(
        None, description="default net_pnl (in-sample when split)")


class BacktestListQuery(Model):
    offset: whole(0, 100_000, text=False) | None = Field(None, description="default 0")
    limit: whole(1, MAX_LIST, text=False) | None = Field(None, description="default 50")


class BacktestListReply(Done):
    jobs: list[dict[str, Any]] = Field(description=(
        "newest first: {id, kind: backtest | sweep, status, progress, submitted_at, started_at, finished_at, "
        "error, strategy, symbol, timeframe, from, to, metrics: the key figures of a finished backtest or null}"))
    count: int
    total: int = Field(description="jobs kept (each for a week)")
    offset: int
    limit: int
    has_more: bool


class QueuedReply(Done):
    id: str
    status: Literal["queued"]


class BacktestJobReply(Done):
    id: str
    status: str
    progress: float
    report: dict[str, Any] | None
    report_url: str | None = Field(None, description="the report page (GET, text/html) once the job is done")
    kind: Literal["backtest", "sweep"] | None = None
    sweep: dict[str, Any] | None = Field(None, description="a finished search's summary and best candidate")
    sweep_url: str | None = Field(None, description="a finished search's ranked candidates (GET, JSON)")
    sweep_html_url: str | None = Field(None, description="a finished search's page with the heatmaps (GET, text/html)")
    job: dict[str, Any]


class BacktestSweepReply(Done):
    id: str
    params: list[str] = Field(description="the searched parameters")
    columns: list[str] = Field(description="the ranked table's columns (sweep.csv's)")
    results: list[dict[str, Any]] = Field(description="the candidates, best first (rank 1)")
    rank_by: str
    optimizer: str
    split: str | None
    folds: list[Any]
    overfitting: dict[str, Any] | None


class BacktestResultsReply(Done):
    id: str
    equity: list[dict[str, Any]] = Field(description="{time, equity, drawdown}, evenly thinned to at most "
                                                     f"{RESULT_POINTS} points, the last one kept")
    trades: list[dict[str, Any]] = Field(description=f"the round trips (trades.csv), the last {RESULT_TRADES}")
    trades_total: int
    lines: list[str] = Field(description="the strategy's price lines among the bar columns")
    bars: list[dict[str, Any]] = Field(description="the last bars with the strategy's lines (bars.csv)")


# ------------------------------------------------------------------------------------ orders
class OrdersQuery(Model):
    strategy: Annotated[str, WithJsonSchema({"type": "string", "enum": [*STRATEGIES, "reconcile"]})] | None = None
    symbol: CatalogSymbol | None = None
    broker: Annotated[str, WithJsonSchema({"type": "string", "enum": list(BROKERS)})] | None = None
    state: Annotated[str, WithJsonSchema({"type": "string", "enum": [s.value for s in OrderState]})] | None = None
    offset: whole(0, 100_000, text=False) | None = Field(None, description="default 0")
    limit: whole(1, 1000, text=False) | None = Field(None, description="default 50")


class OrdersReply(Done):
    orders: list[dict[str, Any]]
    count: int
    offset: int
    limit: int
    has_more: bool
    filters: dict[str, str]


class PositionsQuery(Model):
    include_flat: Annotated[str, WithJsonSchema({"type": "boolean", "description": "default false"})] | None = None


class PositionsReply(Done):
    positions: list[dict[str, Any]]
    brokers: dict[str, Any]
    paused_brokers: Any


class JournalQuery(Model):
    limit: whole(1, 1000, text=False) | None = Field(None, description="default 100")
    stream: Literal["journal", "fills"] | None = None


class JournalReply(Done):
    entries: list[Any]
    count: int
    limit: int
    stream: str


class ReconcileReply(Done):
    report: dict[str, Any] | None
    halts: list[Any]


class AdoptBody(Model):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"broker": "tastytrade", "key": "/MESZ6", "strategy": "ema"}]})

    broker: Annotated[str, WithJsonSchema({"type": "string", "enum": list(BROKERS)})]
    key: Annotated[str, WithJsonSchema({"type": "string", "pattern": r"^[A-Za-z0-9/ .\-]{1,40}$",
                                        "description": "the broker's position key: symbol or OCC option symbol"})]
    strategy: Annotated[str, WithJsonSchema({"type": "string", "enum": [*STRATEGIES, "reconcile"]})]
    symbol: CatalogSymbol | None = None


class FlattenBody(Model):
    broker: Annotated[str, WithJsonSchema({"type": "string", "enum": list(BROKERS)})]
    key: Annotated[str, WithJsonSchema({"type": "string", "pattern": r"^[A-Za-z0-9/ .\-]{1,40}$"})]


class ResolvedReply(Done):
    cleared_halts: list[Any]
    halts: list[Any]


class ResolveOrderBody(Model):
    client_order_id: Annotated[str, WithJsonSchema({"type": "string", "pattern": r"^[A-Za-z0-9\-]{1,64}$"})]
    state: Annotated[str, WithJsonSchema({"type": "string", "enum": ["FILLED", "CANCELLED", "REJECTED"]})]
    filled_quantity: whole(0, 1_000_000) | None = Field(None, description="default 0")
    avg_fill_price: decimal_number(0, 10_000_000) | None = None
    note: Annotated[str, Field(max_length=200)] | None = None


class OrderReply(Done):
    order: dict[str, Any]
