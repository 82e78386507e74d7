"""Property tests: transform and inverse never modify their input, and give what a deep copy gave.

The spec no longer deep-copies each document (copy-on-write, see
``spec/steps.py``); these tests hold it to the old contract for every step kind,
on documents whose sub-documents and arrays the steps read and write.
"""

from __future__ import annotations

import copy
from typing import Any

import bson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_migrator.errors import TransformError
from stream_migrator.spec import FilteredOut, MigrationSpec
from stream_migrator.spec.hook_steps import Computed, Filter, Hook, read_only
from stream_migrator.spec.model import META_FIELD, step_copies_on_write
from stream_migrator.spec.reshape_steps import Merge, Move, Rename, Split
from stream_migrator.spec.steps import Step
from stream_migrator.spec.value_steps import Cast, Default, Drop
from tests.unit.test_spec_steps import BY_TYPE, _values

# -- hand-written hooks and steps that would corrupt a shared input ----------------------


def _grabby_count(doc: dict[str, Any]) -> int:
    """A computed hook that changes its argument (allowed: unmarked hooks get a copy)."""
    sub = doc.get("a")
    if isinstance(sub, dict):
        sub["grabbed"] = True
    if isinstance(doc.get("b"), list):
        doc["b"].append("grabbed")
    return len(doc)


@read_only
def _key_count(doc: dict[str, Any]) -> int:
    return len(doc)


def _nest_in_place(doc: dict[str, Any]) -> dict[str, Any]:
    """A document hook that edits sub-documents in place and returns its argument."""
    if isinstance(doc.get("a"), dict):
        doc["a"]["hooked"] = 1
    return doc


def _unnest_in_place(doc: dict[str, Any]) -> dict[str, Any]:
    if isinstance(doc.get("a"), dict):
        doc["a"].pop("hooked", None)
    return doc


@read_only
def _flag_shallow(doc: dict[str, Any]) -> dict[str, Any]:
    """A read-only hook: a new top level, the sub-documents shared."""
    return {**doc, "flag": True}


@read_only
def _unflag(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "flag"}


@read_only
def _same(doc: dict[str, Any]) -> dict[str, Any]:
    return doc


def _pops_and_keeps(doc: dict[str, Any]) -> bool:
    """A filter predicate that changes its argument while it looks (it gets a copy)."""
    sub = doc.get("a")
    return isinstance(sub, dict) and sub.pop("k", None) is not None


@read_only
def _has_b(doc: dict[str, Any]) -> bool:
    return "b" in doc


class _InPlace:
    """A hand-written step (the Step protocol, no ``copy_on_write``) that edits ``a`` in place."""

    kind = "in_place"

    def apply(self, doc: dict[str, Any]) -> None:
        if isinstance(doc.get("a"), dict):
            doc["a"]["k"] = "in place"
        if isinstance(doc.get("b"), list):
            doc["b"].reverse()

    def invert(self, doc: dict[str, Any]) -> None:
        self.apply(doc)


STEPS: dict[str, Step] = {
    "rename nested out": Rename("a.k", "c.m"),
    "rename into": Rename("b", "a.n"),
    "move out of": Move(("k", "l"), out_of="a"),
    "move into": Move(("b", "c"), into="a"),
    "split keep": Split("a.s", "a.parts", ("x", "y"), "-", separator="-", on_error="keep"),
    "split null": Split("a.s", "a.s", ("x", "y"), "-", separator="-", on_error="null"),
    "merge": Merge(("a.k", "a.l"), "a.m", "|", on_error="null"),
    "default nested": Default("a.k", {"x": [1]}),
    "default top": Default("c", "pending"),
    "cast nested": Cast("a.k", "string", source="int", on_error="keep"),
    "cast null": Cast("a.l", "decimal", source="double", on_error="null"),
    "drop restore": Drop("a.l", restore=[1, {"z": 2}]),
    "computed copy": Computed("a.count", "m:grabby", _grabby_count),
    "computed read_only": Computed("a.count", "m:key_count", _key_count),
    "hook copy": Hook("m:nest", _nest_in_place, "m:unnest", _unnest_in_place),
    "hook read_only": Hook("m:flag", _flag_shallow, "m:unflag", _unflag),
    "hook identity": Hook("m:same", _same, "m:same", _same),
    "filter": Filter(query={"a": {"$exists": True}}),
    "filter hook copy": Filter(ref="m:pops", predicate=_pops_and_keeps),
    "filter hook read_only": Filter(ref="m:has_b", predicate=_has_b),
    "hand-written": _InPlace(),
}
CHAIN = (
    STEPS["rename nested out"],
    STEPS["default nested"],
    STEPS["hook read_only"],
    STEPS["cast nested"],
    STEPS["hand-written"],
    STEPS["merge"],
    STEPS["drop restore"],
)

