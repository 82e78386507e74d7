"""Migration specs: declarative, reversible document rewrites, written in YAML.

Built-in specs live in ``spec/builtin/<name>.yaml``; :func:`get_spec` also takes
the path of any spec file. See :mod:`stream_migrator.spec.loader` for the format.
"""

from __future__ import annotations

from pathlib import Path

from stream_migrator.errors import ConfigError
from stream_migrator.hook_policy import NO_HOOKS, HookPolicy
from stream_migrator.spec.errors import FilteredOut, SpecError
from stream_migrator.spec.hook_steps import read_only
from stream_migrator.spec.loader import load_spec, parse_spec
from stream_migrator.spec.model import META_FIELD, MigrationSpec

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"


def _builtin() -> dict[str, MigrationSpec]:
    specs: dict[str, MigrationSpec] = {}
    for file in sorted(BUILTIN_DIR.glob("*.yaml")):
        spec = load_spec(file)
        specs[spec.name] = spec
    return specs


SPECS: dict[str, MigrationSpec] = _builtin()


def get_spec(name: str, hooks: HookPolicy = NO_HOOKS) -> MigrationSpec:
    """A built-in spec by name, or the spec in a YAML file; anything else is a ConfigError.

    ``hooks``: which of a spec file's hook modules may be imported (none by default).
    """
    if name in SPECS:
        return SPECS[name]
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"spec file {name} does not exist")
        return load_spec(path, hooks)
    known = ", ".join(sorted(SPECS))
    raise ConfigError(
        f"unknown migration spec {name!r}; known specs: {known}, or give the path of a "
        ".yaml spec file"
    )


__all__ = [
    "META_FIELD",
    "SPECS",
    "FilteredOut",
    "MigrationSpec",
    "SpecError",
    "get_spec",
    "load_spec",
    "parse_spec",
    "read_only",
]
