"""Property tests: every step's inverse undoes it on the step's domain; lossy steps are stable."""

from __future__ import annotations

import copy
import datetime as dt
import re
from decimal import Decimal
from typing import Any

import pytest
from bson import ObjectId
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_migrator.errors import TransformError
from stream_migrator.spec import FilteredOut, casts
from stream_migrator.spec.check import diff
from stream_migrator.spec.hook_steps import Computed, Filter, Hook
from stream_migrator.spec.query import matches
from stream_migrator.spec.reshape_steps import Merge, Move, Rename, Split
from stream_migrator.spec.steps import BaseStep
from stream_migrator.spec.value_steps import Cast, Default, Drop

# -- strategies ------------------------------------------------------------------

_dates = st.integers(-(10**12), 10**13).map(
    lambda ms: dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)
)
_decimals = st.decimals(allow_nan=False, allow_infinity=False, places=4).filter(
    lambda d: abs(d) < Decimal(10) ** 20
)
BY_TYPE: dict[str, st.SearchStrategy[Any]] = {
    "bool": st.booleans(),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1).map(Int64),
    "double": st.floats(allow_nan=False, allow_infinity=False),
    "decimal": _decimals.map(Decimal128),
    "date": _dates,
    "objectId": st.binary(min_size=12, max_size=12).map(ObjectId),
    "string": st.text(max_size=12),
}
_scalars = st.one_of(st.none(), *BY_TYPE.values())
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["k", "l"]), inner, max_size=2)
    ),
    max_leaves=6,
)


