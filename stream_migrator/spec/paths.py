"""Dotted-path access into nested documents (``a.b.c``)."""

from __future__ import annotations

from typing import Any

MISSING: Any = object()


def get_path(doc: dict[str, Any], path: str) -> Any:
    """Value at ``path`` or :data:`MISSING`."""
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path``, creating intermediate sub-documents."""
    *parents, leaf = path.split(".")
    node = doc
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value


def pop_path(doc: dict[str, Any], path: str) -> Any:
    """Remove and return the value at ``path`` (or MISSING); prunes emptied parents."""
    *parents, leaf = path.split(".")
    chain: list[tuple[dict[str, Any], str]] = []
    node: Any = doc
    for part in parents:
        if not isinstance(node, dict) or not isinstance(node.get(part), dict):
            return MISSING
        chain.append((node, part))
        node = node[part]
    if not isinstance(node, dict) or leaf not in node:
        return MISSING
    value = node.pop(leaf)
    for parent, part in reversed(chain):
        if parent[part] == {}:
            del parent[part]
    return value
