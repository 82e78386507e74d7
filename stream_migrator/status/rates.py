"""Copy and drain rates: the change topic's positions at two readings."""

from __future__ import annotations

from dataclasses import dataclass

from stream_migrator.reconcile.lag import LagReport


@dataclass(frozen=True)
class Positions:
    """Sums over the change topic's partitions at one moment (for rates)."""

    at: float
    produced: int
    committed: int
    lag: int


def positions(report: LagReport) -> Positions | None:
    if not report.known:
        return None
    return Positions(
        at=report.measured_at,
        produced=sum(p.produced for p in report.partitions),
        committed=sum(p.committed for p in report.partitions),
        lag=report.events,
    )


@dataclass(frozen=True)
class Rates:
    current: Positions | None
    produced_per_s: float | None = None
    committed_per_s: float | None = None
    drain_per_s: float | None = None  # lag lost per second (negative: growing)

    @classmethod
    def between(cls, before: Positions | None, now: Positions | None) -> Rates:
        if before is None or now is None or now.at <= before.at:
            return cls(now)
        span = now.at - before.at
        return cls(
            now,
            produced_per_s=max(0.0, (now.produced - before.produced) / span),
            committed_per_s=max(0.0, (now.committed - before.committed) / span),
            drain_per_s=(before.lag - now.lag) / span,
        )
