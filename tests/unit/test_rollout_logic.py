"""Pure rollout logic: plan validation, fences, routing buckets, stage paths."""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from bson import Int64, ObjectId
from bson.timestamp import Timestamp

from stream_migrator import events
from stream_migrator.errors import ConfigError
from stream_migrator.rollout import stamps
from stream_migrator.rollout.errors import PlanError
from stream_migrator.rollout.fences import Measurements, _quantile, error_rate, evaluate, missing
from stream_migrator.rollout.leases import Lease, LeaseWatch
from stream_migrator.rollout.plan import Fences, load_plan, parse_plan, render, run_order, validate
from stream_migrator.rollout.router import Router
from stream_migrator.rollout.routing import bucket, side_for
from stream_migrator.rollout.stages import Stage
from stream_migrator.rollout.stamps import observe_cluster_time, stamp, stamp_update, version_now
from stream_migrator.rollout.state import RolloutState
from stream_migrator.transform.echo import is_forward_echo

EXAMPLE = Path(__file__).resolve().parents[2] / "stream_migrator/rollout/examples/plan.toml"

_BASE = """
[plan]
tiers = [{ name = "5%", percent = 5 }, { name = "all", percent = 100 }]
[collections."s.a"]
fields = ["_id", "cust_name", "address", "total", "status"]
[collections."s.b"]
fields = ["_id", "customer", "address", "total", "status"]
"""


def _migration(name: str, deps: str = "[]", extra: str = "") -> str:
    return f"""
[[migration]]
name = "{name}"
spec = "orders.v1_to_v2"
source = "s.a"
target = "s.b"
depends_on = {deps}
{extra}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return path


def test_example_plan_validates_and_shows_matrix() -> None:
    """The shipped example is valid and `show` lists its matrix and run order."""
    plan = load_plan(EXAMPLE)
    text = render(plan)
    assert "orders-v2" in text
    assert "run order:" in text
    assert "internal (acme-internal,qa) -> 5% -> 25% -> 100%" in text


def test_validate_reports_cycle_with_path(tmp_path: Path) -> None:
    """A dependency cycle is reported as the path that closes it."""
    text = _BASE + _migration("a", '["b"]') + _migration("b", '["a"]')
    problems = validate(parse_plan(_write(tmp_path, text)))
    assert any(p.startswith("dependency cycle: a -> b -> a") for p in problems), problems


def test_validate_reports_unknown_collection_and_field(tmp_path: Path) -> None:
    """A touched collection or field the plan does not declare is an error naming it."""
    extra = 'touches = { "s.zzz" = ["x"], "s.a" = ["nope"] }'
    problems = validate(parse_plan(_write(tmp_path, _BASE + _migration("a", extra=extra))))
    assert any("'s.zzz' is not declared" in p for p in problems), problems
    assert any("unknown field s.a.nope" in p for p in problems), problems


def test_validate_reports_spec_field_missing_from_collection(tmp_path: Path) -> None:
    """A spec step using a field the source collection does not declare is an error."""
    text = _BASE.replace('"cust_name", ', "") + _migration("a")
    problems = validate(parse_plan(_write(tmp_path, text)))
    assert any("source field s.a.cust_name" in p for p in problems), problems


def test_validate_reports_spec_without_inverse_when_rollback_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spec with a one-way step fails validation only when rollback is required."""
    from stream_migrator import spec as spec_pkg
    from stream_migrator.spec import MigrationSpec

    class OneWay:
        field = "total"
        reversible = False

        def apply(self, doc: dict[str, object]) -> None:
            doc.pop("total", None)

        def invert(self, doc: dict[str, object]) -> None:
            return None

    lossy = MigrationSpec("lossy", "v1", "v2", (OneWay(),))
    monkeypatch.setitem(spec_pkg.SPECS, "lossy", lossy)
    text = _BASE + _migration("a").replace("orders.v1_to_v2", "lossy")
    problems = validate(parse_plan(_write(tmp_path, text)))
    assert any("has steps without an inverse" in p for p in problems), problems
    relaxed = text + "[migration.rollback]\nrequired = false\n"
    assert validate(parse_plan(_write(tmp_path, relaxed))) == []


def test_run_order_puts_dependencies_first(tmp_path: Path) -> None:
    """Migrations run after the ones they depend on, ties by name."""
    text = _BASE + _migration("c", '["a"]') + _migration("b") + _migration("a")
    plan = load_plan(_write(tmp_path, text))
    assert run_order(plan) == ["a", "b", "c"]


