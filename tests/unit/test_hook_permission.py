"""Specs from untrusted hands: `spec check` and `plan validate` import no hook unless allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_migrator.cli import main
from stream_migrator.settings import load_settings
from tests.unit.tripwire import write_tripwire_module

PACKAGE = Path(__file__).resolve().parents[2] / "stream_migrator"
BUILTIN = PACKAGE / "spec" / "builtin"
PLAN_EXAMPLE = (PACKAGE / "rollout" / "examples" / "plan.toml").read_text()


def _tripwire(tmp_path: Path) -> tuple[Path, str, Path]:
    """The built-in orders spec plus a computed step whose module writes a file on import."""
    module, marker = write_tripwire_module(tmp_path, "one")
    text = (BUILTIN / "orders.v1_to_v2.yaml").read_text()
    text = text.replace(
        "  - default: {field: status, value: pending}\n",
        "  - default: {field: status, value: pending}\n"
        f"  - computed: {{field: status, hook: '{module}:one'}}\n",
    )
    text = text.replace("schema: orders ", "schema: null ")
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    return spec, module, marker


@pytest.mark.parametrize("allow", [False, True], ids=["refused", "--allow-hooks"])
def test_spec_check_imports_hooks_only_when_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], allow: bool
) -> None:
    """Without --allow-hooks: exit 2 naming the hook, and its module never ran."""
    spec, module, marker = _tripwire(tmp_path)
    code = main(["spec", "check", str(spec), *(["--allow-hooks"] if allow else [])])
    err = capsys.readouterr().err
    if allow:
        assert marker.read_text() == "ran", err
        assert "not allowed" not in err
    else:
        assert code == 2
        assert f"hook '{module}:one' is not allowed" in err
        assert "--allow-hooks" in err
        assert not marker.exists()


def test_plan_validate_imports_hooks_only_when_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`plan validate` checks each migration's spec under the same permission."""
    spec, module, marker = _tripwire(tmp_path)
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN_EXAMPLE.replace('spec = "orders.v1_to_v2"', f'spec = "{spec}"'))
    assert main(["plan", "validate", str(plan)]) == 2
    assert f"hook '{module}:one' is not allowed" in capsys.readouterr().out
    assert not marker.exists()
    monkeypatch.setenv("SM_HOOKS_ALLOWED", f"other,{module}")
    assert main(["plan", "validate", str(plan)]) == 0, capsys.readouterr().out
    assert marker.read_text() == "ran"


def test_hook_settings_build_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """SM_ALLOW_HOOKS allows all; SM_HOOKS_ALLOWED lists modules; neither allows none."""
    assert not load_settings().hook_policy.permits("x")
    monkeypatch.setenv("SM_HOOKS_ALLOWED", "acme.hooks, b")
    policy = load_settings().hook_policy
    assert policy.permits("acme.hooks.orders")
    assert policy.permits("b")
    assert not policy.permits("c")
    monkeypatch.setenv("SM_ALLOW_HOOKS", "true")
    assert load_settings().hook_policy.permits("c")
