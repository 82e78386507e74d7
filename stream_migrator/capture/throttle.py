"""Snapshot throttling: a fixed rate ceiling, and gh-ost style back-off on transform lag."""

from __future__ import annotations

import time
from collections.abc import Callable

from stream_migrator.runtime import StopFlag


class SnapshotThrottle:
    """Call :meth:`admit` per document; it sleeps as needed.

    ``max_per_second`` caps the copy rate (0 = no cap). Every ``check_every_s`` (or
    ``check_every_docs`` documents, whichever comes first) the
    ``lag_probe`` is asked for the transform lag in events; while it exceeds
    ``max_lag`` the snapshot waits, so a backlog never grows without bound and the
    target is not flooded. ``on_wait`` hears why (for progress output).
    """

    def __init__(
        self,
        stop: StopFlag,
        max_per_second: float = 0.0,
        lag_probe: Callable[[], int | None] | None = None,
        max_lag: int = 0,
        check_every_s: float = 1.0,
        check_every_docs: int = 1000,
        on_wait: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stop = stop
        self._rate = max_per_second
        self._probe = lag_probe
        self._max_lag = max_lag
        self._every = check_every_s
        self._every_docs = check_every_docs
        self._on_wait = on_wait or (lambda _reason: None)
        self._clock = clock
        self._started = clock()
        self._admitted = 0
        self._last_check = clock()
        self.waited_s = 0.0

    def admit(self) -> None:
        self._admitted += 1
        if self._rate > 0:
            due = self._started + self._admitted / self._rate
            delay = due - self._clock()
            if delay > 0:
                self._sleep(delay)
        if self._probe is not None and self._max_lag > 0:
            now = self._clock()
            # By time or by count: a fast copy must not outrun a whole check interval.
            if now - self._last_check >= self._every or self._admitted % self._every_docs == 0:
                self._last_check = now
                self._wait_for_lag()

    def _wait_for_lag(self) -> None:
        assert self._probe is not None
        lag = self._probe()
        announced = False
        while lag is not None and lag > self._max_lag and not self._stop.is_set():
            if not announced:
                self._on_wait(f"transform lag {lag} events > {self._max_lag}; snapshot paused")
                announced = True
            self._sleep(self._every)
            lag = self._probe()
        if announced:
            self._on_wait(f"transform lag {lag} events; snapshot resumed")
            # Do not try to "catch up" the fixed rate after a pause.
            self._started = self._clock() - self._admitted / self._rate if self._rate else 0.0

    def _sleep(self, seconds: float) -> None:
        self.waited_s += seconds
        self._stop.wait(seconds)
