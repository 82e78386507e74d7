"""Settings of the rollout commands: the shared ones plus the operator identity."""

from __future__ import annotations

from pydantic import Field

from stream_migrator.settings import Settings


class RolloutSettings(Settings):
    """``SM_*`` settings of ``rollout``, ``plan`` and ``audit``."""

    operator: str = Field(
        "",
        description="Who is acting, recorded in the audit trail (--operator); default the OS user.",
    )
    drain_timeout_s: float = Field(
        120.0,
        gt=0,
        description="How long rollback waits for the reverse stream to drain and verify.",
    )
