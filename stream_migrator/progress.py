"""How far along a long command is: a tqdm bar on a terminal, periodic log lines elsewhere.

``reconcile``, ``quarantine replay`` and ``spec check`` report through one
:class:`Progress`. When stderr is a terminal (and the command was not asked for
``--json``) it draws a tqdm bar there; otherwise a bar's carriage returns would
only fill a log file, so it emits a structured ``progress`` log line (structlog,
with ``done``, ``total``, ``percent``, ``rate``, ``eta_s``) at most every
``interval_s`` seconds and a ``progress.done`` line at the end. Totals that come
from ``estimated_document_count`` are flagged ``estimated`` (a ``~`` before the
bar's total): the count is metadata, and the work can end above or below it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, TextIO, cast

from stream_migrator.observability import get_logger

if TYPE_CHECKING:
    from tqdm import tqdm

#: Seconds between two ``progress`` log lines when no terminal shows a bar.
DEFAULT_LOG_INTERVAL_S = 10.0
#: Seconds between two redraws of the bar (tqdm's own default).
DEFAULT_BAR_INTERVAL_S = 0.1


@contextlib.contextmanager
def command_logging(level: str) -> Iterator[None]:
    """structlog configured (``configure_logging``) for one command, then put back.

    ``main()`` also runs inside other processes (tests call it under pytest's
    capture): a process-wide configuration holding that moment's ``sys.stderr``
    would outlive the command and write to a closed file.
    """
    import structlog

    from stream_migrator.observability import configure_logging

    saved = structlog.get_config() if structlog.is_configured() else None
    configure_logging(level)
    try:
        yield
    finally:
        if saved is None:
            structlog.reset_defaults()
        else:
            structlog.configure(**saved)


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    """``--progress-interval S`` on a command that reports progress."""
    parser.add_argument(
        "--progress-interval",
        type=float,
        metavar="S",
        help=f"seconds between progress log lines when stderr is not a terminal (default "
        f"{DEFAULT_LOG_INTERVAL_S:g}) or between redraws of the bar on one "
        f"(default {DEFAULT_BAR_INTERVAL_S:g}); 0 reports every step",
    )


class Progress:
    """Progress of one task; thread-safe (reconcile scans segments in parallel threads).

    Feed it absolute counts (``update(done, total)``, also its ``__call__``, which
    fits reconcile's ``ProgressFn``) or increments (``advance(n)``). A line the
    command prints while the bar is shown goes through :meth:`write`.
    """

    def __init__(
        self,
        task: str,
        total: int | None = None,
        *,
        unit: str = "docs",
        estimated: bool = False,
        json: bool = False,
        interval_s: float | None = None,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        **context: Any,
    ) -> None:
        self.task = task
        self.total = total
        self.unit = unit
        self.estimated = estimated
        self._stream = stream if stream is not None else sys.stderr
        self.is_bar = not json and _isatty(self._stream)
        self._interval = interval_s
        self._clock = clock
        self._context = context
        self._lock = threading.Lock()
        self._bar: tqdm[Any] | None = None
        self._saved_logger_factory: Any = None
        self._closed = False
        self.done = 0
        self._first: tuple[float, int] | None = None  # (when, done) of the first update
        self._last_line = clock()
        self._log = get_logger("progress")

    # -- feeding ------------------------------------------------------------------
    def update(self, done: int, total: int | None = None) -> None:
        """``done`` units of work are finished, of ``total`` (None: keep the last total)."""
        with self._lock:
            if total is not None:
                self.total = total
            self._advance_to(done)

    __call__ = update

    def advance(self, n: int = 1) -> None:
        """``n`` more units are finished."""
        with self._lock:
            self._advance_to(self.done + n)

    def write(self, line: str, file: IO[str] | None = None) -> None:
        """Print ``line`` (to stdout by default) without tearing the bar."""
        out = file if file is not None else sys.stdout
        with self._lock:
            if self._bar is not None:
                self._bar.write(line, file=out)
            else:
                print(line, file=out, flush=True)

    def close(self) -> None:
        """Draw the last state (the bar stays on screen) or log ``progress.done``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._bar is not None:
                self._sync_total(self._bar)
                self._bar.close()
                self._restore_logs()
            elif not self.is_bar:
                self._log.info("progress.done", **self.figures())

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the figures --------------------------------------------------------------
    def figures(self) -> dict[str, Any]:
        """What a log line carries: done, total, percent, rate per second, eta in seconds."""
        now = self._clock()
        since, base = self._first or (now, self.done)
        elapsed = now - since
        rate = (self.done - base) / elapsed if elapsed > 0 else None
        total = self.total
        left = None if total is None else max(0, total - self.done)
        eta = None
        if left == 0:
            eta = 0.0
        elif left is not None and rate:
            eta = round(left / rate, 1)
        return {
            "task": self.task,
            **self._context,
            "done": self.done,
            "total": total,
            "estimated": self.estimated,
            "unit": self.unit,
            "percent": None if not total else round(min(100.0, 100 * self.done / total), 1),
            "rate": None if rate is None else round(rate, 1),
            "eta_s": eta,
            "elapsed_s": round(elapsed, 1),
        }

    # -- inside the lock --------------------------------------------------------
    def _advance_to(self, done: int) -> None:
        if self._closed:
            return
        if self._first is None:
            self._first = (self._clock(), done)
        self.done = done
        if self.is_bar:
            bar = self._bar if self._bar is not None else self._open_bar(done)
            self._sync_total(bar)
            bar.update(done - bar.n)
            return
        interval = DEFAULT_LOG_INTERVAL_S if self._interval is None else self._interval
        now = self._clock()
        if now - self._last_line >= interval:
            self._last_line = now
            self._log.info("progress", **self.figures())

    def _open_bar(self, initial: int) -> tqdm[Any]:
        """The bar, made at the first update so that a resumed task's rate counts from there."""
        from tqdm import tqdm

        tilde = "~" if self.estimated else ""
        interval = DEFAULT_BAR_INTERVAL_S if self._interval is None else self._interval
        self._bar = tqdm(
            total=self.total,
            initial=initial,
            desc=self.task,
            unit=f" {self.unit}",
            file=self._stream,
            mininterval=interval,
            # With every step wanted, tqdm must not learn to skip some (dynamic miniters).
            miniters=1 if interval == 0 else None,
            dynamic_ncols=True,
            bar_format="{l_bar}{bar}| {n_fmt}/"
            + tilde
            + "{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]",
        )
        self._route_logs_above_the_bar()
        return self._bar

    def _route_logs_above_the_bar(self) -> None:
        """While the bar is drawn, log lines go through ``tqdm.write``.

        structlog prints to stderr, the bar's line: a plain print would glue the log
        line to the bar. Only the logger factory changes (structlog.configure keeps
        the rest) and loggers are not cached (observability.logging), so it takes
        effect at once and :meth:`close` puts the previous factory back.
        """
        import structlog

        self._saved_logger_factory = structlog.get_config()["logger_factory"]
        above = cast("TextIO", _AboveTheBar(self._stream))  # write and flush are all it uses
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(above))

    def _restore_logs(self) -> None:
        import structlog

        if self._saved_logger_factory is not None:
            structlog.configure(logger_factory=self._saved_logger_factory)
            self._saved_logger_factory = None

    def _sync_total(self, bar: tqdm[Any]) -> None:
        # An estimated total can be passed; a bar beyond 100% would only confuse.
        total = self.total if self.total is None else max(self.total, self.done)
        if bar.total != total:
            bar.total = total
            bar.refresh()


class _AboveTheBar:
    """A file whose lines are printed above any tqdm bar drawn on ``stream``.

    ``print`` writes the message and its newline in two calls: whole lines are kept
    until their newline arrives.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._pending = ""

    def write(self, text: str) -> int:
        from tqdm import tqdm

        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            tqdm.write(line, file=self._stream)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-less stream
        return False
