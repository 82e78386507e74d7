"""Loading YAML specs: the built-in one, paths, Extended JSON, hooks, and precise errors."""

from __future__ import annotations

import datetime as dt
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from bson import ObjectId
from bson.decimal128 import Decimal128

from stream_migrator.errors import ConfigError, TransformError
from stream_migrator.hook_policy import ALL_HOOKS, NO_HOOKS, HookPolicy
from stream_migrator.spec import SPECS, FilteredOut, SpecError, get_spec, load_spec
from stream_migrator.spec.loader import DEFAULT_SCHEMA_DIR
from tests.unit.tripwire import write_tripwire_module

HEAD = """\
name: t.v1_to_v2
source: {db: shop, collection: orders}
target: {db: shop, collection: orders_v2}
schema: null
from_version: 1
to_version: 2
"""


def _write(tmp_path: Path, body: str, head: str = HEAD) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(head + textwrap.dedent(body))
    return path


def _problems(path: Path, hooks: HookPolicy = NO_HOOKS) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path, hooks)
    return info.value.problems


def test_builtin_orders_spec_is_loaded_from_yaml() -> None:
    """The built-in spec is the shipped YAML, with both orders schemas attached."""
    spec = SPECS["orders.v1_to_v2"]
    assert spec.origin is not None
    assert spec.origin.endswith("builtin/orders.v1_to_v2.yaml")
    assert [type(s).__name__ for s in spec.steps] == ["Rename", "Split", "Cast", "Default"]
    assert spec.source_schema is not None
    assert spec.source_schema.name == "orders.v1"
    assert spec.target_schema is not None
    assert spec.target_schema.name == "orders.v2"
    assert spec.irreversible_steps() == []


def test_get_spec_accepts_a_yaml_path(tmp_path: Path) -> None:
    """get_spec takes a file path as well as a built-in name."""
    path = _write(tmp_path, "steps:\n  - rename: {from: a, to: b}\n")
    spec = get_spec(str(path))
    assert spec.name == "t.v1_to_v2"
    assert spec.transform({"_id": 1, "a": 2}) == {"_id": 1, "b": 2}


def test_get_spec_missing_file_is_config_error(tmp_path: Path) -> None:
    """A .yaml path that does not exist is a configuration error naming it."""
    with pytest.raises(ConfigError, match="does not exist"):
        get_spec(str(tmp_path / "nope.yaml"))


def test_unknown_cast_type_reports_line_step_and_choices(tmp_path: Path) -> None:
    """The error names file:line, the step number and kind, the typo and the valid types."""
    path = _write(
        tmp_path,
        """\
        steps:
          - rename: {from: a, to: b}
          - default: {field: s, value: x}
          - cast:
              field: total
              to: decimel
        """,
    )
    assert _problems(path) == [
        f"{path}:12: step 3 (cast): unknown type 'decimel'; did you mean 'decimal'? expected "
        "one of bool, date, decimal, double, int, long, objectId, string"
    ]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Unknown step kinds, bad options and bad top-level keys are all listed, each with a line."""
    path = _write(
        tmp_path,
        """\
        stepz: []
        steps:
          - renmae: {from: a, to: b}
          - cast: {field: t, to: int, on_error: ignore}
          - split: {field: address, pattern: '(?P<a>x)(?P<b>y)', join: '{a}'}
          - drop: {field: _id}
          - filter: {match: {s: {$regex: x}}}
          - move: {fields: [a]}
        """,
    )
    problems = _problems(path)
    assert problems == [
        f"{path}:7: unknown key 'stepz'; did you mean 'steps'? expected name, source, target, "
        "from_version, to_version, steps, description, schema, schema_dir, hook, examples",
        f"{path}:9: step 1 (renmae): unknown step 'renmae'; did you mean 'rename'? expected one "
        "of rename, move, split, merge, default, cast, drop, computed, hook, filter",
        f"{path}:10: step 2 (cast): unknown on_error 'ignore'; expected one of quarantine, null, "
        "keep",
        f"{path}:11: step 3 (split): join must use every group exactly once: groups a, b; join "
        "uses a",
        f"{path}:12: step 4 (drop): field: _id cannot be changed: the target is keyed by it",
        f"{path}:13: step 5 (filter): match.s: unknown operator '$regex'; expected one of $eq, "
        "$exists, $gt, $gte, $in, $lt, $lte, $ne, $nin, $not",
        f"{path}:14: step 6 (move): move takes exactly one of `into` (a sub-document) or `out_of`",
    ]


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    """Broken YAML is reported with its line, not a traceback."""
    path = _write(tmp_path, "steps:\n  - rename: {from: a, to: b\n")
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:9: not valid YAML")


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    """PyYAML would silently keep the last duplicate; the loader refuses it."""
    path = _write(tmp_path, "steps: []\nsteps: []\n")
    (problem,) = _problems(path)
    assert "duplicate key 'steps'" in problem
    assert problem.startswith(f"{path}:8:")


def test_missing_target_schema_says_how_to_fix(tmp_path: Path) -> None:
    """Without the target .avsc, the error names the path and the ways out."""
    path = _write(tmp_path, "steps: []\n", HEAD.replace("schema: null", "schema: nothere"))
    (problem,) = _problems(path)
    assert str(DEFAULT_SCHEMA_DIR / "nothere.v2.avsc") in problem
    assert "`schema: null`" in problem


def test_extended_json_values_become_bson_types(tmp_path: Path) -> None:
    """$oid, $date, $numberDecimal in defaults, restores and examples load as BSON types."""
    path = _write(
        tmp_path,
        """\
        steps:
          - default: {field: owner, value: {$oid: 65a1f0c2e4b0a1b2c3d4e5f6}}
          - default: {field: since, value: {$date: '2024-01-15T10:00:00Z'}}
          - drop: {field: price, restore: {$numberDecimal: '1.50'}}
        examples:
          - {_id: 1, at: 2024-01-15 10:00:00}
        """,
    )
    spec = load_spec(path)
    out = spec.transform({"_id": 1})
    assert out["owner"] == ObjectId("65a1f0c2e4b0a1b2c3d4e5f6")
    assert out["since"] == dt.datetime(2024, 1, 15, 10, tzinfo=dt.UTC)
    assert spec.inverse(out)["price"] == Decimal128("1.50")
    assert spec.examples[0]["at"] == dt.datetime(2024, 1, 15, 10, tzinfo=dt.UTC)


def test_hooks_beside_the_spec_file_are_imported(tmp_path: Path) -> None:
    """computed and hook steps load module:function from the spec's folder."""
    module = f"hooks_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "def count(doc):\n    return len(doc.get('items', []))\n"
        "def upper(doc):\n    return {**doc, 'name': doc['name'].upper()}\n"
        "def lower(doc):\n    return {**doc, 'name': doc['name'].lower()}\n"
    )
    path = _write(
        tmp_path,
        f"""\
        steps:
          - computed: {{field: n_items, hook: '{module}:count'}}
        hook: {{apply: '{module}:upper', inverse: '{module}:lower'}}
        """,
    )
    spec = load_spec(path, ALL_HOOKS)
    doc = {"_id": 1, "items": [1, 2, 3], "name": "ada"}
    out = spec.transform(doc)
    assert out == {"_id": 1, "items": [1, 2, 3], "name": "ADA", "n_items": 3}
    assert spec.inverse(out) == doc


