"""/progress: the status document, read at most once per interval (pure logic, stub reader)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stream_migrator.status import progress_page


class _Reader:
    reads = 0

    def __init__(self, settings: Any, **_kw: Any) -> None:
        self.name = settings

    def read(self) -> dict[str, Any]:
        _Reader.reads += 1
        return {"migration": self.name, "read": _Reader.reads}

    def close(self) -> None:
        pass


def test_progress_page_caches_and_keys_by_migration(monkeypatch: pytest.MonkeyPatch) -> None:
    """One read per interval; a list of settings gives one document keyed by migration."""
    monkeypatch.setattr(progress_page, "StatusReader", _Reader)
    _Reader.reads = 0
    page = progress_page.ProgressPage(["a", "b"], min_interval_s=3600)  # type: ignore[list-item]
    code, kind, body = page({})
    assert (code, kind) == ("200 OK", "application/json")
    assert json.loads(body) == {
        "a": {"migration": "a", "read": 1},
        "b": {"migration": "b", "read": 2},
    }
    assert page({})[2] == body  # cached: no second read within the interval
    assert _Reader.reads == 2
    single = progress_page.ProgressPage("c", min_interval_s=0)  # type: ignore[arg-type]
    assert json.loads(single({})[2])["migration"] == "c"
    assert json.loads(single({})[2])["read"] == 4  # interval 0: read every time
