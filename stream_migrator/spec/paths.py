"""Dotted-path access into nested documents (``a.b.c``), copy-on-write.

``set_path`` and ``pop_path`` change the top-level dict they are given in
place, but never a sub-document inside it: each sub-document along the path is
replaced by a shallow copy before it is written into. So a working copy that
shares its sub-documents with the caller's document (``dict(doc)``) can be
rewritten without touching the caller's document, and without deep-copying it.
"""

from __future__ import annotations

from typing import Any

MISSING: Any = object()


def get_path(doc: dict[str, Any], path: str) -> Any:
    """Value at ``path`` or :data:`MISSING`."""
    if "." not in path:
        return doc.get(path, MISSING)
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path``, creating intermediate sub-documents (existing ones are copied, not changed)."""
    if "." not in path:
        doc[path] = value
        return
    *parents, leaf = path.split(".")
    node = doc
    for part in parents:
        child = node.get(part)
        child = dict(child) if isinstance(child, dict) else {}
        node[part] = child
        node = child
    node[leaf] = value


def pop_path(doc: dict[str, Any], path: str) -> Any:
    """Remove and return the value at ``path`` (or MISSING); prunes emptied parents.

    The sub-documents along the path are copied (only when there is something to remove).
    """
    if "." not in path:
        return doc.pop(path, MISSING)
    *parents, leaf = path.split(".")
    node: Any = doc
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or leaf not in node:
        return MISSING
    chain: list[tuple[dict[str, Any], str]] = []
    node = doc
    for part in parents:
        child = dict(node[part])
        node[part] = child
        chain.append((node, part))
        node = child
    value = node.pop(leaf)
    for parent, part in reversed(chain):
        if parent[part] == {}:
            del parent[part]
    return value
