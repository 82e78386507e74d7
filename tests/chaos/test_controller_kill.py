"""The rollout controller SIGKILLed inside a transition: state consistent, audit complete.

A transition is two writes, the state's compare-and-set and the audit entry. The
kill lands exactly between them through the ``SM_FAILPOINT=rollout.after_swap``
hook (no timing could hit that window reliably), in a real `stream-migrator
rollout` process against the real servers.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from stream_migrator.rollout import audit
from stream_migrator.rollout.state import Stage, StateStore
from stream_migrator.settings import Settings, load_settings
from tests.integration.helpers import client_for, settings_env
from tests.integration.processes import Proc
from tests.integration.rollout_plans import plan_file

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def _rollout(s: Settings, tmp_path: Path, *args: str, failpoint: str | None = None) -> int:
    env = {**settings_env(s), "SM_OPERATOR": "chaos"}
    if failpoint:
        env["SM_FAILPOINT"] = failpoint
    log = tmp_path / f"rollout-{args[0]}-{len(list(tmp_path.iterdir()))}.log"
    proc = Proc(["rollout", *args], env, log)
    rc = proc.popen.wait(60)
    return rc


def test_controller_sigkilled_between_state_and_audit_is_audited_once_and_resumes(
    settings_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    """Killed after the state write: the next command appends the missing audit entry, once."""
    s = load_settings(**settings_kwargs)
    plan = str(plan_file(tmp_path, s))
    client = client_for(s)
    try:
        assert _rollout(s, tmp_path, "status", plan) == 0  # creates the state: "init"

        rc = _rollout(s, tmp_path, "advance", plan, failpoint="rollout.after_swap")
        assert rc == -signal.SIGKILL, "the failpoint did not kill the controller"
        state = StateStore(client, s.metadata_db).get(s.migration)
        assert state.stage == Stage.SHADOW  # the state write landed ...
        assert [e["action"] for e in audit.entries(client, s.metadata_db, s.migration)] == [
            "init"
        ]  # ... and the audit entry did not: the window is real

        assert _rollout(s, tmp_path, "halt", plan, "--reason", "after the kill") == 0
        rc = _rollout(s, tmp_path, "resume", plan, failpoint="rollout.after_swap")
        assert rc == -signal.SIGKILL
        assert _rollout(s, tmp_path, "status", plan) == 0
        assert _rollout(s, tmp_path, "status", plan) == 0  # settling twice adds nothing

        state = StateStore(client, s.metadata_db).get(s.migration)
        assert state.stage == Stage.SHADOW
        assert not state.halted
        trail = audit.entries(client, s.metadata_db, s.migration)
        assert [e["action"] for e in trail] == ["init", "advance", "halt", "resume"]
        advance = trail[1]
        assert (advance["from"], advance["to"], advance["operator"]) == (
            "planned",
            "shadow",
            "chaos",
        )
        # One entry per state version: the transition that produced each is named by it.
        v = state.version
        assert [e["_id"] for e in trail[1:]] == [f"{s.migration}@{n}" for n in (v - 2, v - 1, v)]
    finally:
        client.close()
