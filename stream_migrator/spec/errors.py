"""Errors of the spec package: an invalid spec file, and a document the filter leaves out."""

from __future__ import annotations

from collections.abc import Sequence

from stream_migrator.errors import ConfigError, TransformError


class SpecError(ConfigError):
    """A spec file is invalid. ``problems`` holds one ``file:line: what, and what to do`` each."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        head = "invalid migration spec" + (f" ({count} problems)" if count > 1 else "")
        super().__init__(head + ":\n  " + "\n  ".join(self.problems))


class FilteredOut(TransformError):  # noqa: N818 - an outcome, not a fault
    """The spec's ``filter`` excludes this document: not an error, it does not migrate.

    A subclass of TransformError so that code which only knows TransformError
    (compare, quarantine replay) still treats it as "no target document"; the
    transform worker catches it first and deletes the target copy instead of
    quarantining (see ``TransformWorker._prepare``).
    """
