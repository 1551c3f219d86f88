"""Per-ticker strategy logs, laid out as the spec promises:

    logs/ema/MES.log, logs/supertrend/ES.log, logs/zeroday/SPX.log, logs/strategy_consumer.log

Each ticker logger writes to its own rotating file and does not propagate to the application log,
so a busy ticker cannot drown the application log. Decisions are also summarised in the
application log by the engine.
"""
from __future__ import annotations

import logging
import threading
from logging.handlers import RotatingFileHandler
from pathlib import Path

from config.instruments import get_instrument

_lock = threading.Lock()
_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 5


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
            handler = RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
            handler.setFormatter(_FORMAT)
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        return logger
