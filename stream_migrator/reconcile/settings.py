"""Settings of the reconciler: the shared ones plus its own ``SM_RECONCILE_*`` knobs."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from stream_migrator.errors import ConfigError
from stream_migrator.settings import Settings


class ReconcileSettings(Settings):
    """The reconciler's settings (frozen, read from ``SM_*`` like every process)."""

    reconcile_bucket_size: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Documents per compare bucket: the unit of hashing, drill-down, progress "
        "checkpoints and memory (the compare holds O(bucket) documents).",
    )
    reconcile_recheck_timeout_s: float = Field(
        60.0,
        gt=0,
        description="How long a mismatch that is still in flight (its source changed after "
        "the recheck began) is rechecked before it is reported as divergent.",
    )
    reconcile_settle_s: float = Field(
        2.0,
        ge=0,
        description="Seconds to wait after the transform group's lag reached 0 before a "
        "recheck, so changes still inside capture reach Kafka first.",
    )
    reconcile_max_lag_events: int = Field(
        1000, ge=0, description="Most unapplied events the READY verdict tolerates."
    )
    reconcile_max_lag_seconds: float = Field(
        10.0,
        ge=0,
        description="Oldest unapplied event (and capture lag) the READY verdict tolerates, "
        "in seconds.",
    )
    reconcile_sample_ids: int = Field(
        10, ge=0, le=1000, description="Example _ids (with field diffs) reported per kind."
    )
    reconcile_max_docs_per_second: float = Field(
        0,
        ge=0,
        description="Compare read-rate ceiling per side, documents per second; 0 = no cap "
        "(use it to spare a busy production source).",
    )
    reconcile_workers: int = Field(
        1,
        ge=1,
        le=32,
        description="_id ranges compared in parallel threads. Above 1 only on MongoDB, where "
        "range filters use the _id index (mongo-java-server scans per range).",
    )
    reconcile_interval_s: float = Field(
        300.0, gt=0, description="Seconds between measurements in `reconcile --watch` mode."
    )


def load_reconcile_settings(base: Settings | None = None, **overrides: Any) -> ReconcileSettings:
    """Reconciler settings from the environment, a base ``Settings`` and overrides."""
    values: dict[str, Any] = {}
    if base is not None:
        # The base may be another process's subclass (e.g. rollout): keep the shared fields.
        known = ReconcileSettings.model_fields
        values.update({k: v for k, v in base.model_dump().items() if k in known})
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ReconcileSettings(**values)
    except ValueError as exc:
        raise ConfigError(f"invalid reconcile configuration: {exc}") from exc
