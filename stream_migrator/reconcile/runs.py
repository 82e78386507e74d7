"""The reconcile run store: ``<metadata_db>.reconcile_runs`` and ``.reconcile_suspects``.

One run document per migration (``<migration>/reconcile``: mode, phase, scan
segments and counters, and at the end the verdict), and one suspect record per
document a run found differing (``{_id: {r: run, d: doc_id}}``: ``pending`` until
rechecked, then ``final`` with its kind and diffs). A killed compare resumes from
them; ``status`` reads the last verdict from them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

from pymongo import MongoClient, ReplaceOne

RUNS = "reconcile_runs"
SUSPECTS = "reconcile_suspects"
UNTRANSFORMABLE = "untransformable"  # suspect kind of a source document the spec rejects


class RunStore:
    """The runs and suspects of one migration."""

    def __init__(
        self, client: MongoClient[dict[str, Any]], metadata_db: str, migration: str
    ) -> None:
        meta = client[metadata_db]
        self._runs = meta[RUNS]
        self._suspects = meta[SUSPECTS]
        self.migration = migration
        self.key = f"{migration}/reconcile"

    # -- the run ----------------------------------------------------------------
    def current(self) -> dict[str, Any] | None:
        """The migration's run document (the last run, finished or not)."""
        return self._runs.find_one({"_id": self.key})

    def begin(self, state: dict[str, Any]) -> None:
        """Make ``state`` (with ``run``) the migration's run; earlier suspects are history."""
        self._runs.replace_one({"_id": self.key}, {**state, "_id": self.key}, upsert=True)
        self._suspects.delete_many({"migration": self.migration, "run": {"$ne": state["run"]}})

    def save(self, run_id: str, **fields: Any) -> None:
        fields["updated_at"] = dt.datetime.now(dt.UTC)
        self._runs.update_one({"_id": self.key, "run": run_id}, {"$set": fields})

    # -- suspects ---------------------------------------------------------------
    def put(self, run_id: str, rows: list[tuple[Any, dict[str, Any]]]) -> None:
        """Upsert one suspect record per ``(doc_id, fields)`` of this run."""
        if rows:
            self._suspects.bulk_write(
                [ReplaceOne(self._key(run_id, i), self._row(run_id, i, f), True) for i, f in rows],
                ordered=False,
            )

    def add_pending(self, run_id: str, ids: list[Any]) -> None:
        self.put(run_id, [(doc_id, {"state": "pending"}) for doc_id in ids])

    def add_untransformable(self, run_id: str, rejected: Sequence[tuple[Any, str | None]]) -> None:
        """Record source documents the spec rejects as final suspects, with the reason."""
        self.put(
            run_id,
            [
                (doc_id, {"state": "final", "kind": UNTRANSFORMABLE, "reason": reason, "diffs": []})
                for doc_id, reason in rejected
            ],
        )

    def settle(
        self, run_id: str, resolved: list[Any], final: list[tuple[Any, dict[str, Any]]]
    ) -> None:
        """A recheck's outcome: ``resolved`` ids match now, ``final`` ones keep differing."""
        if resolved:
            self._suspects.delete_many(
                {"_id": {"$in": [self._key(run_id, i)["_id"] for i in resolved]}}
            )
        if final:
            self._suspects.bulk_write(
                [ReplaceOne(self._key(run_id, i), self._row(run_id, i, f)) for i, f in final],
                ordered=False,
            )

    def pending_count(self, run_id: str) -> int:
        return self._suspects.count_documents({"run": run_id, "state": "pending"})

    def pending_ids(self, run_id: str, batch_size: int) -> Iterator[list[Any]]:
        """The pending suspects' ids, ``batch_size`` at a time."""
        batch: list[Any] = []
        for doc in self._suspects.find({"run": run_id, "state": "pending"}, {"doc_id": 1}):
            batch.append(doc["doc_id"])
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def final(self, run_id: str) -> Iterator[dict[str, Any]]:
        """Every final suspect record of the run (divergent or untransformable)."""
        yield from self._suspects.find({"run": run_id, "state": "final"})

    def untransformable_count(self, run_id: str) -> int:
        return self._suspects.count_documents(
            {"run": run_id, "state": "final", "kind": UNTRANSFORMABLE}
        )

    def _key(self, run_id: str, doc_id: Any) -> dict[str, Any]:
        return {"_id": {"r": run_id, "d": doc_id}}

    def _row(self, run_id: str, doc_id: Any, fields: dict[str, Any]) -> dict[str, Any]:
        return {"run": run_id, "migration": self.migration, "doc_id": doc_id, **fields}
