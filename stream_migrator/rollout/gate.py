"""The reconciler gate the controller consults before every advance.

The controller depends only on the :class:`Gate` protocol. :func:`compare_gate`
is a simple one built from ``reconcile.full_compare`` (divergence) and the
reconciler's ``LagProbe`` (lag, the same figures as the default gate's);
``stream_migrator.reconcile.gate`` is the default (:data:`DEFAULT_GATE`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from stream_migrator.mongo import connect
from stream_migrator.reconcile import full_compare
from stream_migrator.reconcile import gate as reconcile_gate
from stream_migrator.reconcile.lag import LagProbe
from stream_migrator.settings import Settings
from stream_migrator.spec import get_spec


class VerdictLike(Protocol):
    """The shape of ``stream_migrator.reconcile.Verdict``."""

    @property
    def ready(self) -> bool: ...

    @property
    def reasons(self) -> list[str]: ...

    @property
    def divergence_ratio(self) -> float: ...

    @property
    def lag_events(self) -> int | None: ...  # None: unknown (a fence counts it missing)

    @property
    def lag_seconds(self) -> float | None: ...


class Gate(Protocol):
    """``reconcile.gate``'s call shape: is the target ready for more exposure?"""

    def __call__(self, settings: Settings, *, sample: float | None = None) -> VerdictLike: ...


@dataclass(frozen=True)
class GateVerdict:
    ready: bool
    reasons: list[str] = field(default_factory=list)
    divergence_ratio: float = 0.0
    lag_events: int | None = 0  # None: unknown
    lag_seconds: float | None = 0.0


def compare_gate(
    settings: Settings, *, sample: float | None = None, settle_s: float = 3.0
) -> GateVerdict:
    """Full compare + consumer-group lag. ``sample`` is accepted and ignored (full compare).

    A compare taken while events are in flight sees them as divergence, so when it
    finds mismatches and the group lags, it waits up to ``settle_s`` for the lag to
    clear and compares once more (a poor man's recheck of in-flight keys).

    Lag is the default gate's figure (``LagProbe``): events produced and not yet
    committed by the group, and the age of the oldest of them by its source cluster
    time. Unknown lag (topic missing, Kafka not answering) is a reason, never 0.

    Unlike the default gate it does not block on source documents the spec rejects
    (they are in quarantine; the demo seeds some on purpose and still advances):
    use :data:`DEFAULT_GATE` where a quarantined document must hold the rollout.
    """
    del sample
    probe = LagProbe(
        settings.kafka_bootstrap,
        settings.consumer_group,
        settings.changes_topic,
        settings.kafka_client,
        client_id="sm-gate",
    )
    client = connect(settings.mongo_uri.get_secret_value(), app="rollout-gate")
    try:
        sdb, scoll = settings.split_ns(settings.source)
        tdb, tcoll = settings.split_ns(settings.target)
        spec = get_spec(settings.spec, settings.hook_policy)
        report = full_compare(client[sdb][scoll], client[tdb][tcoll], spec)
        lag = probe.measure(None, None)
        if report.mismatches and lag.events:
            deadline = time.monotonic() + settle_s
            pending = probe.group_lag()
            while pending and time.monotonic() < deadline:
                time.sleep(0.2)
                pending = probe.group_lag()
            report = full_compare(client[sdb][scoll], client[tdb][tcoll], spec)
            lag = probe.measure(None, None)
    finally:
        client.close()
        probe.close()
    reasons = []
    if not lag.known:
        reasons.append(
            f"lag of {settings.consumer_group} on {settings.changes_topic} is unknown ({lag.error})"
        )
    elif lag.events:
        reasons.append(f"{lag.events} events not yet applied ({lag.seconds:.1f} s behind)")
    if report.mismatches:
        reasons.append(
            f"{report.mismatches} mismatches (missing {report.missing}, extra {report.extra}, "
            f"different {report.different}) of {report.source_count} documents"
        )
    return GateVerdict(
        ready=not reasons,
        reasons=reasons,
        divergence_ratio=report.mismatches / max(1, report.source_count),
        lag_events=lag.events if lag.known else None,
        lag_seconds=lag.seconds if lag.known else None,
    )


#: The gate the CLI and ``rollout run`` use: the reconciler's (bucketed hashes,
#: rechecks of in-flight documents, lag). ``compare_gate`` stays as a simpler fallback.
DEFAULT_GATE: Gate = reconcile_gate
