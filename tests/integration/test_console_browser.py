"""The rollout console in a real browser: headless chromium renders `rollout run`'s `/`."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
from bson import ObjectId

from stream_migrator.infra import free_port
from stream_migrator.settings import Settings
from stream_migrator.transform.quarantine import read_quarantine
from tests.integration.helpers import cli, client_for, settings_env
from tests.integration.processes import Proc, health, http_get, metric, wait_for
from tests.integration.rollout_plans import plan_file

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium")


class _Fields(HTMLParser):
    """The console's rendered figures: ``data-field`` text inside each ``data-migration``."""

    def __init__(self) -> None:
        super().__init__()
        self.body_state: str | None = None
        self.fields: dict[str, dict[str, str]] = {}
        self.lists: dict[str, dict[str, list[dict[str, str]]]] = {}
        self._migration: str | None = None
        self._open: list[tuple[str, str | None]] = []  # (tag, data-field) of open elements
        self._text: dict[str, list[str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body":
            self.body_state = a.get("data-state")
        if a.get("data-migration"):
            self._migration = a["data-migration"]
            self.fields.setdefault(self._migration, {})
            self.lists.setdefault(self._migration, {})
        name = a.get("data-field")
        if self._migration is not None:
            for kind in ("data-fence", "data-to"):
                if a.get(kind) is not None:
                    row = {k: v or "" for k, v in a.items()}
                    self.lists[self._migration].setdefault(kind, []).append(row)
            if name and name.endswith("_sparkline"):
                self.fields[self._migration][name] = a.get("data-points") or ""
        if tag not in {"br", "img", "meta", "link", "input"}:
            self._open.append((tag, name))
            if name:
                self._text[name] = []

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            open_tag, name = self._open.pop()
            if name and self._migration is not None and not name.endswith("_sparkline"):
                self.fields[self._migration][name] = "".join(self._text.pop(name, [])).strip()
            if open_tag == tag:
                break
        if tag == "section":
            self._migration = None

    def handle_data(self, data: str) -> None:
        for _, name in self._open:
            if name:
                self._text.setdefault(name, []).append(data)


def _settled(port: int, migration: str) -> bool:
    code, body = http_get(port, "/progress")
    if code != 200:
        return False
    doc = json.loads(body)[migration]
    return bool(doc["quarantine"].get("count") == 1 and doc["transform"].get("lag_events") == 0)


def _render(url: str) -> str:
    assert CHROMIUM, "chromium is not installed (`make ops-tools` installs it)"
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_console_in_chromium_shows_what_status_json_reports(
    forward_migrated: Settings, tmp_path: Path, procs: list[Proc]
) -> None:
    """Chromium renders `/`: stage, lag, quarantine count and can_cutover equal `status --json`."""
    s = forward_migrated
    m = s.migration
    port = free_port()
    plan = plan_file(tmp_path, s, advance_every=0.5)
    env = {**settings_env(s), "SM_METRICS_PORT": str(port), "SM_OPERATOR": "ctl"}
    run = Proc(["rollout", "run", str(plan)], env, tmp_path / "run.log")
    procs.append(run)
    wait_for("/healthz to answer 200", lambda: health(port)[0] == 200, proc=run)
    # planned -> shadow -> verify; the step into canary waits for a reverse stream.
    wait_for(
        "the controller to reach verify",
        lambda: metric(port, "sm_rollout_stage", migration=m) == 2,
        proc=run,
    )
    # A malformed order now (before verify the gate would hold the schedule on it):
    # quarantined, it blocks the cutover, and the controller stays in verify.
    client = client_for(s)
    db, coll = s.split_ns(s.source)
    client[db][coll].insert_one({"_id": ObjectId(), "cust_name": "b", "address": "nowhere"})
    client.close()
    wait_for(
        "the quarantined order",
        lambda: bool(read_quarantine(s.kafka_bootstrap, s.quarantine_topic)),
        proc=run,
    )
    # The worker commits the bad order's offset after quarantining it: wait until the
    # served status document has settled (nothing changes after), then compare.
    wait_for("the status document to settle", lambda: _settled(port, m), proc=run)
    code, page = http_get(port, "/")
    assert code == 200, page
    assert 'data-state="loading"' in page  # the script renders; the served page is the shell
    assert "<form" not in page  # read-only: nothing to submit
    # Read-only: a POST is refused (stage changes go through the audited CLI).
    request = urllib.request.Request(f"http://127.0.0.1:{port}/console.json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)  # noqa: S310 - loopback test server
    assert refused.value.code == 405

    dom = _render(f"http://127.0.0.1:{port}/")
    shown = json.loads(cli("status", "--json", env=settings_env(s)).stdout)
    parsed = _Fields()
    parsed.feed(dom)
    assert parsed.body_state == "ready", dom[-3000:]
    f = parsed.fields[m]
    assert f["stage"] == shown["rollout"]["stage"] == "verify"
    assert f["read_path"] == shown["rollout"]["read_path"]
    assert f["halted"] == "false"
    assert f["lag_events"] == str(shown["transform"]["lag_events"]) == "0"
    assert f["quarantine_count"] == str(shown["quarantine"]["count"]) == "1"
    assert f["can_cutover"] == str(shown["can_cutover"]).lower() == "false"
    assert any("in quarantine" in b for b in shown["cutover_blockers"])
    assert "in quarantine" in f["cutover_blockers"]
    assert int(f["lag_events_sparkline"]) >= 1  # at least one evaluation drawn
    timeline = [row["data-to"] for row in parsed.lists[m]["data-to"]]
    assert timeline[:3] == ["planned", "shadow", "verify"], timeline
    fences = {row["data-fence"]: row["data-state"] for row in parsed.lists[m]["data-fence"]}
    assert fences == {
        "lag_events": "ok",
        "error_rate": "ok",
        "divergence_ratio": "ok",
    }, fences
    assert run.terminate() == 0, run.text()[-4000:]
