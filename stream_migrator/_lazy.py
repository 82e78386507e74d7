"""Lazy re-exports for package ``__init__`` modules (PEP 562 module ``__getattr__``).

Why: importing a package runs its ``__init__``, so a package that re-exports its
heavy parts eagerly makes every import of any of its modules pay for all of them.
The application SDK (``stream_migrator.router``) imports ``stream_migrator`` and
``stream_migrator.rollout``; with eager re-exports that loaded the controller,
settings, the spec loader, Kafka and the metrics server (about 1 s).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``exports[name]`` (a module) on first use."""

    def __getattr__(name: str) -> Any:  # noqa: N807 - the PEP 562 hook's name
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(importlib.import_module(package), name, value)  # next lookups are direct
        return value

    return __getattr__