def test_unimportable_hook_is_a_spec_error(tmp_path: Path) -> None:
    """A hook that cannot be imported is reported with its line and what to do."""
    path = _write(tmp_path, "steps:\n  - computed: {field: x, hook: 'no_such_mod_x:f'}\n")
    (problem,) = _problems(path, ALL_HOOKS)
    assert problem.startswith(f"{path}:8: step 1 (computed): hook: cannot import 'no_such_mod_x'")
    assert "beside the spec file" in problem


def test_filter_step_leaves_the_document_out_without_an_error(tmp_path: Path) -> None:
    """A filtered document migrates to None (no target document), never a TransformError."""
    path = _write(tmp_path, "steps:\n  - filter: {match: {status: {$ne: archived}}}\n")
    spec = load_spec(path)
    assert spec.transform({"_id": 1, "status": "paid"}) == {"_id": 1, "status": "paid"}
    assert spec.transform({"_id": 2, "status": "archived"}) is None
    assert spec.migrate({"_id": 2, "status": "archived"}) is None
    assert not issubclass(FilteredOut, TransformError)  # an outcome, not a fault


def test_transform_error_names_step_and_field(tmp_path: Path) -> None:
    """A failing step is named in the message and in TransformError.step."""
    path = _write(tmp_path, "steps:\n  - rename: {from: a, to: b}\n  - cast: {field: b, to: int}\n")
    with pytest.raises(TransformError) as info:
        load_spec(path).transform({"_id": 1, "a": "x1"})
    assert info.value.step == "step 2 (cast)"
    assert info.value.field == "b"
    assert str(info.value) == "b: cannot cast to int: 'x1' is not an integer [step 2 (cast)]"


def _tripwire_spec(tmp_path: Path) -> tuple[Path, str, Path]:
    """A spec whose hook module writes a file the moment it is imported."""
    module, marker = write_tripwire_module(tmp_path, "count")
    path = _write(
        tmp_path,
        f"""\
        steps:
          - computed: {{field: n, hook: '{module}:count'}}
          - filter: {{hook: '{module}:count'}}
        hook: {{apply: '{module}:count', inverse: '{module}:count'}}
        """,
    )
    return path, module, marker


def test_hooks_are_refused_and_never_imported_without_permission(tmp_path: Path) -> None:
    """By default every hook is refused with its line and how to allow it; nothing runs."""
    path, module, marker = _tripwire_spec(tmp_path)
    problems = _problems(path)
    assert len(problems) == 4  # computed, filter.hook, and the top-level apply and inverse
    for problem in problems:
        assert f"{module}:count" in problem
        assert f"SM_HOOKS_ALLOWED={module}" in problem
        assert "--allow-hooks" in problem
    assert problems[0].startswith(f"{path}:8: step 1 (computed): hook: hook ")
    assert not marker.exists()
    assert module not in sys.modules


@pytest.mark.parametrize(
    "policy",
    [ALL_HOOKS, "by module"],
    ids=["allow_hooks", "hooks_allowed"],
)
def test_allowed_hooks_are_imported(tmp_path: Path, policy: HookPolicy | str) -> None:
    """--allow-hooks, or the module listed in SM_HOOKS_ALLOWED, lets the spec load its hooks."""
    path, module, marker = _tripwire_spec(tmp_path)
    hooks = HookPolicy.of(False, ["other", module]) if policy == "by module" else policy
    assert isinstance(hooks, HookPolicy)
    load_spec(path, hooks)
    assert marker.read_text() == "ran"


def test_hook_policy_allows_submodules_not_prefixes() -> None:
    """A listed package allows its submodules; a name that merely starts alike is refused."""
    policy = HookPolicy.of(False, ["acme.hooks", " "])
    assert policy.permits("acme.hooks")
    assert policy.permits("acme.hooks.orders")
    assert not policy.permits("acme.hooksevil")
    assert not policy.permits("acme")
    assert not NO_HOOKS.permits("anything")
