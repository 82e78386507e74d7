"""Deployment artifacts checked with the real tools: promtool, docker-compose, Kubernetes schemas.

Tools come from `make ops-tools` (Debian's prometheus and docker-compose, PyPI's
kubernetes-validate). `make test` installs them; a missing tool fails a test.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_migrator.observability.catalogue import series_names

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "stream-migrator.rules.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "stream-migrator.json"
#: Series Prometheus itself makes; everything else a query names must come from the code.
_PROMETHEUS_SERIES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})
_IDENT = re.compile(r"\b(sm_[a-z0-9_]+|up|ALERTS)\b")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        # `make test` / `make test-unit` install it (ops-tools): missing is a failure.
        pytest.fail(f"{name} not installed: run `make ops-tools`")
    return path


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def _dashboard_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and annotation of the dashboard."""
    dash = json.loads(DASHBOARD.read_text())
    exprs = [
        (f"panel {p['title']!r} target {t['refId']}", t["expr"])
        for p in dash["panels"]
        for t in p.get("targets", [])
    ]
    exprs += [
        (f"annotation {a['name']!r}", a["expr"]) for a in dash["annotations"]["list"] if "expr" in a
    ]
    return exprs


def _concrete(expr: str) -> str:
    """Grafana's variables replaced by values, so promtool can parse the query."""
    return expr.replace("$__rate_interval", "1m").replace("$migration", "orders-v2")


def _metric_names(expr: str) -> set[str]:
    # Label values and legend text are quoted; only bare identifiers name series.
    return set(_IDENT.findall(re.sub(r'"[^"]*"', '""', expr)))


def test_rules_pass_promtool_check_and_unit_tests() -> None:
    """The alert rules parse and behave as their promtool unit tests say."""
    promtool = _tool("promtool")
    check = _run(promtool, "check", "rules", str(RULES))
    assert check.returncode == 0, check.stdout + check.stderr
    tests = sorted((DEPLOY / "prometheus" / "tests").glob("*.test.yml"))
    assert tests, "no promtool rule tests under deploy/prometheus/tests"
    result = _run(promtool, "test", "rules", *map(str, tests))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_tests_cover_every_alert() -> None:
    """Every alert in the rules file is exercised by at least one promtool test."""
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    tested: set[str] = set()
    for path in (DEPLOY / "prometheus" / "tests").glob("*.test.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            tested |= {t["alertname"] for t in case.get("alert_rule_test", [])}
    assert alerts - tested == set(), f"alerts without a promtool test: {alerts - tested}"


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    """The compose Prometheus config (with its rule files) passes `promtool check config`."""
    promtool = _tool("promtool")
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["rule_files"] = [str(RULES)]  # the container path, pointed at the repo copy
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    result = _run(promtool, "check", "config", str(local))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_and_dashboard_name_only_exported_metrics() -> None:
    """No alert or panel references a metric the code does not register."""
    exported = series_names() | _PROMETHEUS_SERIES
    rules = [
        (f"alert {r['alert']}", r["expr"])
        for g in yaml.safe_load(RULES.read_text())["groups"]
        for r in g["rules"]
    ]
    unknown = {
        (where, name)
        for where, expr in rules + _dashboard_exprs()
        for name in _metric_names(expr)
        if name not in exported
    }
    assert unknown == set(), f"queries name metrics the code does not export: {sorted(unknown)}"


def test_dashboard_queries_parse_with_promtool(tmp_path: Path) -> None:
    """Every dashboard query is valid PromQL: promtool parses each as a recording rule."""
    promtool = _tool("promtool")
    exprs = _dashboard_exprs()
    assert len(exprs) >= 10
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": _concrete(expr)}
                    for i, (_, expr) in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = _run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_query(tmp_path: Path) -> None:
    """The parse check above can fail: a query with unbalanced parentheses is refused."""
    promtool = _tool("promtool")
    path = tmp_path / "broken.rules.yml"
    path.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum(rate(up[1m])"}]}]}
        )
    )
    assert _run(promtool, "check", "rules", str(path)).returncode != 0


def test_dashboard_has_the_required_panels() -> None:
    """Lag per partition, throughput, errors, p50/p99 latency, rollout and fence annotations."""
    dash = json.loads(DASHBOARD.read_text())
    text = json.dumps(dash)
    for needle in (
        "sm_consumer_partition_lag_events",
        "sm_consumer_lag_seconds",
        "sm_events_captured_total",
        "sm_events_applied_total",
        "sm_events_quarantined_total",
        "histogram_quantile(0.99, sum by (le) (rate(sm_apply_seconds_bucket",
        "histogram_quantile(0.5, sum by (le) (rate(sm_apply_seconds_bucket",
        "sm_rollout_stage",
    ):
        assert needle in text, f"dashboard lacks {needle}"
    assert any("fence_breaches" in a.get("expr", "") for a in dash["annotations"]["list"])
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert dash["uid"] == "stream-migrator"


