"""How the worker takes a batch from its consumer (scripted consumer, pure logic)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stream_migrator.interfaces import ApplyResult, TargetWrite
from stream_migrator.runtime import StopFlag
from stream_migrator.spec import get_spec
from stream_migrator.transform import TransformWorker
from tests.unit.test_worker_backpressure import _TOPIC, _Consumer, _Msg, _Quarantine


class _Buffered(_Consumer):
    """consume() hands out what is buffered at once, as librdkafka does; records each call."""

    def __init__(self, buffered: list[_Msg]) -> None:
        super().__init__(owned=[0])
        self.buffered = buffered
        self.calls: list[tuple[int, float]] = []

    def subscribe(self, _topics: list[str], **_callbacks: Any) -> None:
        pass

    def consume(self, n: int, timeout: float) -> list[_Msg]:
        self.calls.append((n, timeout))
        out, self.buffered = self.buffered[:n], self.buffered[n:]
        return out

    def close(self) -> None:
        pass


class _StopAfterOneBatch:
    def __init__(self, stop: StopFlag) -> None:
        self.stop = stop
        self.batches: list[int] = []

    def apply(self, writes: Sequence[TargetWrite]) -> ApplyResult:
        self.batches.append(len(writes))
        self.stop.set("test")
        return ApplyResult(written=len(writes))


def test_a_partial_batch_is_processed_without_waiting_to_fill() -> None:
    """Three buffered events with batch_size 1000: one batch of three, no wait for more."""
    consumer = _Buffered([_Msg(0, i) for i in range(3)])
    stop = StopFlag()
    sink = _StopAfterOneBatch(stop)
    worker = TransformWorker(
        "batching",
        _TOPIC,
        consumer,  # type: ignore[arg-type]
        get_spec("orders.v1_to_v2"),
        sink,
        _Quarantine(),  # type: ignore[arg-type]
        stop,
        batch_size=1000,
        batch_timeout_s=0.5,
    )
    worker.run()
    assert sink.batches == [3]
    assert consumer.commits == [{0: 3}]
    # Waiting (timeout > 0) only ever for a single event, never for a batch to fill.
    assert all(n == 1 for n, timeout in consumer.calls if timeout > 0), consumer.calls
