"""The metric catalogue: every ``sm_*`` metric the code registers, read from the registry.

docs/operating.md's metric table, the Grafana dashboard check and the alert-rule check
all come from here, so none of them can name a metric the code does not export.
Metrics are defined in several packages (``observability/metrics.py``,
``reconcile/metrics.py``, ``rollout/metrics.py``, ...); :func:`catalogue`
imports every ``stream_migrator`` module first so all of them are registered,
then walks the Prometheus registry.

``python -m stream_migrator.observability.catalogue`` prints that table.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

from prometheus_client import REGISTRY
from prometheus_client.registry import Collector

import stream_migrator

PREFIX = "sm_"
#: Modules whose import has side effects beyond defining things (starting a process).
_SKIP = frozenset({"stream_migrator.__main__"})
#: Series suffixes each metric type exposes next to its base name.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "enum": ("",),
}


@dataclass(frozen=True)
class MetricInfo:
    """One registered metric: its exposed name, kind, label names and help text."""

    name: str
    kind: str
    labels: tuple[str, ...]
    help: str

    @property
    def series(self) -> frozenset[str]:
        """Every series name this metric exposes (``_total``, ``_bucket``, ...)."""
        base = self.name.removesuffix("_total") if self.kind == "counter" else self.name
        return frozenset(base + suffix for suffix in _SUFFIXES.get(self.kind, ("",)))


def import_all() -> None:
    """Import every module of the package, so metrics defined anywhere are registered."""
    for mod in pkgutil.walk_packages(stream_migrator.__path__, "stream_migrator."):
        if mod.name not in _SKIP:
            importlib.import_module(mod.name)


def catalogue() -> list[MetricInfo]:
    """Every ``sm_*`` metric in the default registry, sorted by name."""
    import_all()
    found: dict[str, MetricInfo] = {}
    # The registry keeps no public list of collectors; ``_collector_to_names`` is the
    # documented-by-use map prometheus_client itself walks in ``collect()``.
    collectors: list[Collector] = list(REGISTRY._collector_to_names)
    for collector in collectors:
        labels = tuple(getattr(collector, "_labelnames", ()))
        for family in collector.describe() if hasattr(collector, "describe") else []:
            if not family.name.startswith(PREFIX):
                continue
            name = family.name + "_total" if family.type == "counter" else family.name
            found[name] = MetricInfo(name, family.type, labels, family.documentation)
    return sorted(found.values(), key=lambda info: info.name)


def series_names() -> frozenset[str]:
    """Every series name a query may use: the union of :attr:`MetricInfo.series`."""
    return frozenset(s for info in catalogue() for s in info.series)


def catalogue_table() -> str:
    """docs/operating.md's metric table (a unit test keeps the page and the code equal)."""
    rows = ["| Metric | Kind | Labels | Meaning |", "|---|---|---|---|"]
    for info in catalogue():
        labels = ", ".join(f"`{label}`" for label in info.labels)
        meaning = info.help.replace("|", "\\|")
        rows.append(f"| `{info.name}` | {info.kind} | {labels} | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(catalogue_table())