def test_compose_file_is_valid_and_complete() -> None:
    """`docker-compose config` accepts the file; every service the issue lists is in it."""
    compose = _tool("docker-compose")
    path = DEPLOY / "docker-compose.yml"
    result = _run(compose, "-f", str(path), "config")
    assert result.returncode == 0, result.stdout + result.stderr
    resolved = yaml.safe_load(result.stdout)
    services = resolved["services"]
    expected = {"mongo", "kafka", "connect", "capture", "transform", "reconciler", "controller"}
    assert expected | {"prometheus", "grafana"} <= set(services)
    assert services["transform"]["deploy"]["replicas"] == 2
    assert services["capture"]["deploy"]["replicas"] == 1
    assert "--replSet" in services["mongo"]["command"]
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    mounts = " ".join(str(v) for v in services["grafana"]["volumes"])
    assert "grafana/dashboards" in mounts
    assert "grafana/provisioning" in mounts
    for name in ("capture", "transform", "reconciler", "controller"):
        env = services[name]["environment"]
        assert env["SM_METRICS_PORT"] == "9400", name


def test_compose_config_rejects_an_unknown_key(tmp_path: Path) -> None:
    """The compose check can fail: a misspelt service key is refused."""
    compose = _tool("docker-compose")
    doc = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    doc["services"]["capture"]["replcas"] = 1
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(doc))
    assert _run(compose, "-f", str(bad), "config", "-q").returncode != 0


def _k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _validate(doc: dict[str, Any]) -> None:
    import kubernetes_validate as kv  # a dev dependency (pyproject)

    kv.validate(doc, "1.30.0", strict=True)


def test_k8s_manifests_match_the_kubernetes_schemas() -> None:
    """Every built-in resource validates strictly against the Kubernetes 1.30 schemas."""
    checked = 0
    for path, doc in _k8s_docs():
        if doc["apiVersion"].startswith("monitoring.coreos.com"):
            continue  # a CRD: checked against the Services below
        try:
            _validate(doc)
        except Exception as exc:  # noqa: BLE001 - the validator's own error classes vary
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']}: {exc}")
        checked += 1
    assert checked >= 10


def test_k8s_validation_rejects_a_misspelt_field() -> None:
    """The schema check can fail: an unknown field in a container is refused."""
    deployment = next(d for _, d in _k8s_docs() if d["kind"] == "Deployment")
    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(Exception, match="livenesProbe"):
        _validate(bad)


def test_k8s_workers_are_probed_and_capture_is_single() -> None:
    """Probes hit /healthz and /readyz; capture runs one Recreate pod; workers get a PDB."""
    docs = [d for _, d in _k8s_docs()]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    for name, dep in deployments.items():
        container = dep["spec"]["template"]["spec"]["containers"][0]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
        refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
        assert refs == {"stream-migrator-settings"}, name  # the secret is not in the env
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert "SM_MONGO_URI" not in env, name
        mount = next(m for m in container["volumeMounts"] if m["name"] == "secrets")
        assert env["SM_MONGO_URI_FILE"] == f"{mount['mountPath']}/mongo-uri", name
        volume = next(
            v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "secrets"
        )
        assert volume["secret"]["secretName"] == "stream-migrator-uris", name
    capture = deployments["stream-migrator-capture"]["spec"]
    assert capture["replicas"] == 1
    assert capture["strategy"]["type"] == "Recreate"
    settings = next(d for d in docs if d["metadata"]["name"] == "stream-migrator-settings")
    transform = deployments["stream-migrator-transform"]["spec"]
    assert transform["replicas"] <= int(settings["data"]["SM_PARTITIONS"])
    pdbs = {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert "stream-migrator-transform" in pdbs
    kinds = {d["kind"] for d in docs}
    assert {"ConfigMap", "Secret", "ServiceMonitor"} <= kinds
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert set(secret["stringData"]) == {"mongo-uri"}
    assert secret["stringData"]["mongo-uri"].startswith("mongodb://")


def test_k8s_servicemonitor_selects_every_metrics_service() -> None:
    """The ServiceMonitor's selector and port match each component's metrics Service."""
    docs = [d for _, d in _k8s_docs()]
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    services = [d for d in docs if d["kind"] == "Service"]
    assert len(services) == 4
    for svc in services:
        labels = svc["metadata"]["labels"]
        assert selector.items() <= labels.items(), svc["metadata"]["name"]
        assert ports <= {p["name"] for p in svc["spec"]["ports"]}
    listed = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())["resources"]
    on_disk = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk


def test_dockerfile_runs_as_non_root_on_a_slim_base() -> None:
    """The worker image is slim, drops root and exposes the health port."""
    text = (REPO / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert bases
    assert all("slim" in b for b in bases), bases
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users
    assert not users[-1].startswith(("root", "0")), users
    assert "EXPOSE 9400" in text
    ignore = (REPO / ".dockerignore").read_text().split()
    assert ignore[0] == "*" or "*" in ignore, ".dockerignore should allow-list the build context"
