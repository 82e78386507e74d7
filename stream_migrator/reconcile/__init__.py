"""Reconcile: prove source and target agree (lag, divergence, field coverage, repair, gate)."""

from stream_migrator.reconcile.compare import CompareReport, full_compare
from stream_migrator.reconcile.report import ReconcileReport, Verdict
from stream_migrator.reconcile.service import gate, run_reconcile
from stream_migrator.reconcile.settings import ReconcileSettings, load_reconcile_settings

__all__ = [
    "CompareReport",
    "ReconcileReport",
    "ReconcileSettings",
    "Verdict",
    "full_compare",
    "gate",
    "load_reconcile_settings",
    "run_reconcile",
]