_sub_docs = st.dictionaries(
    st.sampled_from(["k", "l", "s", "hooked"]),
    _values | st.sampled_from(["p-q", "p|q", "1"]) | BY_TYPE["int"] | BY_TYPE["double"],
    max_size=4,
)
_top_values = _values | _sub_docs | st.lists(_values, max_size=3)
_docs = st.dictionaries(st.sampled_from(["a", "b", "c", "flag", META_FIELD]), _top_values)


def _deep_copy_reference(steps: tuple[Step, ...], doc: dict[str, Any], back: bool) -> Any:
    """What the spec did before copy-on-write: deep-copy, drop the meta field, run the steps."""
    out = copy.deepcopy(doc)
    out.pop(META_FIELD, None)
    try:
        for step in reversed(steps) if back else steps:
            (step.invert if back else step.apply)(out)
    except FilteredOut:
        return None
    return out


def _outcome(fn: Any, doc: dict[str, Any]) -> tuple[str, Any]:
    """``("ok", BSON bytes)`` (type-, value- and key-order-exact), ``("filtered", None)`` or
    ``("error", class, field)``."""
    try:
        out = fn(doc)
        return ("filtered", None) if out is None else ("ok", bson.encode(out))
    except TransformError as exc:
        return "error", (type(exc), exc.field)


def _assert_pure_and_same(steps: tuple[Step, ...], doc: dict[str, Any], back: bool) -> None:
    spec = MigrationSpec("purity", "1", "2", steps)
    before = bson.encode(doc)
    got = _outcome(spec.inverse if back else spec.transform, doc)
    assert bson.encode(doc) == before, "the input was modified"
    assert got == _outcome(lambda d: _deep_copy_reference(steps, d, back), doc)


@pytest.mark.parametrize("name", sorted(STEPS))
@given(doc=_docs)
def test_transform_and_inverse_leave_input_unchanged_per_step(
    name: str, doc: dict[str, Any]
) -> None:
    """Every step kind: input untouched, output (or error) exactly the deep-copy result."""
    steps = (STEPS[name],)
    _assert_pure_and_same(steps, doc, back=False)
    _assert_pure_and_same(steps, doc, back=True)


@given(doc=_docs)
def test_chain_of_steps_leaves_input_unchanged(doc: dict[str, Any]) -> None:
    """Copy-on-write steps before and after a hand-written one: still pure, still the same."""
    _assert_pure_and_same(CHAIN, doc, back=False)
    _assert_pure_and_same(CHAIN, doc, back=True)


@given(doc=_docs)
def test_transform_output_of_transform_is_a_valid_inverse_input(doc: dict[str, Any]) -> None:
    """inverse(transform(d)) run on shared sub-documents changes neither d nor transform(d)."""
    spec = MigrationSpec("purity", "1", "2", CHAIN)
    try:
        out = spec.transform(doc)
    except TransformError:
        return
    source, target = bson.encode(doc), bson.encode(out)
    _outcome(spec.inverse, out)
    assert (bson.encode(doc), bson.encode(out)) == (source, target)


def test_copy_on_write_is_declared_by_built_ins_only() -> None:
    """Built-in steps share sub-documents; a hand-written step without the declaration does not."""
    assert all(step_copies_on_write(s) for n, s in STEPS.items() if n != "hand-written")
    assert not step_copies_on_write(_InPlace())


def test_untouched_sub_documents_are_shared_not_copied() -> None:
    """The pass-through part of a document is not copied: the output holds the same objects."""
    spec = MigrationSpec("purity", "1", "2", (Rename("a.k", "c.m"), Default("d", "x")))
    doc = {"a": {"k": 1, "l": 2}, "items": [{"sku": "A"}], "_sm": {"v": 1}}
    out = spec.transform(doc)
    assert out == {"a": {"l": 2}, "items": [{"sku": "A"}], "c": {"m": 1}, "d": "x"}
    assert out["items"] is doc["items"]
    assert doc == {"a": {"k": 1, "l": 2}, "items": [{"sku": "A"}], "_sm": {"v": 1}}


def test_read_only_hook_gets_the_working_document_unmarked_a_copy() -> None:
    """A hook marked read_only is called without a deep copy; an unmarked one gets a copy."""
    seen: list[Any] = []

    def unmarked(doc: dict[str, Any]) -> int:
        seen.append(doc["items"])
        return 0

    doc = {"items": [1]}
    MigrationSpec("h", "1", "2", (Computed("n", "m:u", unmarked),)).transform(doc)
    MigrationSpec(
        "h", "1", "2", (Computed("n", "m:r", read_only(lambda d: seen.append(d["items"]))),)
    ).transform(doc)
    assert seen[0] is not doc["items"]
    assert seen[1] is doc["items"]
