"""The worker's overlap of read/transform with the write, on a scripted consumer (pure logic).

Batch n+1 is consumed and transformed while batch n is written, yet commits stay in
offset order and batch n+1 is written only after batch n was committed. The
end-to-end proofs (no loss under kills and rebalances) are the chaos tests.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from stream_migrator.errors import RetryableError
from stream_migrator.interfaces import ApplyResult, TargetWrite
from stream_migrator.runtime import StopFlag
from stream_migrator.spec import get_spec
from stream_migrator.transform import TransformWorker
from tests.unit.test_worker_backpressure import _TOPIC, _Consumer, _Msg, _Quarantine

_HOLD_S = 10.0  # a deadlock guard only: a worker that does not overlap makes the test fail


class _ScriptedConsumer(_Consumer):
    """Hands out one scripted batch per consume() of a full batch; logs what happens."""

    def __init__(self, batches: list[list[_Msg]], log: list[tuple[str, int]]) -> None:
        super().__init__(owned=[0])
        self.batches = list(batches)
        self.handed = 0
        self.log = log
        self.second_batch_read = threading.Event()
        self.stop = StopFlag()

    def subscribe(self, _topics: list[str], **_callbacks: object) -> None:
        pass

    def close(self) -> None:
        pass

    def consume(self, n: int, _timeout: float) -> list[_Msg]:
        if n == 1 or not self.batches:
            if not self.batches and self.commits and max(self.commits[-1].values()) == 8:
                self.stop.set("test done")
            return []
        batch = self.batches.pop(0)
        self.log.append(("consume", self.handed))
        self.handed += 1
        if self.handed == 2:
            self.second_batch_read.set()
        return batch

    def commit(self, *, offsets: list[object], asynchronous: bool) -> None:
        super().commit(offsets=offsets, asynchronous=asynchronous)  # type: ignore[arg-type]
        self.log.append(("commit", max(self.commits[-1].values())))


class _SlowFirstSink:
    """Holds the first write until the worker has read the next batch; fails once if asked."""

    def __init__(
        self, consumer: _ScriptedConsumer, log: list[tuple[str, int]], fail_first: bool
    ) -> None:
        self.consumer = consumer
        self.log = log
        self.fail_first = fail_first
        self.calls = 0
        self.overlapped: bool | None = None

    def apply(self, writes: Sequence[TargetWrite]) -> ApplyResult:
        self.calls += 1
        first_offset = min(w.tag.offset() for w in writes)
        self.log.append(("write", first_offset))
        if self.calls == 1:
            self.overlapped = self.consumer.second_batch_read.wait(_HOLD_S)
            if self.fail_first:
                raise RetryableError("target down", retry_after=0.001)
        return ApplyResult(written=len(writes))


def _run_worker(consumer: _ScriptedConsumer, sink: _SlowFirstSink) -> None:
    TransformWorker(
        "m",
        _TOPIC,
        consumer,  # type: ignore[arg-type]
        get_spec("orders.v1_to_v2"),
        sink,
        _Quarantine(),  # type: ignore[arg-type]
        consumer.stop,
    ).run()


def _run(fail_first: bool) -> tuple[list[tuple[str, int]], _SlowFirstSink]:
    log: list[tuple[str, int]] = []
    batches = [[_Msg(0, 0), _Msg(0, 1)], [_Msg(0, 2), _Msg(0, 3)], [_Msg(0, 4), _Msg(0, 7)]]
    consumer = _ScriptedConsumer(batches, log)
    sink = _SlowFirstSink(consumer, log, fail_first)
    _run_worker(consumer, sink)
    return log, sink


def test_next_batch_is_read_while_the_previous_one_is_written() -> None:
    """Batch 2 is consumed during batch 1's write; each batch is committed before the next write."""
    log, sink = _run(fail_first=False)
    assert sink.overlapped is True
    writes = [offset for what, offset in log if what == "write"]
    commits = [offset for what, offset in log if what == "commit"]
    assert writes == [0, 2, 4]
    assert commits == [2, 4, 8]  # in offset order
    # Batch 1 was read (and transformed) before batch 0's write was committed ...
    assert log.index(("consume", 1)) < log.index(("commit", 2))
    # ... and each write starts only once the batch before it is committed.
    assert log.index(("commit", 2)) < log.index(("write", 2))
    assert log.index(("commit", 4)) < log.index(("write", 4))


def test_failed_write_in_flight_is_retried_before_anything_later_is_written() -> None:
    """A write that fails on the writer thread is retried under backpressure, then committed."""
    log, sink = _run(fail_first=True)
    assert sink.overlapped is True
    writes = [offset for what, offset in log if what == "write"]
    commits = [offset for what, offset in log if what == "commit"]
    assert writes == [0, 0, 2, 4]  # the retry of batch 0 comes before batch 1's write
    assert commits == [2, 4, 8]
    assert log.index(("commit", 2)) < log.index(("write", 2))


class _DownUntilStoppedSink(_SlowFirstSink):
    """The target is down when the first write runs; the worker is stopped meanwhile."""

    def apply(self, writes: Sequence[TargetWrite]) -> ApplyResult:
        if self.calls == 0:
            self.calls += 1
            self.log.append(("write", min(w.tag.offset() for w in writes)))
            self.overlapped = self.consumer.second_batch_read.wait(_HOLD_S)
            self.consumer.stop.set("SIGTERM during a target outage")
            raise RetryableError("target down", retry_after=0.001)
        return super().apply(writes)


def test_stop_during_an_outage_writes_and_commits_nothing_after_the_abandoned_batch() -> None:
    """A batch abandoned on stop is never skipped over: the batch read behind it is not written."""
    log: list[tuple[str, int]] = []
    consumer = _ScriptedConsumer([[_Msg(0, 0), _Msg(0, 1)], [_Msg(0, 2), _Msg(0, 3)]], log)
    sink = _DownUntilStoppedSink(consumer, log, fail_first=False)
    _run_worker(consumer, sink)
    assert sink.overlapped is True  # batch 1 was read while batch 0's write failed
    assert consumer.commits == []  # offsets 0-1 were never written: nothing may pass them
    assert [offset for what, offset in log if what == "write"] == [0]
