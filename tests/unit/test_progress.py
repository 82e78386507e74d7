"""stream_migrator.progress: when a bar is drawn, when log lines are, and what they carry."""

from __future__ import annotations

import io
import json

import structlog
from structlog.testing import capture_logs

from stream_migrator.progress import Progress, command_logging


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_without_a_terminal_a_line_is_logged_at_most_once_per_interval() -> None:
    """Log mode: one `progress` line per interval_s (clock-driven), `progress.done` at close."""
    clock = _Clock()
    with capture_logs() as logs:
        p = Progress("job", 100, interval_s=10, stream=io.StringIO(), clock=clock)
        for t, done in [(1, 5), (5, 10), (11, 20), (15, 30), (22, 40)]:
            clock.now = t
            p.update(done)
        p.close()
        p.close()  # twice is once
    assert not p.is_bar
    assert [(r["event"], r["done"]) for r in logs] == [
        ("progress", 20),
        ("progress", 40),
        ("progress.done", 40),
    ]


def test_figures_count_rate_from_the_first_update_and_give_an_eta() -> None:
    """A resumed task (first update at 100) gets its rate from that point: 20/s, 40 s left."""
    clock = _Clock()
    p = Progress("job", 1100, estimated=True, stream=io.StringIO(), clock=clock, migration="m")
    p.update(100)
    clock.now = 10
    p.update(300)
    figures = p.figures()
    assert figures == {
        "task": "job",
        "migration": "m",
        "done": 300,
        "total": 1100,
        "estimated": True,
        "unit": "docs",
        "percent": 27.3,
        "rate": 20.0,
        "eta_s": 40.0,
        "elapsed_s": 10.0,
    }


def test_unknown_total_has_no_percent_or_eta() -> None:
    """advance() without a total: done and rate only."""
    clock = _Clock()
    p = Progress("job", stream=io.StringIO(), clock=clock)
    p.advance()
    clock.now = 2
    p.advance(3)
    assert (p.figures()["done"], p.figures()["percent"], p.figures()["eta_s"]) == (4, None, None)
    assert p.figures()["rate"] == 1.5


def test_on_a_terminal_the_bar_advances_and_marks_an_estimated_total() -> None:
    """Bar mode draws every step with interval 0; an estimated total reads ~N."""
    screen = _Terminal()
    with Progress("reconcile m", estimated=True, interval_s=0, stream=screen) as p:
        assert p.is_bar
        for done in (0, 250, 500, 1000):
            p.update(done, 1000)
    shown = screen.getvalue()
    assert " 25%|" in shown
    assert " 50%|" in shown
    assert "100%|" in shown
    assert "1000/~1000" in shown


def test_json_or_a_pipe_never_draws_a_bar() -> None:
    """--json on a terminal, or stderr that is no terminal, means log lines."""
    assert not Progress("job", json=True, stream=_Terminal()).is_bar
    assert not Progress("job", stream=io.StringIO()).is_bar


def test_a_total_that_was_an_underestimate_does_not_go_past_100_percent() -> None:
    """An estimated total below the work done grows to it: 12/~12, never 120%."""
    screen = _Terminal()
    with Progress("job", 10, estimated=True, interval_s=0, stream=screen) as p:
        p.update(12)
        assert p.figures()["percent"] == 100.0
        assert p.figures()["eta_s"] == 0.0
    assert "12/~12" in screen.getvalue()
    assert "120%" not in screen.getvalue()


def test_log_lines_while_the_bar_is_drawn_go_above_it_and_the_logger_comes_back() -> None:
    """A structlog line during the bar is a line of its own; after close the old factory is back."""
    screen = _Terminal()
    out = io.StringIO()
    with command_logging("info"):
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(out))
        before = structlog.get_config()["logger_factory"]
        with Progress("job", 10, interval_s=0, stream=screen) as p:
            p.update(5)
            structlog.get_logger().info("in.between")
            p.write("a result line", file=screen)
            p.update(10)
        assert structlog.get_config()["logger_factory"] is before
    shown = screen.getvalue()
    assert "\n" in shown
    logged = next(line for line in shown.splitlines() if "in.between" in line)
    assert json.loads(logged.rsplit("\r", 1)[-1])["event"] == "in.between"
    assert any(line.rsplit("\r", 1)[-1] == "a result line" for line in shown.splitlines())
    assert out.getvalue() == ""


def test_command_logging_puts_the_previous_configuration_back() -> None:
    """A command's logging setup does not outlive it (main() runs inside tests too)."""
    out = io.StringIO()
    outer = structlog.get_config() if structlog.is_configured() else None
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(out))
    saved = structlog.get_config()
    try:
        with command_logging("warning"):
            assert structlog.get_config()["logger_factory"] is not saved["logger_factory"]
        assert structlog.get_config() == saved
    finally:
        structlog.reset_defaults()
        if outer is not None:
            structlog.configure(**outer)
