"""Random ``_id``s of a collection: split points of a parallel snapshot, a sampled reconcile."""

from __future__ import annotations

import random
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import OperationFailure

from stream_migrator.observability import get_logger

log = get_logger("reconcile")


def sample_ids(coll: Collection[dict[str, Any]], n: int, attempts: int = 3) -> list[Any]:
    """``n`` random ``_id``s of ``coll``: server-side ``$sample``, else a reservoir sample.

    mongo-java-server implements ``$sample`` as a sort with a random comparator, which
    Java's TimSort sometimes rejects ("Comparison method violates its general
    contract"); it is retried, then replaced by one ``_id``-only pass (O(n) memory).
    """
    if n <= 0:
        return []
    for _ in range(attempts):
        try:
            pipeline = [{"$sample": {"size": n}}, {"$project": {"_id": 1}}]
            return [d["_id"] for d in coll.aggregate(pipeline)]
        except OperationFailure as exc:
            log.warning("sample.retry", collection=coll.full_name, error=str(exc)[:200])
    rng = random.Random()  # noqa: S311 - statistical sampling, not cryptography
    reservoir: list[Any] = []
    for seen, doc in enumerate(coll.find({}, {"_id": 1})):
        if seen < n:
            reservoir.append(doc["_id"])
        else:
            slot = rng.randint(0, seen)
            if slot < n:
                reservoir[slot] = doc["_id"]
    return reservoir
