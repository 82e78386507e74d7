"""Snapshot throttling: a fixed rate ceiling, and gh-ost style back-off on transform lag."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from stream_migrator.observability import get_logger
from stream_migrator.runtime import StopFlag

log = get_logger("capture")


class _Reading(NamedTuple):
    lag: int | None  # events; None = Kafka did not say
    admitted: int  # documents admitted when the probe started
    serial: int  # requests for a fresh reading made before the probe started


_NONE_YET = _Reading(None, 0, -1)


class SnapshotThrottle:
    """Call :meth:`admit` per document; it sleeps as needed.

    ``max_per_second`` caps the copy rate (0 = no cap). The ``lag_probe`` (transform lag
    in events, a broker round trip) runs on a thread of its own every ``check_every_s``:
    ``admit`` never waits for Kafka while the lag is safely below ``max_lag``. Safely: the
    last reading plus every document admitted since its probe started, an upper bound
    (each may still be unconsumed), so a fast copy cannot outrun the fence between two
    readings. At the bound ``admit`` asks for a fresh reading and waits for it; while the
    lag itself exceeds ``max_lag`` the snapshot waits, so a backlog never grows without
    bound and the target is not flooded. ``on_wait`` hears why (for progress output).

    The thread starts with the first ``admit``; :meth:`close` ends it (a later ``admit``
    starts another).
    """

    def __init__(
        self,
        stop: StopFlag,
        max_per_second: float = 0.0,
        lag_probe: Callable[[], int | None] | None = None,
        max_lag: int = 0,
        check_every_s: float = 1.0,
        on_wait: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stop = stop
        self._rate = max_per_second
        self._probe = lag_probe
        self._max_lag = max_lag
        self._every = check_every_s
        self._on_wait = on_wait or (lambda _reason: None)
        self._clock = clock
        self._started = clock()
        self._admitted = 0
        self.waited_s = 0.0
        self._cond = threading.Condition()
        self._reading = _NONE_YET
        self._asked = 0
        self._watcher: threading.Thread | None = None
        self._closing = threading.Event()

    def admit(self) -> None:
        """Wait until one more document may be copied (safe to call from several threads)."""
        with self._cond:
            self._admitted += 1
            admitted = self._admitted
            if self._probe is not None and self._max_lag > 0 and self._watcher is None:
                self._start_watcher()
            reading = self._reading
        if self._rate > 0:
            due = self._started + admitted / self._rate
            delay = due - self._clock()
            if delay > 0:
                self._sleep(delay)
        fenced = self._probe is not None and self._max_lag > 0
        if fenced and not self._below_fence(reading, admitted):
            self._wait_for_lag()

    def close(self) -> None:
        """Stop the probing thread (the snapshot is over, or stopped)."""
        watcher, self._watcher = self._watcher, None
        if watcher is None:
            return
        with self._cond:
            self._closing.set()
            self._cond.notify_all()
        # A probe under way ends on its own (its thread is a daemon): the tail need not
        # wait out a slow broker answer that nothing will read.
        watcher.join(timeout=1.0)
        self._closing = threading.Event()
        self._reading = _NONE_YET

    # -- internals --------------------------------------------------------------
    def _below_fence(self, reading: _Reading, admitted: int) -> bool:
        if reading.serial < 0:
            return False  # no reading yet
        if reading.lag is None:
            return True  # unknown: do not stop the copy on a Kafka hiccup
        return reading.lag + (admitted - reading.admitted) <= self._max_lag

    def _wait_for_lag(self) -> None:
        reading = self._fresh_reading()
        announced = False
        while reading.lag is not None and reading.lag > self._max_lag and not self._stop.is_set():
            if not announced:
                self._on_wait(
                    f"transform lag {reading.lag} events > {self._max_lag}; snapshot paused"
                )
                announced = True
            self._sleep(self._every)
            reading = self._fresh_reading()
        if announced:
            self._on_wait(f"transform lag {reading.lag} events; snapshot resumed")
            # Do not try to "catch up" the fixed rate after a pause.
            self._started = self._clock() - self._admitted / self._rate if self._rate else 0.0

    def _fresh_reading(self) -> _Reading:
        """A reading whose probe started after this call (waits for it, unless stopped)."""
        with self._cond:
            self._asked += 1
            wanted = self._asked
            self._cond.notify_all()
            while self._reading.serial < wanted and not self._stop.is_set():
                self._cond.wait(0.5)
            return self._reading

    def _start_watcher(self) -> None:
        self._watcher = threading.Thread(
            target=self._watch, args=(self._closing,), name="snapshot-lag", daemon=True
        )
        self._watcher.start()

    def _watch(self, closing: threading.Event) -> None:
        assert self._probe is not None
        while not closing.is_set() and not self._stop.is_set():
            with self._cond:
                serial, admitted = self._asked, self._admitted
            try:
                lag = self._probe()
            except Exception as exc:  # noqa: BLE001 - a failed probe is an unknown lag
                log.warning("snapshot.lag_probe_failed", error=str(exc))
                lag = None
            with self._cond:
                self._reading = _Reading(lag, admitted, serial)
                self._cond.notify_all()
                # Until the next period, or until admit asks for a fresh reading.
                if self._asked == serial and not closing.is_set():
                    self._cond.wait(self._every)

    def _sleep(self, seconds: float) -> None:
        with self._cond:
            self.waited_s += seconds
        self._stop.wait(seconds)
