"""Migration specs: declarative, reversible document rewrites."""

from __future__ import annotations

from stream_migrator.errors import ConfigError
from stream_migrator.spec.model import META_FIELD, MigrationSpec
from stream_migrator.spec.orders import ORDERS_V1_TO_V2

SPECS: dict[str, MigrationSpec] = {ORDERS_V1_TO_V2.name: ORDERS_V1_TO_V2}


def get_spec(name: str) -> MigrationSpec:
    """Look up a spec by name; an unknown name is a configuration error."""
    try:
        return SPECS[name]
    except KeyError:
        known = ", ".join(sorted(SPECS))
        raise ConfigError(f"unknown migration spec {name!r}; known specs: {known}") from None


__all__ = ["META_FIELD", "SPECS", "MigrationSpec", "get_spec"]
