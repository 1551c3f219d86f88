"""Which broker's stream SPX comes from when several could: `FirstConnectedSource` runs the first
source whose broker is connected and moves to another only when the running one lost its broker."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from market_data.index_feed import FirstConnectedSource, SourceChoice
from tests.engine.conftest import wait_until


class ScriptedSource:
    """An `IndexSource` as the broker streams behave: up and one value on start, a drop followed
    by its own reconnect when told, and back from `run` once `stopping` is set and interrupted."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.runs = 0
        self.interrupts = 0
        self.running = threading.Event()
        self._wake = threading.Event()
        self._drops = 0

    def run(self, on_value: Any, on_state: Any, stopping: threading.Event) -> None:
        self.runs += 1
        on_state(True, f"{self.name} up")
        on_value("SPX", 6850.0, self.runs)
        self.running.set()
        try:
            while not stopping.is_set():
                self._wake.wait()
                self._wake.clear()
                while self._drops:
                    self._drops -= 1
                    on_state(False, f"{self.name} dropped")
                    if not stopping.is_set():
                        on_state(True, f"{self.name} up again")
        finally:
            self.running.clear()

    def interrupt(self) -> None:
        self.interrupts += 1
        self._wake.set()

    def status(self) -> dict[str, Any]:
        return {"broker": self.name, "connected": self.running.is_set()}

    def drop(self) -> None:
        self._drops += 1
        self._wake.set()


class Brokers:
    def __init__(self) -> None:
        self.connected = {"schwab": False, "tastytrade": False}
        self.sources = {name: ScriptedSource(name) for name in self.connected}
        self.choice = FirstConnectedSource([SourceChoice(self.sources[name], lambda name=name: self.connected[name])
                                            for name in ("schwab", "tastytrade")])
        self.states: list[tuple[bool, str]] = []
        self.values: list[tuple[str, float, int]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.choice.run, args=(
            lambda *value: self.values.append(value), lambda *state: self.states.append(state), self.stopping))

    def start(self) -> "Brokers":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.choice.interrupt()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def brokers() -> Iterator[Brokers]:
    built = Brokers()
    yield built
    if built.thread.is_alive():
        built.stop()


def test_the_first_connected_broker_streams(brokers: Brokers) -> None:
    brokers.connected["tastytrade"] = True  # Schwab configured but not logged in
    brokers.start()
    wait_until(brokers.sources["tastytrade"].running.is_set, what="the Tastytrade stream")
    assert brokers.sources["schwab"].runs == 0
    assert brokers.states == [(True, "tastytrade up")] and brokers.values == [("SPX", 6850.0, 1)]
    status = brokers.choice.status()
    assert (status["active"], status["broker"], status["candidates"]) == ("tastytrade", "tastytrade",
                                                                         ["schwab", "tastytrade"])
    assert brokers.choice.name == "schwab+tastytrade"


def test_schwab_comes_first_when_both_are_connected(brokers: Brokers) -> None:
    brokers.connected.update(schwab=True, tastytrade=True)
    brokers.start()
    wait_until(brokers.sources["schwab"].running.is_set, what="the Schwab stream")
    assert brokers.sources["tastytrade"].runs == 0


def test_with_no_broker_connected_the_first_one_keeps_trying(brokers: Brokers) -> None:
    brokers.start()
    wait_until(brokers.sources["schwab"].running.is_set, what="the Schwab stream")
    brokers.sources["schwab"].drop()  # still nobody connected: nothing better to move to
    wait_until(lambda: len(brokers.states) == 3, what="down and up again")
    assert brokers.sources["tastytrade"].runs == 0 and brokers.choice.switches == 0


def test_a_drop_with_the_broker_still_connected_stays_with_that_stream(brokers: Brokers) -> None:
    brokers.connected.update(schwab=True, tastytrade=True)
    brokers.start()
    wait_until(brokers.sources["schwab"].running.is_set, what="the Schwab stream")
    brokers.sources["schwab"].drop()
    wait_until(lambda: len(brokers.states) == 3, what="down and up again")
    assert [state for state, _ in brokers.states] == [True, False, True]
    assert brokers.sources["tastytrade"].runs == 0 and brokers.choice.switches == 0


def test_a_stream_whose_broker_went_away_gives_way_to_the_connected_one(brokers: Brokers) -> None:
    brokers.connected.update(schwab=True, tastytrade=True)
    brokers.start()
    wait_until(brokers.sources["schwab"].running.is_set, what="the Schwab stream")
    brokers.connected["schwab"] = False  # its token expired
    brokers.sources["schwab"].drop()
    wait_until(brokers.sources["tastytrade"].running.is_set, what="the Tastytrade stream")
    wait_until(lambda: not brokers.sources["schwab"].running.is_set(), what="the Schwab stream ended")
    # The feed sees the switch as a drop (a Gap) and a new connection.
    assert brokers.states == [(True, "schwab up"), (False, "schwab dropped"), (True, "tastytrade up")]
    assert brokers.choice.switches == 1 and brokers.choice.status()["active"] == "tastytrade"


def test_stop_interrupts_the_running_stream(brokers: Brokers) -> None:
    brokers.connected["tastytrade"] = True
    brokers.start()
    wait_until(brokers.sources["tastytrade"].running.is_set, what="the Tastytrade stream")
    brokers.stop()
    assert brokers.sources["tastytrade"].interrupts >= 1 and not brokers.sources["tastytrade"].running.is_set()
    assert brokers.choice.status()["active"] is None


def test_stop_before_run_returns_at_once() -> None:
    source = ScriptedSource("schwab")
    choice = FirstConnectedSource([SourceChoice(source, lambda: True)])
    stopping = threading.Event()
    stopping.set()
    choice.run(lambda *a: None, lambda *a: None, stopping)
    assert source.runs == 0
