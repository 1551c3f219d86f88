"""Synthetic SPX option chain for the paper broker when no real chain is connected.

Black-Scholes (no dividends, configurable rate) with one flat implied volatility; time runs to the
16:00 America/New_York PM settlement of the SPXW expiry. Quotes are CBOE ticks (0.05 below $3.00,
0.10 at or above) with a one-tick spread around the theoretical value, so buys pay the ask and
sells receive the bid exactly like a real book. A theoretical value below one tick has no bid:
selling it is rejected rather than filled at zero.
"""
from __future__ import annotations

import math
from datetime import date, datetime, time, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

from domain.orders import OptionContract, OptionRight

NEW_YORK = ZoneInfo("America/New_York")
SPX_ROOT = "SPXW"
STRIKE_STEP = Decimal(5)
DEFAULT_IV = 0.15
_YEAR_SECONDS = 365.0 * 24 * 3600


def expiry_datetime(expiration: date) -> datetime:
    """SPXW PM-settled expiries stop trading at 16:00 New York time."""
    return datetime.combine(expiration, time(16, 0), tzinfo=NEW_YORK)


def years_to_expiry(now: datetime, expiration: date) -> float:
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    seconds = (expiry_datetime(expiration) - now).total_seconds()
    return max(seconds, 0.0) / _YEAR_SECONDS


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def black_scholes(spot: float, strike: float, years: float, iv: float, right: OptionRight, rate: float = 0.0) -> float:
    """Theoretical value per unit of underlying; intrinsic value at or after expiry."""
    if years <= 0 or iv <= 0:
        intrinsic = spot - strike if right is OptionRight.CALL else strike - spot
        return max(intrinsic, 0.0)
    sd = iv * math.sqrt(years)
    d1 = (math.log(spot / strike) + (rate + 0.5 * iv * iv) * years) / sd
    d2 = d1 - sd
    discount = math.exp(-rate * years)
    if right is OptionRight.CALL:
        return spot * _norm_cdf(d1) - strike * discount * _norm_cdf(d2)
    return strike * discount * _norm_cdf(-d2) - spot * _norm_cdf(-d1)


def quote_for(theo: float) -> tuple[Decimal, Decimal]:
    """(bid, ask) on CBOE ticks around the theoretical value; bid may be 0 (no bid)."""
    # In integer millionths (the value rounded to 6 decimals, as a Decimal would hold it): exact,
    # and a few times cheaper than Decimal division, for a chain of ~80 contracts per signal.
    micros = round(round(max(theo, 0.0), 6) * 1_000_000)
    tick = 50_000 if micros < 3_000_000 else 100_000  # CBOE: 0.05 below $3.00, 0.10 at or above
    bid = micros // tick * tick
    ask = -(-micros // tick) * tick
    if ask == bid:  # keep a one-tick market even when theo sits exactly on a tick
        ask = bid + tick
    ask = max(ask, 50_000)  # never an ask below one small tick
    return Decimal(bid // 10_000).scaleb(-2), Decimal(ask // 10_000).scaleb(-2)


def price_contract(
    contract: OptionContract, spot: float, now: datetime, iv: float = DEFAULT_IV, rate: float = 0.0
) -> OptionContract:
    """The same contract with synthetic bid/ask at the given underlying level and time."""
    theo = black_scholes(spot, float(contract.strike), years_to_expiry(now, contract.expiration), iv, contract.right, rate)
    bid, ask = quote_for(theo)
    return OptionContract(
        underlying=contract.underlying, root=contract.root, expiration=contract.expiration, strike=contract.strike,
        right=contract.right, bid=bid, ask=ask, broker_symbol=contract.broker_symbol,
    )


def atm_strike(spot: float, step: Decimal = STRIKE_STEP) -> Decimal:
    return (Decimal(str(spot)) / step).to_integral_value() * step


def synthetic_chain(
    spot: float, expiration: date, now: datetime, iv: float = DEFAULT_IV, strikes_each_side: int = 20,
    underlying: str = "SPX", root: str = SPX_ROOT, rate: float = 0.0,
) -> list[OptionContract]:
    """5-point strikes around the spot, calls and puts, sorted by strike then right (C before P)."""
    if spot <= 0:
        raise ValueError("spot must be positive")
    centre = atm_strike(spot)
    years = years_to_expiry(now, expiration)  # the same for every contract of the chain
    out: list[OptionContract] = []
    for i in range(-strikes_each_side, strikes_each_side + 1):
        strike = centre + STRIKE_STEP * i
        if strike <= 0:
            continue
        for right in (OptionRight.CALL, OptionRight.PUT):
            bid, ask = quote_for(black_scholes(spot, float(strike), years, iv, right, rate))
            out.append(OptionContract(underlying=underlying, root=root, expiration=expiration, strike=strike,
                                      right=right, bid=bid, ask=ask))
    return out
