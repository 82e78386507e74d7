"""The demo's data: synthetic v1 orders, the seeded backlog and a live application writing."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from typing import Any

from bson import ObjectId
from pymongo import InsertOne
from pymongo.collection import Collection

_CITIES = ["Springfield", "Shelbyville", "Ogdenville", "North Haverbrook", "Capital City"]
_STREETS = ["Main St", "Elm St", "Oak Ave", "Evergreen Terrace", "Market St"]
_NAMES = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov"]


def v1_order(rng: random.Random, i: int) -> dict[str, Any]:
    """A synthetic v1 order."""
    return {
        "_id": ObjectId(),
        "cust_name": rng.choice(_NAMES),
        "address": f"{rng.randint(1, 999)} {rng.choice(_STREETS)}, {rng.choice(_CITIES)}, "
        f"{rng.randint(10000, 99999)}",
        "total": round(rng.uniform(1, 500), 2),
        "items": [
            {"sku": f"SKU-{rng.randint(1, 500):04d}", "qty": rng.randint(1, 5)}
            for _ in range(rng.randint(1, 4))
        ],
        "created_at": dt.datetime.now(dt.UTC).replace(microsecond=0),
        "seq": i,
        **({"status": "paid"} if i % 3 == 0 else {}),
    }


def seed(coll: Collection[dict[str, Any]], count: int, bad: int, rng: random.Random) -> None:
    """Insert ``count`` v1 orders, ``bad`` of them with an address the spec cannot split."""
    batch: list[InsertOne[dict[str, Any]]] = []
    for i in range(count):
        doc = v1_order(rng, i)
        if i < bad:
            doc["address"] = "no commas here"
        batch.append(InsertOne(doc))
        if len(batch) == 2_000:
            coll.bulk_write(batch, ordered=False)
            batch = []
    if batch:
        coll.bulk_write(batch, ordered=False)


class LiveWriter(threading.Thread):
    """Inserts, updates and deletes on the source at a steady rate, like an application."""

    def __init__(self, coll: Collection[dict[str, Any]], seconds: float, rate: int) -> None:
        super().__init__(name="live-writer", daemon=True)
        self._coll = coll
        self._seconds = seconds
        self._rate = max(1, rate)
        self._rng = random.Random(7)
        self.writes = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - surfaced by the demo report
            self.error = exc

    def _run(self) -> None:
        ids = [d["_id"] for d in self._coll.find({}, {"_id": 1}).limit(5_000)]
        end = time.monotonic() + self._seconds
        interval = 1.0 / self._rate
        next_at = time.monotonic()
        seq = 10_000_000
        while time.monotonic() < end:
            roll = self._rng.random()
            if roll < 0.4 or not ids:
                doc = v1_order(self._rng, seq)
                seq += 1
                self._coll.insert_one(doc)
                ids.append(doc["_id"])
            elif roll < 0.85:
                self._coll.update_one(
                    {"_id": self._rng.choice(ids)},
                    {"$set": {"total": round(self._rng.uniform(1, 500), 2), "status": "shipped"}},
                )
            else:
                victim = ids.pop(self._rng.randrange(len(ids)))
                self._coll.delete_one({"_id": victim})
            self.writes += 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
