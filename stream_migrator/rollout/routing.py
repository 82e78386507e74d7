"""Which side a key is on: the sticky bucket, the routing rule, the target, cache ids.

Routing is sticky: a key's bucket is a hash of (migration, BSON of the key), so it
does not change between requests or processes, and a key exposed at 5% is still
exposed at 25% (the threshold only grows as the rollout advances). Denied tenants
always get old, allowed tenants get new from their tier on.

Cache keys keep the ``_id``'s BSON type: a string id reads as itself (``order:v2:k``),
any other id as ``~`` + its canonical Extended JSON (``order:v2:~{"$oid":"65a..."}``),
so ``1`` and ``'1'``, or an ObjectId and its hex string, never share an entry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS

from stream_migrator import events
from stream_migrator.rollout.state import RolloutState

Side = Literal["old", "new"]
BUCKETS = 10_000


@dataclass(frozen=True)
class Target:
    """The collection one request should use."""

    side: Side
    namespace: str
    schema: str

    @property
    def db(self) -> str:
        return self.namespace.partition(".")[0]

    @property
    def collection(self) -> str:
        return self.namespace.partition(".")[2]


def bucket(migration: str, key: Any) -> int:
    """0..9999, stable for a key across processes (salted by migration)."""
    digest = hashlib.blake2b(
        migration.encode() + b"\0" + events.key_bytes(key), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def side_for(state: RolloutState, key: Any, tenant: str | None = None) -> Side:
    """Old or new for one key under ``state`` (pure; reads and writes use the same rule)."""
    path = state.read_path
    if path != "split":
        return path
    if tenant is not None and tenant in state.tenants_deny:
        return "old"
    if tenant is not None and tenant in state.tenants_allow:
        return "new"
    return (
        "new" if bucket(state.migration, key) < round(state.percentage * BUCKETS / 100) else "old"
    )


def canonical_id(doc_id: Any) -> str:
    """A string naming ``doc_id`` with its BSON type (injective; strings stay readable).

    A string is itself (a leading ``~`` doubled); anything else is ``~`` + canonical
    Extended JSON, which starts with ``{``, ``[``, ``t``, ``f`` or ``n``, never ``~``.
    Numbers of different BSON types stay apart (``1`` vs ``Int64(1)``), as in the
    Kafka key and the routing bucket: pass an ``_id`` in the type it is stored in.
    """
    if isinstance(doc_id, str):
        return "~" + doc_id if doc_id.startswith("~") else doc_id
    return "~" + json_util.dumps(doc_id, json_options=CANONICAL_JSON_OPTIONS, separators=(",", ":"))
