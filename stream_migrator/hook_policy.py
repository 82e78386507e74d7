"""Which spec hooks may run: a hook is a Python module, and importing one runs its code.

A spec can come from untrusted hands (a pull request, a ticket). Its hooks
(``computed``, ``hook``, the top-level ``hook``, ``filter.hook``) are imported
only when the operator allows it: every hook (``--allow-hooks`` /
``SM_ALLOW_HOOKS=true``) or the modules named in ``SM_HOOKS_ALLOWED``. Without
the permission the spec loader refuses, naming each hook, and imports nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class HookPolicy:
    """``allow_all``, or the module names (and their submodules) that may be imported."""

    allow_all: bool = False
    modules: frozenset[str] = frozenset()

    @classmethod
    def of(cls, allow_all: bool, modules: Iterable[str] = ()) -> HookPolicy:
        return cls(allow_all, frozenset(m.strip() for m in modules if m.strip()))

    def permits(self, module: str) -> bool:
        """True when ``module`` may be imported."""
        return self.allow_all or any(
            module == allowed or module.startswith(f"{allowed}.") for allowed in self.modules
        )

    def refusal(self, ref: str, module: str) -> str:
        """Why hook ``ref`` is not loaded, and how to allow it."""
        return (
            f"hook {ref!r} is not allowed: importing module {module!r} would run its code, and "
            "spec hooks run only when the operator allows them. Allow this module with "
            f"SM_HOOKS_ALLOWED={module} (or every hook with --allow-hooks / SM_ALLOW_HOOKS=true)"
        )


#: The default: no hook is imported.
NO_HOOKS = HookPolicy()
#: Every hook may be imported (``--allow-hooks``).
ALL_HOOKS = HookPolicy(allow_all=True)
