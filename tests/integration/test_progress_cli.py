"""Progress of long commands, run as a user runs them: a bar on a terminal, log lines elsewhere.

The commands are the real console entry point against the shared servers. The
terminal is a pseudo-terminal (the ``pty`` module) sized like a real one; every
step is drawn or logged (``--progress-interval 0``), so nothing here depends on
how fast the run is.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from typing import Any

import pytest
from bson import Timestamp
from bson.int64 import Int64

from stream_migrator.demo.data import v1_order
from stream_migrator.events import version_of
from stream_migrator.reconcile import ReconcileSettings, load_reconcile_settings
from stream_migrator.spec import get_spec
from tests.integration.helpers import REPO, client_for, settings_env

pytestmark = pytest.mark.integration

#: A bar's percentage as tqdm draws it: `reconcile m:  45%|████▌     | 900/~2000 ...`.
_PERCENT = re.compile(r"(\d+)%\|")


def _settings(settings_kwargs: dict[str, Any]) -> ReconcileSettings:
    return load_reconcile_settings(
        None, **settings_kwargs, reconcile_recheck_timeout_s=5, reconcile_settle_s=0.2
    )


def _seed_both_sides(s: ReconcileSettings, n: int) -> None:
    """Source orders and their correct target documents, written directly (no pipeline)."""
    import random

    rng = random.Random(14)
    client = client_for(s)
    sdb, scoll = s.split_ns(s.source)
    tdb, tcoll = s.split_ns(s.target)
    docs = [v1_order(rng, i) for i in range(n)]
    client[sdb][scoll].insert_many(docs)
    spec = get_spec(s.spec)
    applied = Int64(version_of(Timestamp(int(time.time()) + 5, 0)))
    client[tdb][tcoll].insert_many([{**spec.transform(d), "_sm": {"v": applied}} for d in docs])
    client.close()


def _run_in_terminal(
    args: list[str],
    env: dict[str, str],
    timeout: float = 120,
    *,
    until: Callable[[str], bool] | None = None,
) -> str:
    """Run the CLI with stdin, stdout and stderr on a 120x30 pseudo-terminal; all it showed.

    ``until``: for a long-running process, SIGTERM it once what it showed satisfies this.
    """
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream_migrator", *args],
        cwd=REPO,
        env={**os.environ, **env, "TERM": "xterm", "COLUMNS": "120"},
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            assert time.monotonic() < deadline, b"".join(chunks).decode(errors="replace")
            try:
                chunk = os.read(master, 65536)
            except OSError as exc:  # EIO: the child closed its end of the terminal
                if exc.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            chunks.append(chunk)
            shown = b"".join(chunks).decode(errors="replace")
            if until is not None and proc.poll() is None and until(shown):
                proc.send_signal(signal.SIGTERM)
                until = None
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)
    return b"".join(chunks).decode(errors="replace")


def _progress_lines(stderr: str) -> list[dict[str, Any]]:
    lines = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if str(record.get("event", "")).startswith("progress"):
                lines.append(record)
    return lines


def test_reconcile_on_a_terminal_draws_an_advancing_bar(settings_kwargs: dict[str, Any]) -> None:
    """Under a pseudo-terminal, reconcile's bar shows more than one percentage, rising."""
    s = _settings(settings_kwargs)
    _seed_both_sides(s, 600)
    shown = _run_in_terminal(
        ["reconcile", s.migration, "--bucket-size", "50", "--progress-interval", "0"],
        settings_env(s),
    )
    percents = [int(p) for p in _PERCENT.findall(shown)]
    assert len(set(percents)) >= 2, shown
    assert percents == sorted(percents), percents
    assert any(0 < p < 100 for p in percents), percents
    assert percents[-1] == 100, shown
    assert f"reconcile {s.migration}" in shown
    assert "/~1.2k" in shown or "/~1200" in shown, shown  # the total is an estimate
    assert "source documents      600" in shown  # the report follows the bar


def test_reconcile_without_a_terminal_logs_progress_lines(
    settings_kwargs: dict[str, Any],
) -> None:
    """With stderr a pipe (and --json), progress is JSON log lines with done/total/rate/eta."""
    s = _settings(settings_kwargs)
    _seed_both_sides(s, 300)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream_migrator",
            "reconcile",
            s.migration,
            "--json",
            "--bucket-size",
            "50",
            "--progress-interval",
            "0",
        ],
        cwd=REPO,
        env={**os.environ, **settings_env(s)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert json.loads(done.stdout)["source_count"] == 300, done.stderr  # stdout stays the report
    assert "%|" not in done.stderr  # no bar in a log
    assert "\r" not in done.stderr
    lines = _progress_lines(done.stderr)
    periodic = [r for r in lines if r["event"] == "progress"]
    assert len({r["done"] for r in periodic}) >= 2, done.stderr
    assert [r["done"] for r in periodic] == sorted(r["done"] for r in periodic)
    for record in lines:
        assert record["task"] == f"reconcile {s.migration}"
        assert record["total"] == 600
        assert record["estimated"] is True
        assert {"rate", "eta_s", "percent", "elapsed_s"} <= record.keys()
    assert any(r["rate"] is not None and r["eta_s"] is not None for r in periodic)
    final = lines[-1]
    assert final["event"] == "progress.done"
    assert final["done"] == 600
    assert final["percent"] == 100.0


def test_spec_check_sample_on_a_terminal_draws_an_advancing_bar(
    mongo_uri: str, unique: str
) -> None:
    """`spec check --mongo-uri --sample` on a terminal: a bar over the sampled documents."""
    import random

    ns = f"db_{unique}.orders"
    rng = random.Random(3)
    client = client_for(load_reconcile_settings(None, mongo_uri=mongo_uri))
    client[f"db_{unique}"]["orders"].insert_many([v1_order(rng, i) for i in range(40)])
    client.close()
    shown = _run_in_terminal(
        [
            "spec",
            "check",
            "orders.v1_to_v2",
            "--mongo-uri",
            mongo_uri,
            "--source",
            ns,
            "--sample",
            "40",
            "--progress-interval",
            "0",
        ],
        {},
    )
    percents = [int(p) for p in _PERCENT.findall(shown)]
    assert len(set(percents)) >= 2, shown
    assert percents == sorted(percents), percents
    assert "40/40" in shown  # an exact total: no ~
    assert "RESULT OK" in shown


def test_capture_snapshot_on_a_terminal_draws_an_advancing_bar(
    settings_kwargs: dict[str, Any],
) -> None:
    """capture's snapshot under a pseudo-terminal: a bar over the estimated count, rising."""
    import random

    s = _settings(settings_kwargs)
    rng = random.Random(3)
    client = client_for(s)
    db, coll = s.split_ns(s.source)
    client[db][coll].insert_many([v1_order(rng, i) for i in range(1500)])
    client.close()
    env = {**settings_env(s), "SM_MAX_DOCS_PER_SECOND": "600", "SM_METRICS_PORT": "0"}

    def finished(shown: str) -> bool:
        return "100%|" in shown or "snapshot.done" in shown

    shown = _run_in_terminal(["capture"], env, until=finished)
    percents = [int(p) for p in _PERCENT.findall(shown)]
    assert len(set(percents)) >= 2, shown
    assert percents == sorted(percents), percents
    assert any(0 < p < 100 for p in percents), percents
    assert "snapshot: " in shown, shown
    assert "/~1500" in shown or "/~1.5k" in shown, shown  # the total is an estimate
