"""Per-ticker strategy logs, laid out as the spec promises:

    logs/ema/MES.log, logs/supertrend/ES.log, logs/zeroday/SPX.log, logs/strategy_consumer.log

Each ticker logger writes to its own rotating file and does not propagate to the application log,
so a busy ticker cannot drown the application log. Decisions are also summarised in the
application log by the engine.

Hot path: a strategy thread logs every bar (OHLCV + indicator values) and every decision. Those
lines are collected as records while the bar is handled (`record()`, keeping each line's own
timestamp) and written in one `write()` afterwards (`emit_batch()`), by a handler that formats each
record once and tracks the file size itself (the stock RotatingFileHandler formats every record
twice and stats/seeks the file per line). The file content and rotation limits are unchanged.
"""
from __future__ import annotations

import logging
import threading
import time
from logging.handlers import RotatingFileHandler
from pathlib import Path

from config.instruments import get_instrument

_lock = threading.Lock()
MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 5


class _Formatter(logging.Formatter):
    """"%(asctime)s %(levelname)s %(message)s" with the second's text cached (same output)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")
        self._cached: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        second = int(record.created)
        cached = self._cached
        if cached[0] != second:
            cached = (second, time.strftime(self.default_time_format, self.converter(record.created)))
            self._cached = cached
        return self.default_msec_format % (cached[1], record.msecs)

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        record.message = record.getMessage()
        record.asctime = self.formatTime(record)
        return f"{record.asctime} {record.levelname} {record.message}"


_FORMAT = _Formatter()


class TickerFileHandler(RotatingFileHandler):
    """RotatingFileHandler (same rotation: MAX_BYTES, BACKUPS) that formats each record once,
    keeps the file size in memory instead of seeking per line, and writes a batch in one write."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._size: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.emit_batch([record])

    def emit_batch(self, records: list[logging.LogRecord]) -> None:
        try:
            text = "".join([self.format(r) + self.terminator for r in records])
        except Exception:
            for r in records:
                self.handleError(r)
            return
        with self.lock:  # type: ignore[union-attr]
            try:
                if self.stream is None:
                    self.stream = self._open()
                    self._size = None
                if self._size is None:
                    self._size = self.stream.seek(0, 2)
                if self.maxBytes > 0 and self._size > 0 and self._size + len(text) >= self.maxBytes:
                    self.doRollover()
                    self._size = self.stream.seek(0, 2) if self.stream is not None else 0
                    if self.stream is None:
                        self.stream = self._open()
                self.stream.write(text)
                self.stream.flush()
                self._size += len(text.encode(self.encoding or "utf-8")) if not text.isascii() else len(text)
            except Exception:
                self._size = None
                for r in records:
                    self.handleError(r)


def record(logger: logging.Logger, level: int, msg: str) -> logging.LogRecord | None:
    """A record for `msg` (already formatted), stamped now; None when the level is off. Skips
    the caller lookup a `logger.info()` call does."""
    if not logger.isEnabledFor(level):
        return None
    return logger.makeRecord(logger.name, level, __file__, 0, msg, None, None)


def emit_batch(logger: logging.Logger, records: list[logging.LogRecord]) -> None:
    """Write `records` (from `record()`) as one write when the logger is a plain ticker logger;
    otherwise through the normal logging path."""
    if not records:
        return
    handlers = logger.handlers
    if (len(handlers) == 1 and type(handlers[0]) is TickerFileHandler and not logger.filters
            and not handlers[0].filters and not logger.disabled):
        handler = handlers[0]
        handler.emit_batch([r for r in records if r.levelno >= handler.level])
        return
    for r in records:
        logger.handle(r)


def ticker_logger(log_dir: Path, strategy: str, symbol: str) -> logging.Logger:
    """The rotating logger for one (strategy, ticker); created once per process."""
    stem = get_instrument(symbol).file_stem
    name = f"ticker.{strategy}.{stem}"
    with _lock:
        logger = logging.getLogger(name)
        path = (log_dir / strategy / f"{stem}.log").resolve()
        if not any(isinstance(h, RotatingFileHandler) and Path(h.baseFilename) == path for h in logger.handlers):
            for handler in list(logger.handlers):  # log dir changed (tests): drop the old file
                logger.removeHandler(handler)
                handler.close()
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = TickerFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
            handler.setFormatter(_FORMAT)
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        return logger
