"""Errors of the spec package: an invalid spec file, and a document the filter leaves out."""

from __future__ import annotations

from collections.abc import Sequence

from stream_migrator.errors import ConfigError


class SpecError(ConfigError):
    """A spec file is invalid. ``problems`` holds one ``file:line: what, and what to do`` each."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        head = "invalid migration spec" + (f" ({count} problems)" if count > 1 else "")
        super().__init__(head + ":\n  " + "\n  ".join(self.problems))


class FilteredOut(Exception):  # noqa: N818 - an outcome, not a fault
    """A filter step excludes this document: not an error, it does not migrate.

    Raised by a step only, to leave the step loop; ``MigrationSpec.transform`` turns
    it into its answer None ("the target must not hold this document"), so no
    caller of the spec handles it, and it is no TransformError: nothing that
    quarantines on a TransformError can mistake it for a fault.
    """
