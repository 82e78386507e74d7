"""An idle tail pauses briefly after an empty answer that came at once, never longer.

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


def test_idle_tail_pause_stays_short_whatever_the_idle_spell(
    settings_kwargs: dict[str, Any],
) -> None:
    """Every pause is 50 ms, however many empty answers came before: an event the server
    holds is read at most one short pause later.

    MongoDB's awaitData getMore returns as soon as an event arrives, so it adds no
    latency; the pause exists only for a server that answers at once. A pause that grew
    while the stream looked idle (doubling to 0.5 s) made the first event after any
    short gap wait for it: at 1,000 writes/s on the stand-in, source write -> in Kafka
    was 434 ms at p99 with it, 57 ms without (side_by_side's latency phase).
    """
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
    assert stop.pauses[:7] == [0.05] * 7
    assert stop.pauses[7:10] == [0.05] * 3
    assert capture.captured == 1
