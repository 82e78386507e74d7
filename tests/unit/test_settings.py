"""Settings: environment, validation errors that name the variable, masked secrets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stream_migrator.errors import ConfigError
from stream_migrator.kafka_retention import TopicRetention, check_tombstone_retention
from stream_migrator.settings import Settings, cli_flags, load_settings, reference_table


def test_env_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """SM_* variables set the fields; derived names follow the migration."""
    monkeypatch.setenv("SM_MIGRATION", "m1")
    monkeypatch.setenv("SM_PARTITIONS", "3")
    s = load_settings()
    assert s.partitions == 3
    assert s.changes_topic == "sm.m1.changes"
    assert s.quarantine_topic == "sm.m1.quarantine"
    assert s.consumer_group == "sm.m1.transform"


def test_override_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CLI flag wins over the environment."""
    monkeypatch.setenv("SM_MIGRATION", "from-env")
    assert load_settings(migration="from-flag").migration == "from-flag"


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("source", "nodot", "SM_SOURCE"),
        ("migration", "bad name!", "SM_MIGRATION"),
        ("partitions", 0, "SM_PARTITIONS"),
        ("log_level", "loud", "SM_LOG_LEVEL"),
    ],
)
def test_bad_values_name_the_setting(field: str, value: object, needle: str) -> None:
    """A bad value is a ConfigError naming the environment variable."""
    with pytest.raises(ConfigError, match=needle):
        load_settings(**{field: value})


def test_masked_hides_password() -> None:
    """The start-up log never shows a Mongo password."""
    s = load_settings(mongo_uri="mongodb://app:hunter2@db:27017/")
    assert "hunter2" not in str(s.masked())
    assert "app:***@" in s.masked()["mongo_uri"]


REPO = Path(__file__).resolve().parents[2]


def test_docs_settings_table_matches_model() -> None:
    """docs/operating.md's settings reference is exactly the table generated from the model."""
    readme = (REPO / "docs" / "operating.md").read_text()
    start = readme.index("<!-- settings:start -->") + len("<!-- settings:start -->")
    end = readme.index("<!-- settings:end -->")
    assert readme[start:end].strip() == reference_table(), (
        "docs/operating.md settings table is stale: regenerate it with "
        "python -c 'from stream_migrator.settings import reference_table; print(reference_table())'"
    )


def test_reference_table_names_each_cli_flag() -> None:
    """Each setting with a CLI flag shows that flag in its row, and the commands take it."""
    from stream_migrator.cli import build_parser

    rows = {row.split(" | ")[0].strip("| `"): row for row in reference_table().splitlines()[2:]}
    assert len(rows) == len(Settings.model_fields)
    assert len(cli_flags()) >= 10
    for name, flag in cli_flags().items():
        assert f"| `{flag}` |" in rows[f"SM_{name.upper()}"]
        kind = Settings.model_fields[name].annotation
        args = build_parser().parse_args(["config", flag, *([] if kind is bool else ["7"])])
        expected = {bool: True, int: 7}.get(kind, "7")  # type: ignore[call-overload]
        assert getattr(args, name) == expected, flag
    assert "| `SM_METADATA_DB` |  |" in reference_table()


def test_readme_secured_clusters_names_only_real_settings() -> None:
    """README has a "Secured clusters" section, and every SM_* name it shows is a setting."""
    from stream_migrator.reconcile.settings import ReconcileSettings
    from stream_migrator.rollout.settings import RolloutSettings

    readme = (REPO / "README.md").read_text()
    assert "\n## Secured clusters\n" in readme
    known = {
        f"SM_{name.upper()}"
        for model in (Settings, ReconcileSettings, RolloutSettings)
        for name in model.model_fields
    }
    mentioned = set(re.findall(r"\bSM_[A-Z0-9_]+", readme))
    assert {"SM_KAFKA_SASL_PASSWORD", "SM_MONGO_URI_FILE", "SM_ALLOW_HOOKS"} <= mentioned
    assert mentioned <= known, f"not settings: {sorted(mentioned - known)}"


def test_default_tombstone_retention_outlives_kafka_default_topic() -> None:
    """The default outlives a topic on Kafka's defaults (7 d retention + 7 d segments)."""
    week_ms = 7 * 86_400_000
    default = Settings.model_fields["tombstone_retention_s"].default
    assert default * 1000 > 2 * week_ms
    check_tombstone_retention(default, [TopicRetention("sm.m.changes", week_ms, week_ms)])


@pytest.mark.parametrize("tombstone_s", [3600.0, 4200.0])
def test_check_tombstone_retention_refuses_shorter_or_equal_than_topic(tombstone_s: float) -> None:
    """Shorter than (or equal to) retention.ms + segment.ms: ConfigError naming both values."""
    topic = TopicRetention("sm.m.changes", retention_ms=3_600_000, segment_ms=600_000)
    with pytest.raises(ConfigError) as info:
        check_tombstone_retention(tombstone_s, [topic])
    text = str(info.value)
    assert f"SM_TOMBSTONE_RETENTION_S={tombstone_s:g}" in text
    assert "retention.ms=3600000" in text
    assert "segment.ms=600000" in text
    assert "'sm.m.changes'" in text
    assert "above 4200" in text


def test_check_tombstone_retention_accepts_longer_than_topic() -> None:
    """Longer than every topic keeps events: no error."""
    topics = [
        TopicRetention("sm.m.changes", retention_ms=3_600_000, segment_ms=600_000),
        TopicRetention("sm.m.quarantine", retention_ms=60_000, segment_ms=60_000),
    ]
    check_tombstone_retention(4201.0, topics)


@pytest.mark.parametrize(("retention_ms", "policy"), [(-1, "delete"), (3_600_000, "compact")])
def test_check_tombstone_retention_forever_topic_needs_forever_tombstones(
    retention_ms: int, policy: str
) -> None:
    """A topic that never deletes by age (retention.ms=-1, compact only) needs 0 = forever."""
    topic = TopicRetention("sm.m.changes", retention_ms, 600_000, policy)
    assert topic.longest_ms is None
    with pytest.raises(ConfigError, match="keeps its events forever") as info:
        check_tombstone_retention(10 * 365 * 86400.0, [topic])
    assert "SM_TOMBSTONE_RETENTION_S=0" in str(info.value)
    assert f"retention.ms={retention_ms}" in str(info.value)
    check_tombstone_retention(0, [topic])


def test_tombstone_retention_zero_means_forever_and_negative_is_refused() -> None:
    """SM_TOMBSTONE_RETENTION_S=0 is valid (no purge); a negative value names the setting."""
    assert load_settings(tombstone_retention_s=0).tombstone_retention_s == 0
    with pytest.raises(ConfigError, match="SM_TOMBSTONE_RETENTION_S"):
        load_settings(tombstone_retention_s=-1)
