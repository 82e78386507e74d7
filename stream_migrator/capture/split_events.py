"""Reassembly of change events that MongoDB 7.0+ splits with ``$changeStreamSplitLargeEvent``.

The server cuts an event larger than 16 MiB into fragments that arrive one after
another, each carrying ``splitEvent: {fragment: i, of: n}`` and a disjoint part
of the event's top-level fields; each fragment has its own resume token. The
whole event is the union of the fragments' fields; its token is the last one's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stream_migrator.errors import FatalError


class SplitEventAssembler:
    """Feed every change; get back whole events (fragments are held until complete)."""

    def __init__(self) -> None:
        self._parts: list[Mapping[str, Any]] = []

    @property
    def pending(self) -> bool:
        """True while fragments of an event are held (do not checkpoint past them)."""
        return bool(self._parts)

    def add(self, change: Mapping[str, Any]) -> Mapping[str, Any] | None:
        split = change.get("splitEvent")
        if split is None:
            if self._parts:
                raise FatalError(
                    f"an unsplit event arrived after fragment {len(self._parts)} of "
                    f"{self._parts[0]['splitEvent']['of']}: the change stream is inconsistent"
                )
            return change
        fragment, total = int(split["fragment"]), int(split["of"])
        if fragment != len(self._parts) + 1:
            raise FatalError(
                f"expected fragment {len(self._parts) + 1} of a split event, got {fragment} of "
                f"{total}: fragments must arrive in order (resume from the first fragment)"
            )
        self._parts.append(change)
        if fragment < total:
            return None
        whole: dict[str, Any] = {}
        for part in self._parts:
            for key, value in part.items():
                if key not in {"splitEvent", "_id"}:
                    whole[key] = value
        whole["_id"] = self._parts[-1]["_id"]
        self._parts = []
        return whole


def supports_split_events(version: list[int] | tuple[int, ...]) -> bool:
    """``$changeStreamSplitLargeEvent`` exists from MongoDB 7.0 (and 6.0.9)."""
    v = (*tuple(version), 0, 0, 0)
    return v[:2] >= (7, 0) or (v[0] == 6 and v[1] == 0 and v[2] >= 9)
