"""An idle tail backs off: empty answers that come at once space out, an event resets the pause.

mongo-java-server answers an empty getMore at once (it ignores maxAwaitTimeMS) at a
cost that grows with its oplog, so the stream is scripted here to answer the same way
on demand (an idle answer of the scripted stream is one); the producer and the
checkpoint collection are real.
"""

from __future__ import annotations

from typing import Any

import pytest
from bson import ObjectId, Timestamp

from stream_migrator.capture import Capture, MongoCheckpointStore
from stream_migrator.kafka import AckedProducer, ensure_topic, producer_config
from stream_migrator.runtime import StopFlag
from stream_migrator.settings import load_settings
from tests.integration.helpers import client_for
from tests.integration.test_capture_transactions import ScriptedStream

pytestmark = pytest.mark.integration


class _RecordingStop(StopFlag):
    """Records each pause the tailer asks for, without sleeping it."""

    def __init__(self) -> None:
        super().__init__()
        self.pauses: list[float] = []

    def wait(self, timeout: float) -> bool:
        self.pauses.append(timeout)
        return self.is_set()


def test_idle_tail_pauses_grow_and_reset_on_an_event(settings_kwargs: dict[str, Any]) -> None:
    """Consecutive empty answers double the pause up to 0.5 s; an event brings it back."""
    s = load_settings(**settings_kwargs)
    ensure_topic(s.kafka_bootstrap, s.changes_topic, s.partitions)
    client = client_for(s)
    producer = AckedProducer(producer_config(s.kafka_bootstrap, "test-capture-idle"))
    stop = _RecordingStop()
    doc_id = ObjectId()
    change = {
        "_id": {"_data": "8201"},
        "operationType": "insert",
        "clusterTime": Timestamp(1_800_000_000, 1),
        "documentKey": {"_id": doc_id},
        "fullDocument": {"_id": doc_id, "total": 1},
    }
    idle = ("idle", {"_data": "8202"})
    script: list[Any] = [idle] * 7 + [change] + [idle] * 3
    try:
        capture = Capture(
            s, client, producer, MongoCheckpointStore(client, s.metadata_db, s.migration), stop
        )
        capture._follow(ScriptedStream(script, stop), None)  # type: ignore[arg-type]
    finally:
        producer.close()
        client.close()
    assert stop.pauses[:7] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5, 0.5]
    assert stop.pauses[7:9] == [0.05, 0.1]
    assert capture.captured == 1
