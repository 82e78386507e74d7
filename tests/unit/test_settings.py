"""Settings: environment, validation errors that name the variable, masked secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_migrator.errors import ConfigError
from stream_migrator.settings import Settings, load_settings, reference_table


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


def test_readme_settings_table_matches_model() -> None:
    """README's settings reference is exactly the table generated from the Settings model."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("<!-- settings:start -->") + len("<!-- settings:start -->")
    end = readme.index("<!-- settings:end -->")
    assert readme[start:end].strip() == reference_table(), (
        "README settings table is stale: regenerate it with "
        "python -c 'from stream_migrator.settings import reference_table; print(reference_table())'"
    )


def test_reference_table_names_each_cli_flag() -> None:
    """Each setting with a CLI flag shows that flag in its row; the others leave it empty."""
    from stream_migrator.cli import _SETTING_FLAGS

    rows = {row.split(" | ")[0].strip("| `"): row for row in reference_table().splitlines()[2:]}
    assert len(rows) == len(Settings.model_fields)
    for name, flag in _SETTING_FLAGS.items():
        assert f"| `{flag}` |" in rows[f"SM_{name.upper()}"]
    assert "| `SM_METADATA_DB` |  |" in reference_table()
