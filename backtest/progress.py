"""One progress display over a whole backtest run: loading the data, the loop, writing the outputs.

The loop is a small part of what a user waits for (reading a million bars and writing the report
take as long), so the bar covers the three phases, each a fixed share of the bar (`PHASES`,
roughly their share of a default 1M-bar run) and named while it runs. Shown as a tqdm bar only when
stderr is a terminal (`auto`): a log file or a pipe gets no carriage-return noise. `json` prints
{"progress": fraction} lines for the API's jobs (backtest/jobs.py reads them), the fraction of the
whole run.
"""
from __future__ import annotations

import json
import sys
from typing import Callable, TextIO

PHASES = {"load": 0.3, "backtest": 0.5, "write": 0.2}
_STEPS = 1000


class RunProgress:
    def __init__(self, mode: str, phases: dict[str, float] | None = None, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if _is_terminal(self.stream) else "none"
        self.mode = mode
        weights = phases or PHASES
        total = sum(weights.values())
        self._starts: dict[str, float] = {}
        at = 0.0
        for name, weight in weights.items():
            self._starts[name] = at
            at += weight / total
        self._shares = {name: weight / total for name, weight in weights.items()}
        self._done = 0.0  # fraction of the whole run
        self._last_json = -1.0
        self._bar = None
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=_STEPS, file=self.stream, mininterval=0.2, desc="load",
                             bar_format="{desc:>9}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")

    def phase(self, name: str) -> Callable[[int, int], None]:
        """Enter `name`; the callback reports (done, total) inside it (the engine's progress)."""
        self._advance(self._starts[name])
        if self._bar is not None:
            self._bar.set_description_str(name, refresh=False)
        start, share = self._starts[name], self._shares[name]

        def update(done: int, total: int) -> None:
            self._advance(start + share * (done / total if total else 1.0))
        return update

    def finish(self) -> None:
        self._advance(1.0)
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _advance(self, fraction: float) -> None:
        fraction = min(1.0, max(self._done, fraction))
        self._done = fraction
        if self._bar is not None:
            self._bar.update(int(fraction * _STEPS) - self._bar.n)
        elif self.mode == "json" and (fraction - self._last_json >= 0.01 or fraction >= 1.0) and fraction != self._last_json:
            self._last_json = fraction
            print(json.dumps({"progress": round(fraction, 4)}), file=self.stream, flush=True)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
