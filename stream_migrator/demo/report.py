"""The demo's report and the process metrics it is made of."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from stream_migrator.reconcile import CompareReport


@dataclass
class DemoReport:
    captured: int
    applied: int
    stale: int
    quarantined: int
    lag: int
    seconds: float
    backlog_seconds: float
    backlog_docs: int
    live_writes: int
    compare: CompareReport

    @property
    def docs_per_second(self) -> float:
        return self.backlog_docs / self.backlog_seconds if self.backlog_seconds else 0.0

    @property
    def ok(self) -> bool:
        return self.compare.mismatches == 0 and self.lag == 0

    def render(self) -> str:
        c = self.compare
        lines = [
            "",
            "== stream-migrator demo report ==",
            f"events captured       {self.captured}",
            f"events applied        {self.applied} written, {self.stale} stale (skipped by the "
            "version guard)",
            f"events quarantined    {self.quarantined}",
            f"consumer lag          {self.lag}",
            f"live writes           {self.live_writes} (inserts, updates, deletes while migrating)",
            f"time taken            {self.seconds:.1f} s (capture start to caught up)",
            f"backlog drained       {self.backlog_docs} seeded documents in "
            f"{self.backlog_seconds:.1f} s = {self.docs_per_second:,.0f} documents/s "
            "(snapshot + transform + write)",
            f"source documents      {c.source_count} ({c.untransformable} untransformable, "
            "in quarantine)",
            f"target documents      {c.target_count}",
            f"full compare          {c.mismatches} mismatches (missing {c.missing}, extra "
            f"{c.extra}, different {c.different})",
            "RESULT                " + ("OK: target matches source" if self.ok else "DIVERGED"),
        ]
        lines += [f"  {e}" for e in c.examples]
        return "\n".join(lines)


def scrape(port: int) -> dict[str, float]:
    """Sum every sample of a process's /metrics by sample name and outcome/op label."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if "outcome" in sample.labels:
                name += ":" + sample.labels["outcome"]
            values[name] = values.get(name, 0.0) + sample.value
    return values