def test_load_plan_raises_with_every_problem(tmp_path: Path) -> None:
    """load_plan refuses an invalid plan and lists all its problems in one error."""
    text = _BASE + _migration("a", '["ghost"]').replace("orders.v1_to_v2", "no.such")
    with pytest.raises(PlanError) as err:
        load_plan(_write(tmp_path, text))
    assert "unknown migration spec 'no.such'" in str(err.value)
    assert "depends on unknown migration 'ghost'" in str(err.value)


def test_fences_report_only_exceeded_limits() -> None:
    """Each limit is compared with its measurement; unmeasured fences are skipped."""
    fences = Fences(max_lag_events=10, max_divergence_ratio=0.01, max_p99_apply_seconds=1.0)
    measured = Measurements(lag_events=11, divergence_ratio=0.01, p99_apply_seconds=None)
    breaches = evaluate(fences, measured)
    assert [(b.fence, b.value, b.limit) for b in breaches] == [("lag_events", 11.0, 10.0)]


def test_quantile_picks_bucket_holding_p99() -> None:
    """The p99 of cumulative buckets is the upper bound of the bucket reaching 99%."""
    buckets = {0.1: 90.0, 0.5: 98.0, 1.0: 99.5, float("inf"): 100.0}
    assert _quantile(buckets, 0.99) == 1.0


def test_bucket_is_stable_and_salted_by_migration() -> None:
    """The same key always lands in the same bucket; another migration hashes differently."""
    keys = [f"k{i}" for i in range(200)]
    assert [bucket("m1", k) for k in keys] == [bucket("m1", k) for k in keys]
    assert [bucket("m1", k) for k in keys] != [bucket("m2", k) for k in keys]


def test_side_for_honours_tenants_and_monotone_percentage() -> None:
    """Denied tenants stay old, allowed go new, and a key on new at 10% stays new at 25%."""
    base = RolloutState("m", "d.old", "d.new", stage=Stage.CANARY, percentage=10.0)
    at10 = {k for k in range(5000) if side_for(base, k) == "new"}
    at25 = {
        k
        for k in range(5000)
        if side_for(RolloutState("m", "d.old", "d.new", stage=Stage.RAMP, percentage=25.0), k)
        == "new"
    }
    assert at10 < at25
    tenants = RolloutState(
        "m",
        "o",
        "n",
        stage=Stage.CANARY,
        tenants_allow=("in",),
        tenants_deny=("out",),
        percentage=100.0,
    )
    assert side_for(tenants, 1, tenant="out") == "new"  # 100%: everyone on new
    partial = RolloutState(
        "m", "o", "n", stage=Stage.CANARY, tenants_allow=("in",), tenants_deny=("out",)
    )
    assert side_for(partial, 1, tenant="in") == "new"
    assert side_for(partial, 1, tenant="out") == "old"
    assert side_for(partial, 1) == "old"


@pytest.mark.parametrize("namespace", ["", "orders", ".orders", "shop."])
def test_router_refuses_fallback_namespace_without_db_and_collection(namespace: str) -> None:
    """A fallback namespace must be 'db.collection'; the error says so before any connect."""
    with pytest.raises(ConfigError, match=r"is not 'db\.collection'"):
        Router("mongodb://127.0.0.1:1", "m", background=False, fallback_namespace=namespace)


def test_paths_follow_stage() -> None:
    """Before canary everything reads old; cutover reads and writes new."""
    for stage in (Stage.PLANNED, Stage.SHADOW, Stage.VERIFY, Stage.ROLLED_BACK):
        assert RolloutState("m", "o", "n", stage=stage, percentage=50).read_path == "old"
    assert RolloutState("m", "o", "n", stage=Stage.CUTOVER).write_path == "new"
    assert RolloutState("m", "o", "n", stage=Stage.CANARY, percentage=5).read_path == "split"


def test_app_versions_are_later_than_every_change_of_their_second() -> None:
    """The legacy end-of-second stamp is an app version later than any cluster time of s."""
    second = 1_800_000_000
    assert events.is_app_version(events.app_version(second))
    latest_cluster_time = events.version_of(Timestamp(second, 0x7FFFFFFF))
    assert not events.is_app_version(latest_cluster_time)
    assert events.app_version(second) > latest_cluster_time
    assert events.app_version(second) < events.version_of(Timestamp(second + 1, 0))


def _change(op: str, document: dict[str, Any] | None) -> events.ChangeEvent:
    return events.ChangeEvent(op, "db.orders_v2", 1, document, 7 << 32, 0)  # type: ignore[arg-type]