def _docs(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Documents whose top-level keys are drawn from ``keys`` (so steps' targets stay free)."""
    return st.dictionaries(st.sampled_from(keys), _values, max_size=len(keys))


def _round_trip(step: BaseStep, doc: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    step.apply(out)
    step.invert(out)
    return out


def _applied(step: BaseStep, doc: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    step.apply(out)
    return out


def _assert_stable(step: BaseStep, doc: dict[str, Any]) -> None:
    """Lossy steps: after one round trip the document is a fixed point of apply."""
    once = _applied(step, doc)
    again = _applied(step, _round_trip(step, doc))
    assert diff(once, again) is None


# -- rename / move ---------------------------------------------------------------


@given(_docs(["a", "b", "c"]))
def test_rename_inverse_restores_document_when_target_is_free(doc: dict[str, Any]) -> None:
    """Renaming a -> n.m and back gives the same document whenever n is absent."""
    step = Rename("a", "n.m")
    assert diff(doc, _round_trip(step, doc)) is None


@given(_docs(["b", "c"]), _values)
def test_rename_out_of_subdocument_round_trips(doc: dict[str, Any], value: Any) -> None:
    """Un-nesting p.q -> q and back restores p, also when q was its only field."""
    doc["p"] = {"q": value, **({"r": 1} if "b" in doc else {})}
    step = Rename("p.q", "q")
    out = _applied(step, doc)
    assert out.get("q") == value or diff(out.get("q"), value) is None
    assert diff(doc, _round_trip(step, doc)) is None


def test_rename_onto_existing_field_is_refused() -> None:
    """A rename never overwrites: the existing destination is named in the error."""
    with pytest.raises(TransformError, match=r"customer\.name: already exists") as info:
        Rename("cust_name", "customer.name").apply({"cust_name": "A", "customer": {"name": "B"}})
    assert info.value.field == "customer.name"


def test_rename_into_scalar_parent_is_refused() -> None:
    """Nesting into a field that is not a sub-document names that field."""
    with pytest.raises(TransformError, match="customer: is a string, not a sub-document"):
        Rename("cust_name", "customer.name").apply({"cust_name": "A", "customer": "B"})


@given(_docs(["a", "b", "c"]), st.booleans())
def test_move_into_and_out_of_round_trips(doc: dict[str, Any], keep_other: bool) -> None:
    """Moving a, b into sub (absent, or with another field) and back restores the document."""
    if keep_other:
        doc["sub"] = {"other": 1}
    into = Move(("a", "b"), into="sub")
    assert diff(doc, _round_trip(into, doc)) is None
    moved = _applied(into, doc)
    out_of = Move(("a", "b"), out_of="sub")
    assert diff(moved, _round_trip(out_of, moved)) is None
    assert diff(doc, _applied(out_of, moved)) is None


# -- split / merge -----------------------------------------------------------------

_part = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=8)
_words = st.lists(_part, min_size=1, max_size=3).map(" ".join)
_zip = st.text(st.characters(codec="ascii", categories=["Lu", "Nd"]), min_size=3, max_size=10)
ADDRESS = Split(
    "address",
    "address",
    ("street", "city", "zip"),
    "{street}, {city}, {zip}",
    pattern=r"(?P<street>[^,]+),(?P<city>[^,]+),(?P<zip>\s*[0-9A-Za-z -]{3,10})",
)


@given(_words, _words, _zip)
def test_split_pattern_round_trips_canonical_strings(street: str, city: str, code: str) -> None:
    """An address written as the join writes it splits and joins back exactly."""
    doc = {"address": f"{street}, {city}, {code}"}
    assert _applied(ADDRESS, doc)["address"] == {"street": street, "city": city, "zip": code}
    assert _round_trip(ADDRESS, doc) == doc


@given(st.lists(st.text(alphabet="ab c", max_size=5).map(str.strip), min_size=3, max_size=3))
def test_split_separator_round_trips_stripped_parts(parts: list[str]) -> None:
    """Separator mode: parts without the separator or outer spaces round-trip, to another field."""
    step = Split("name", "parts", ("x", "y", "z"), "|", separator="|")
    doc = {"name": "|".join(parts)}
    assert _applied(step, doc) == {"parts": dict(zip("xyz", parts, strict=True))}
    assert _round_trip(step, doc) == doc


@given(st.text(max_size=20))
def test_split_on_error_keep_leaves_unsplittable_strings(text: str) -> None:
    """on_error keep: a string that does not match stays as it was, so it round-trips too."""
    pattern = r"(?P<a>[^;]+);(?P<b>[^;]+)"
    step = Split("s", "s", ("a", "b"), "{a};{b}", pattern=pattern)
    keep = Split("s", "s", ("a", "b"), "{a};{b}", pattern=pattern, on_error="keep")
    doc = {"s": text}
    if re.fullmatch(pattern, text.strip()) is None:
        with pytest.raises(TransformError) as info:
            _applied(step, doc)
        assert info.value.field == "s"
        assert _applied(keep, doc) == doc
        assert _round_trip(keep, doc) == doc


@given(st.text(max_size=20))
def test_split_on_error_null_is_stable(text: str) -> None:
    """on_error null is lossy (declared not reversible) but stable after one round trip."""
    step = Split("s", "s", ("a", "b"), ";", separator=";", on_error="null")
    assert not step.reversible
    _assert_stable(step, {"s": text})


@given(_part, st.text(max_size=10), _docs(["c"]))
def test_merge_round_trips_when_all_fields_present(first: str, last: str, rest: dict) -> None:
    """Merging first and last into name and splitting back restores both (first has no space)."""
    step = Merge(("first", "last"), "name", " ")
    doc = {**rest, "first": first, "last": last}
    assert _applied(step, doc)["name"] == f"{first} {last}"
    assert diff(doc, _round_trip(step, doc)) is None


def test_merge_refuses_separator_inside_a_field() -> None:
    """A first part containing the separator could not be split back: refused with the field."""
    with pytest.raises(TransformError, match="first: 'Ada Mary' contains the separator"):
        Merge(("first", "last"), "name", " ").apply({"first": "Ada Mary", "last": "L"})


def test_merge_refuses_partial_documents() -> None:
    """Merge needs every field or none; the missing one is named."""
    with pytest.raises(TransformError) as info:
        Merge(("first", "last"), "name", " ").apply({"first": "Ada"})
    assert info.value.field == "last"


# -- default / drop / cast -----------------------------------------------------------------


@given(_docs(["a", "b", "status"]))
def test_default_round_trips_when_status_is_absent_or_other(doc: dict[str, Any]) -> None:
    """Default's domain: the field absent, or neither null nor the default value."""
    step = Default("status", "pending")
    if doc.get("status", "x") in (None, "pending"):
        _assert_stable(step, doc)
    else:
        assert diff(doc, _round_trip(step, doc)) is None


@given(_docs(["a", "legacy"]))
def test_drop_without_restore_is_declared_lossy_and_stable(doc: dict[str, Any]) -> None:
    """A drop without a stored value cannot be undone: declared so, and stable."""
    step = Drop("legacy")
    assert not step.reversible
    assert "legacy" not in _applied(step, doc)
    _assert_stable(step, doc)


@given(_docs(["a", "b"]))
def test_drop_with_restore_round_trips_constant_fields(doc: dict[str, Any]) -> None:
    """drop with restore: documents that held the constant get it back."""
    step = Drop("schema_version", restore=1)
    doc["schema_version"] = 1
    assert step.reversible
    assert diff(doc, _round_trip(step, doc)) is None


REVERSIBLE_PAIRS = sorted(
    (source, to)
    for to, sources in casts.SOURCES.items()
    for source in sources
    if (source, to) not in casts.LOSSY and source != "string"
)


@pytest.mark.parametrize(("source", "to"), REVERSIBLE_PAIRS)
@settings(max_examples=60)
@given(data=st.data())
def test_cast_round_trips_every_source_value(source: str, to: str, data: st.DataObject) -> None:
    """Reversible casts: any value of the from-type comes back exactly (failures are kept)."""
    step = Cast("v", to, source, on_error="keep")
    assert step.reversible
    doc = {"v": data.draw(BY_TYPE[source])}
    assert diff(doc, _round_trip(step, doc)) is None


@pytest.mark.parametrize("to", sorted(t for t in casts.SOURCES if t != "string"))
@settings(max_examples=60)
@given(data=st.data())
def test_cast_from_canonical_string_round_trips(to: str, data: st.DataObject) -> None:
    """string -> T is exact for strings in canonical form (what a cast to string writes)."""
    value = data.draw(BY_TYPE[to])
    text = casts.convert(value, "string")
    doc = {"v": text}
    step = Cast("v", to, "string")
    assert casts.is_type(_applied(step, doc)["v"], to)
    assert _round_trip(step, doc) == doc


@pytest.mark.parametrize(("source", "to"), sorted(casts.LOSSY))
@settings(max_examples=60)
@given(data=st.data())
def test_cast_lossy_pairs_are_declared_and_stable(
    source: str, to: str, data: st.DataObject
) -> None:
    """decimal -> double/int lose form: declared not reversible; one round trip is a fixed point."""
    step = Cast("v", to, source, on_error="keep")
    assert not step.reversible
    _assert_stable(step, {"v": data.draw(BY_TYPE[source])})


@given(st.text(max_size=10))
def test_cast_on_error_policies_quarantine_null_keep(text: str) -> None:
    """A value that cannot be cast: quarantine raises naming the field, null nulls, keep keeps."""
    doc = {"n": f"x{text}"}
    with pytest.raises(TransformError) as info:
        Cast("n", "int").apply(copy.deepcopy(doc))
    assert info.value.field == "n"
    assert _applied(Cast("n", "int", on_error="null"), doc) == {"n": None}
    assert _applied(Cast("n", "int", on_error="keep"), doc) == doc
    assert not Cast("n", "int", "string", on_error="null").reversible


def test_cast_without_from_is_not_reversible() -> None:
    """Without from:, the inverse cannot know the source type: declared, and the inverse keeps."""
    step = Cast("total", "decimal")
    assert not step.reversible
    assert _round_trip(step, {"total": 1.5}) == {"total": Decimal128("1.5")}


# -- computed / hook / filter --------------------------------------------------------------


def _item_count(doc: dict[str, Any]) -> int:
    return len(doc.get("items") or [])


def _swap(doc: dict[str, Any]) -> dict[str, Any]:
    return {("y" if k == "x" else "x" if k == "y" else k): v for k, v in doc.items()}


@given(_docs(["items", "a"]))
def test_computed_field_is_removed_by_the_inverse(doc: dict[str, Any]) -> None:
    """computed adds a derived field; the inverse removes it (domain: the field was absent)."""
    doc["items"] = [1, 2]
    step = Computed("item_count", "tests:_item_count", _item_count)
    assert _applied(step, doc)["item_count"] == 2
    assert diff(doc, _round_trip(step, doc)) is None


def test_computed_hook_failure_names_field_and_hook() -> None:
    """A hook that raises quarantines the document with the hook's name and error."""

    def broken(_doc: dict[str, Any]) -> Any:
        raise KeyError("items")

    with pytest.raises(TransformError, match=r"n: hook m:broken failed: KeyError") as info:
        Computed("n", "m:broken", broken).apply({})
    assert info.value.field == "n"


@given(_docs(["x", "y", "z"]))
def test_hook_with_inverse_round_trips(doc: dict[str, Any]) -> None:
    """A hook and its inverse (here: swap x and y, its own inverse) restore the document."""
    step = Hook("m:swap", _swap, "m:swap", _swap)
    assert step.reversible
    assert diff(doc, _round_trip(step, doc)) is None
    assert not Hook("m:swap", _swap).reversible


_statuses = st.sampled_from(["paid", "archived", "pending", None])


@given(st.dictionaries(st.sampled_from(["status", "total"]), _statuses | st.integers(0, 9)))
def test_filter_excludes_exactly_the_non_matching(doc: dict[str, Any]) -> None:
    """filter: a matching document passes unchanged; any other raises FilteredOut."""
    query = {
        "status": {"$nin": ["archived", None]},
        "$or": [{"total": {"$gte": 3}}, {"total": {"$exists": False}}],
    }
    step = Filter(query=query)
    expected = doc.get("status") not in ("archived", None) and (
        "total" not in doc or (isinstance(doc["total"], int) and doc["total"] >= 3)
    )
    assert matches(doc, query) == expected
    if expected:
        assert _round_trip(step, doc) == doc
    else:
        with pytest.raises(FilteredOut):
            step.apply(copy.deepcopy(doc))
