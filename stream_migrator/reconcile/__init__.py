"""Reconcile: prove source and target agree."""

from stream_migrator.reconcile.compare import CompareReport, full_compare

__all__ = ["CompareReport", "full_compare"]
