"""Both transform workers, forward and reverse, purge their sink's expired delete tombstones."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import pytest
from bson import ObjectId
from pymongo.collection import Collection

from stream_migrator.app import run_reverse_transform, run_transform
from stream_migrator.runtime import StopFlag
from stream_migrator.settings import Settings, load_settings
from stream_migrator.transform.sink import TOMBSTONE_SUFFIX
from tests.integration.helpers import StageThread, client_for

pytestmark = pytest.mark.integration

_RETENTION_S = 30 * 86400  # the default; longer than the broker's default topic retention


def _tombstones(s: Settings, ns: str) -> Collection[dict[str, Any]]:
    db, coll = s.split_ns(ns)
    return client_for(s)[db][f"{coll}.{TOMBSTONE_SUFFIX}"]


def _purges(
    s: Settings, run: Callable[[Settings, StopFlag], Any], written_ns: str, timeout: float = 60
) -> None:
    """Run ``run`` until the expired tombstone beside ``written_ns`` is gone; the fresh stays."""
    tombstones = _tombstones(s, written_ns)
    now = dt.datetime.now(dt.UTC)
    expired, fresh = ObjectId(), ObjectId()
    tombstones.insert_many(
        [
            {"_id": expired, "v": 1, "at": now - dt.timedelta(seconds=_RETENTION_S + 86400)},
            {"_id": fresh, "v": 1, "at": now - dt.timedelta(days=1)},
        ]
    )
    worker = StageThread(run, s)
    worker.start()
    try:
        deadline = time.monotonic() + timeout
        while tombstones.find_one({"_id": expired}) is not None:
            if worker.error is not None:
                raise worker.error
            assert time.monotonic() < deadline, (
                f"{run.__name__} did not purge the expired tombstone in {tombstones.full_name} "
                f"within {timeout} s"
            )
            time.sleep(0.2)
    finally:
        worker.stop()
    assert tombstones.find_one({"_id": fresh}) is not None  # inside the window: kept
    tombstones.database.client.close()


def test_forward_worker_purges_expired_tombstones(settings_kwargs: dict[str, Any]) -> None:
    """The forward worker's housekeeping deletes target tombstones older than the retention."""
    s = load_settings(**{**settings_kwargs, "tombstone_retention_s": _RETENTION_S})
    _purges(s, run_transform, s.target)


def test_reverse_worker_purges_expired_tombstones(settings_kwargs: dict[str, Any]) -> None:
    """The reverse worker purges the old collection's tombstones too (it had no housekeeping)."""
    s = load_settings(**{**settings_kwargs, "tombstone_retention_s": _RETENTION_S})
    _purges(s, run_reverse_transform, s.source)