def test_reverse_stream_tells_forward_echoes_from_new_path_writes() -> None:
    forward = {"_id": 1, "_sm": {"v": events.version_of(Timestamp(1_800_000_000, 3))}}
    assert is_forward_echo(_change("update", forward))
    assert is_forward_echo(_change("insert", forward))
    assert not is_forward_echo(_change("update", stamp({"_id": 1})))  # the router's stamp
    assert not is_forward_echo(_change("insert", {"_id": 1}))  # an unstamped app insert
    assert not is_forward_echo(_change("update", {"_id": 1, "_sm": "odd"}))
    # Deletes carry no document: the reverse sink decides them by forward tombstones.
    assert not is_forward_echo(_change("delete", None))


def test_stamp_update_adds_an_application_version_to_set() -> None:
    update = stamp_update({"$set": {"status": "paid"}, "$inc": {"n": 1}})
    assert update["$inc"] == {"n": 1}
    assert update["$set"]["status"] == "paid"
    assert events.is_app_version(update["$set"]["_sm.v"])
    assert events.is_app_version(stamp_update({})["$set"]["_sm.v"])
    assert events.is_app_version(stamp({"_id": 1})["_sm"]["v"])


def test_a_yaml_plan_reads_like_the_toml_one(tmp_path: Path) -> None:
    """Same structure in YAML gives the same plan (specs are YAML; plans may be too)."""
    import tomllib

    import yaml

    raw = tomllib.loads(EXAMPLE.read_text())
    as_yaml = tmp_path / "plan.yaml"
    as_yaml.write_text(yaml.safe_dump(raw))
    assert parse_plan(as_yaml) == parse_plan(EXAMPLE)
    assert validate(parse_plan(as_yaml)) == []


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yaml", "plan: [unclosed", "is not valid YAML"),
        ("list.yml", "- a\n- b\n", "top level must be a mapping"),
        ("bad.toml", "[plan\n", "is not valid TOML"),
    ],
)
def test_unreadable_plan_files_name_the_file_and_the_problem(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PlanError, match=message) as err:
        parse_plan(path)
    assert str(path) in str(err.value)


def test_missing_reports_a_fence_whose_measurement_is_absent() -> None:
    """A fence with a limit but no measurement is missing (held), not silently passed."""
    fences = Fences(max_lag_events=10, max_p99_apply_seconds=1.0, max_error_rate=0.1)
    measured = Measurements(lag_events=3, error_rate=None, p99_apply_seconds=None)
    assert evaluate(fences, measured) == []
    assert missing(fences, measured) == ["error_rate", "p99_apply_seconds"]
    assert missing(Fences(max_lag_events=10), measured) == []  # unset fences are not missing


def test_parse_plan_reads_on_missing_and_defaults_to_hold(tmp_path: Path) -> None:
    """`[migration.fences] on_missing` is "hold" unless the plan says "skip"."""
    held = parse_plan(_write(tmp_path, _BASE + _migration("a")))
    assert held.migrations[0].fences.on_missing == "hold"
    extra = '[migration.fences]\nmax_lag_events = 5\non_missing = "skip"\n'
    skipped = parse_plan(_write(tmp_path, _BASE + _migration("a", extra=extra)))
    assert skipped.migrations[0].fences.on_missing == "skip"


def test_parse_plan_rejects_unknown_on_missing_naming_the_file(tmp_path: Path) -> None:
    """A misspelt on_missing is a PlanError naming the file, the migration and the choices."""
    extra = '[migration.fences]\non_missing = "ignore"\n'
    path = _write(tmp_path, _BASE + _migration("a", extra=extra))
    with pytest.raises(PlanError) as err:
        parse_plan(path)
    message = str(err.value)
    assert str(path) in message
    assert "'a'" in message
    assert "on_missing = 'ignore'" in message
    assert '"hold"' in message
    assert '"skip"' in message


def test_cache_key_keeps_the_id_type() -> None:
    """1 and '1', an ObjectId and its hex string get different cache keys; strings read plain."""
    state = RolloutState("m", "d.old", "d.new", stage=Stage.CANARY, percentage=0.0)
    router = Router("mongodb://127.0.0.1:1", "m", background=False, timeout_ms=50)
    router._state = state  # pure: no MongoDB behind this router
    oid = ObjectId("65a000000000000000000001")
    ids: list[Any] = [1, "1", oid, str(oid), Int64(1), 1.5, "~x", {"a": 1}, True, "true"]
    keys = [router.cache_key("order", i) for i in ids]
    assert len(set(keys)) == len(ids), keys
    assert router.cache_key("order", "k") == "order:v1:k"  # a plain string id is unchanged
    assert router.cache_key("order", oid) == 'order:v1:~{"$oid":"65a000000000000000000001"}'
    router.close()


