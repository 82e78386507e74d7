"""Render the Grafana dashboard's panels from a real run, without Grafana.

Starts capture and two transform workers on the servers in SM_KAFKA_BOOTSTRAP /
SM_MONGO_URI (or on a local stack it starts), a Prometheus scraping them every
second with the project's alert rules, seeds orders and keeps writing live
changes, stops one worker half-way (its partitions move to the other, and
StreamMigratorWorkerDown fires), then runs every panel query of
deploy/grafana/dashboards/stream-migrator.json over the run through Prometheus's
HTTP API and draws them with matplotlib. Firing alerts are drawn as red spans,
like Grafana's annotations.

    make dashboard-png        # -> docs/dashboard.png
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
from pymongo import MongoClient

from stream_migrator.demo.data import LiveWriter, seed
from stream_migrator.infra import LocalStack
from stream_migrator.observability.local_prometheus import (
    RULES,
    LocalPrometheus,
    free_port,
)

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "stream-migrator.json"


def _servers(stack_dir: Path) -> tuple[str, str, LocalStack | None]:
    if os.environ.get("SM_KAFKA_BOOTSTRAP") and os.environ.get("SM_MONGO_URI"):
        return os.environ["SM_KAFKA_BOOTSTRAP"], os.environ["SM_MONGO_URI"], None
    stack = LocalStack(stack_dir)
    stack.up()
    return stack.kafka_bootstrap(), stack.mongo_uri(), stack


def _start(role: str, env: dict[str, str], port: int, logs: Path) -> subprocess.Popen[bytes]:
    with (logs / f"{role}-{port}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "stream_migrator", role.split("-", maxsplit=1)[0]],
            env={**env, "SM_METRICS_PORT": str(port)},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    bootstrap, mongo_uri, stack = _servers(REPO / ".sm" / "dashboard-stack")
    migration = f"dash-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "SM_KAFKA_BOOTSTRAP": bootstrap,
        "SM_MONGO_URI": mongo_uri,
        "SM_MIGRATION": migration,
        "SM_SOURCE": f"{migration.replace('-', '_')}.orders",
        "SM_TARGET": f"{migration.replace('-', '_')}.orders_v2",
        "SM_METADATA_DB": f"meta_{migration.replace('-', '_')}",
        "SM_PARTITIONS": "6",
        "SM_BATCH_SIZE": "500",
        "SM_LOG_LEVEL": "warning",
    }
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    source = client[env["SM_SOURCE"].split(".")[0]]["orders"]
    seed(source, args.docs, 5, random.Random(1))  # noqa: S311 - synthetic data
    ports = {"capture": free_port(), "transform-a": free_port(), "transform-b": free_port()}
    jobs = {
        "stream-migrator-capture": [f"127.0.0.1:{ports['capture']}"],
        "stream-migrator-transform": [
            f"127.0.0.1:{ports['transform-a']}",
            f"127.0.0.1:{ports['transform-b']}",
        ],
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        with LocalPrometheus(work / "prom", jobs, rules=RULES, rule_for="5s") as prom:
            start = time.time()
            for role, port in ports.items():
                procs[role] = _start(role, env, port, work)
            time.sleep(3)
            writer = LiveWriter(source, args.seconds, args.rate)
            writer.start()
            time.sleep(args.seconds / 2)
            procs["transform-b"].send_signal(signal.SIGTERM)
            print(f"stopped transform-b at +{time.time() - start:.0f} s", flush=True)
            writer.join()
            time.sleep(15)
            end = time.time()
            return _collect(prom, migration, start, end)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        client.close()
        if stack is not None:
            stack.down()


def _collect(prom: LocalPrometheus, migration: str, start: float, end: float) -> dict[str, Any]:
    dash = json.loads(DASHBOARD.read_text())
    panels = []
    for panel in dash["panels"]:
        series = []
        for target in panel["targets"]:
            expr = (
                target["expr"].replace("$__rate_interval", "10s").replace("$migration", migration)
            )
            for labels, values in prom.query_range(expr, start, end, 1.0):
                legend = target.get("legendFormat", "")
                for key, val in labels.items():
                    legend = legend.replace("{{" + key + "}}", val)
                series.append({"legend": legend or expr, "values": values})
        panels.append({"panel": panel, "series": series})
    alerts = prom.query_range('ALERTS{alertstate="firing"}', start, end, 1.0)
    return {"start": start, "end": end, "panels": panels, "alerts": alerts}


def _draw(data: dict[str, Any], out: Path) -> None:
    panels = data["panels"]
    start = data["start"]
    stats = [p for p in panels if p["panel"]["type"] == "stat"]
    series_panels = [p for p in panels if p["panel"]["type"] != "stat"]
    cols = 2
    rows = 1 + math.ceil(len(series_panels) / cols)
    fig = plt.figure(figsize=(16, 3.2 * rows), constrained_layout=True)
    grid = fig.add_gridspec(rows, len(stats) or 1)
    for i, item in enumerate(stats):
        ax = fig.add_subplot(grid[0, i])
        ax.axis("off")
        last = [s["values"][-1][1] for s in item["series"] if s["values"]]
        text = " / ".join(f"{v:g}" for v in last) if last else "no data"
        ax.text(0.5, 0.4, text, ha="center", va="center", fontsize=28, weight="bold")
        ax.set_title(item["panel"]["title"], fontsize=11)
    sub = grid[1:, :].subgridspec(rows - 1, cols)
    for i, item in enumerate(series_panels):
        ax = fig.add_subplot(sub[i // cols, i % cols])
        panel = item["panel"]
        for s in item["series"]:
            xs = [t - start for t, _ in s["values"]]
            ax.plot(xs, [v for _, v in s["values"]], label=s["legend"], linewidth=1.2)
        for labels, values in data["alerts"]:
            times = [t - start for t, _ in values]
            if times:
                ax.axvspan(min(times), max(times), color="red", alpha=0.08)
                ax.annotate(
                    labels.get("alertname", ""),
                    (min(times), 1.0),
                    xycoords=("data", "axes fraction"),
                    fontsize=7,
                    color="red",
                    va="top",
                )
        ax.set_title(panel["title"], fontsize=11)
        ax.set_xlabel("seconds since start", fontsize=8)
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        ax.set_ylabel({"s": "seconds", "ops": "events/s", "percent": "%"}.get(unit, ""), fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if item["series"]:
            ax.legend(fontsize=7, loc="upper right")
        else:
            ax.text(0.5, 0.5, "no data in this run", ha="center", transform=ax.transAxes)
    fig.suptitle("stream-migrator dashboard, rendered from a real run (Prometheus HTTP API)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dashboard.png")
    parser.add_argument("--docs", type=int, default=5000, help="orders seeded before the run")
    parser.add_argument("--seconds", type=float, default=60, help="seconds of live writes")
    parser.add_argument("--rate", type=int, default=150, help="live writes per second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sm-dashboard-") as tmp:
        data = _run(args, Path(tmp))
    _draw(data, args.out)


if __name__ == "__main__":
    main()
