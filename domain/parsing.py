"""Numbers from untrusted input: JSON bodies, query strings, CLI flags and stored documents.

One parser per kind, used everywhere a number crosses into the service, so every entry point
accepts and refuses the same spellings:

- `parse_int`: a JSON integer, an integral finite float (`5.0`), or text of ASCII digits with an
  optional sign and surrounding whitespace. `str.isdigit()` is not used on purpose: it accepts
  "²" and "١" that `int()` then refuses (a 500), and `int()` alone accepts "1_000" and
  non-ASCII digits a client never meant.
- `parse_decimal` / `parse_float`: the same, plus a fraction and a bounded exponent. "NaN",
  "Infinity", "1e999" and JSON's `NaN`/`Infinity` literals (which Python's json accepts) are
  refused as "not a finite number" rather than slipping past a range check.
- `parse_bool`: a JSON boolean or the words true/false, 1/0, yes/no (any case).

Each raises a `ParseError` (a ValueError; `NumberError` for numbers) whose `message` is a phrase to
put after a field name: "limit: must be a whole number between 1 and 1000".
"""
from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

MAX_INT_DIGITS = 18  # beyond any limit in this service; refused before int() converts it
MAX_NUMBER_LENGTH = 40

_INTEGER = re.compile(r"[+-]?[0-9]{1,%d}" % MAX_INT_DIGITS, re.ASCII)
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?", re.ASCII)
# Ordinary whitespace only: str.strip() would also drop Unicode spaces a client did not type.
_SPACE = " \t\r\n"


class ParseError(ValueError):
    """`message` is a phrase to put after the field's name."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NumberError(ParseError):
    pass


TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")


def parse_bool(raw: object) -> bool:
    """A JSON boolean, or the words the dashboard's forms send ("true"/"false", "1"/"0", "yes"/"no",
    any case)."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        word = raw.strip(_SPACE).lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
    raise ParseError("must be true or false")


def _range_phrase(kind: str, minimum: object, maximum: object) -> str:
    if minimum is not None and maximum is not None:
        return f"must be {kind} between {minimum} and {maximum}"
    if minimum is not None:
        return f"must be {kind} >= {minimum}"
    if maximum is not None:
        return f"must be {kind} <= {maximum}"
    return f"must be {kind}"


def parse_int(raw: object, minimum: int | None = None, maximum: int | None = None) -> int:
    """`raw` as an int within [minimum, maximum] (either bound optional)."""
    phrase = _range_phrase("a whole number", minimum, maximum)
    value: int
    if isinstance(raw, bool):  # bool is an int subclass: True is not a quantity
        raise NumberError(phrase)
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, float):
        if not math.isfinite(raw) or not raw.is_integer():
            raise NumberError(phrase)
        value = int(raw)
    elif isinstance(raw, str):
        text = raw.strip(_SPACE)
        if not _INTEGER.fullmatch(text):
            raise NumberError(phrase)
        value = int(text)
    else:
        raise NumberError(phrase)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise NumberError(phrase)
    return value


def parse_decimal(raw: object, minimum: Decimal | int | None = None, maximum: Decimal | int | None = None,
                  *, kind: str = "a number") -> Decimal:
    """`raw` as a finite Decimal within [minimum, maximum]. Floats go through `str()` so 0.1 stays
    0.1 (not 0.1000000000000000055...)."""
    phrase = _range_phrase(kind, minimum, maximum)
    if isinstance(raw, bool):
        raise NumberError(phrase)
    if isinstance(raw, int):
        value = Decimal(raw)
    elif isinstance(raw, float):
        if not math.isfinite(raw):
            raise NumberError(f"{phrase} (not a finite number)")
        value = Decimal(str(raw))
    elif isinstance(raw, str):
        text = raw.strip(_SPACE)
        if len(text) > MAX_NUMBER_LENGTH or not _DECIMAL.fullmatch(text):
            raise NumberError(phrase)
        try:
            value = Decimal(text)
        except InvalidOperation:  # pragma: no cover - the pattern admits only valid literals
            raise NumberError(phrase) from None
    else:
        raise NumberError(phrase)
    if not value.is_finite():
        raise NumberError(f"{phrase} (not a finite number)")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise NumberError(phrase)
    return value


def parse_float(raw: object, minimum: float | None = None, maximum: float | None = None) -> float:
    """`raw` as a finite float within [minimum, maximum]."""
    lo = None if minimum is None else Decimal(str(minimum))
    hi = None if maximum is None else Decimal(str(maximum))
    value = float(parse_decimal(raw, lo, hi))
    if not math.isfinite(value):  # pragma: no cover - the bounds keep it finite
        raise NumberError(_range_phrase("a number", minimum, maximum))
    return value