def test_bucket_of_existing_ids_is_unchanged() -> None:
    """Buckets are pinned: an upgrade mid-ramp must not move keys between old and new."""
    keys: list[Any] = [1, "1", "order-7", ObjectId("65a000000000000000000001"), 2**40]
    assert [bucket("m1", k) for k in keys] == [7228, 1898, 3792, 403, 4098]


def test_stamps_in_one_second_strictly_increase() -> None:
    """Two stamps taken in the same second (or with the clock stepped back) still order."""
    versions = [version_now() for _ in range(1000)]
    assert all(a < b for a, b in itertools.pairwise(versions))
    assert all(events.is_app_version(v) for v in versions)


def test_stamp_is_never_behind_a_cluster_time_the_router_saw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A database clock ahead of the local one lifts the stamps above its cluster time.

    On a clock of its own: the process's clock would stamp an hour ahead for every
    later test in this process (an integration test run after this one in the same
    session then saw its old-path writes refused as older than a stamp).
    """
    monkeypatch.setattr(stamps, "_CLOCK", stamps._StampClock())
    ahead = Timestamp(int(time.time()) + 3600, 12345)
    observe_cluster_time(ahead)
    v = version_now()
    assert v > events.version_of(ahead)
    assert events.is_app_version(v)
    assert version_now() > v


def test_app_versions_are_later_than_every_change_of_their_second_at_any_fraction() -> None:
    """Each stamp of second s sorts after every cluster time of s and before s + 1."""
    second = 1_800_000_000
    latest_cluster_time = events.version_of(Timestamp(second, 0x7FFFFFFF))
    assert not events.is_app_version(latest_cluster_time)
    for fraction in (0, 1, 999_999_999):
        stamped = events.app_version(second, fraction)
        assert events.is_app_version(stamped)
        assert latest_cluster_time < stamped < events.version_of(Timestamp(second + 1, 0))
    assert events.app_version(second, 1) > events.app_version(second, 0)
    assert events.is_app_version(events.app_version(second))  # legacy: end of the second


def test_lease_watch_waits_a_full_lease_without_a_new_beat_before_expiry() -> None:
    """A router is expired only after lease_s (+ margin) on the controller's clock with no beat."""
    now = [100.0]
    watch = LeaseWatch(clock=lambda: now[0])
    quiet = Lease("r1", "m", acked_version=3, beat=7, lease_s=10.0)
    acked = Lease("r2", "m", acked_version=5, beat=1, lease_s=10.0)
    report = watch.classify([quiet, acked], version=5)
    assert report.acknowledged == [acked]
    assert report.pending == [quiet]  # first sight: its lease may have just been renewed
    now[0] += 10.0
    assert watch.classify([quiet], 5).pending == [quiet]  # not past the drift margin yet
    renewed = dataclasses.replace(quiet, beat=8)
    now[0] += 1.5
    assert watch.classify([renewed], 5).pending == [renewed]  # a new beat restarts the wait
    now[0] += LeaseWatch.expiry_after(renewed)
    assert watch.classify([renewed], 5).expired == [renewed]


def test_inverted_spec_copies_on_write_and_leaves_its_input_alone() -> None:
    """The reverse worker's spec shares untouched sub-documents (no deep copy per event)."""
    import copy

    from stream_migrator.rollout.reverse import inverted
    from stream_migrator.spec import get_spec
    from stream_migrator.spec.model import step_copies_on_write

    spec = get_spec("orders.v1_to_v2")
    back = inverted(spec)
    assert all(step_copies_on_write(step) for step in back.steps)
    new_doc = spec.transform(dict(spec.examples[1]))
    before = copy.deepcopy(new_doc)
    old_doc = back.transform(new_doc)
    assert new_doc == before
    assert old_doc == spec.inverse(new_doc)
    assert old_doc["items"] is new_doc["items"]  # shared, not copied


@pytest.mark.parametrize(
    ("captured", "quarantined", "rate"),
    [(None, 3, None), (100, None, None), (0, 0, 0.0), (200, 5, 0.025)],
)
def test_error_rate_is_unmeasured_when_either_topic_is_unreadable(
    captured: int | None, quarantined: int | None, rate: float | None
) -> None:
    """An unreadable quarantine topic is no error rate of 0: the fence counts it missing."""
    assert error_rate(captured, quarantined) == rate
    fences = Fences(max_error_rate=0.01)
    assert missing(fences, Measurements(error_rate=error_rate(captured, quarantined))) == (
        ["error_rate"] if rate is None else []
    )
