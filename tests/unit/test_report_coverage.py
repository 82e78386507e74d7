"""Reconcile's field-coverage list: summarized beyond a depth and a count, full with --all."""

from __future__ import annotations

import pytest

from stream_migrator.reconcile.report import (
    COVERAGE_MAX_DEPTH,
    COVERAGE_MAX_LINES,
    ReconcileReport,
    render_text,
)


def _coverage_lines(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("field coverage"))
    end = next(n for n, line in enumerate(lines) if line.startswith("buckets "))
    return lines[start + 1 : end]


def _deep(depth: int) -> dict[str, float]:
    """The coverage of one document nested ``depth`` levels: a, a.b, a.b.c, ..."""
    names = [f"f{n}" for n in range(depth)]
    return {".".join(names[: n + 1]): 1.0 for n in range(depth)}


def test_coverage_of_an_80_deep_document_is_summarized_below_the_depth() -> None:
    """One 80-deep document no longer prints 80 lines: the deeper paths fold into one."""
    report = ReconcileReport("m", coverage={"_id": 1.0, **_deep(80)})
    lines = _coverage_lines(render_text(report))
    assert len(lines) <= COVERAGE_MAX_DEPTH + 3
    folded = ".".join(f"f{n}" for n in range(COVERAGE_MAX_DEPTH))
    assert any(
        line.strip().startswith(f"{folded}.*")
        and f"{80 - COVERAGE_MAX_DEPTH} deeper fields" in line
        and "100.00%" in line
        for line in lines
    ), lines
    assert any("reconcile --all" in line for line in lines), lines


def test_coverage_beyond_the_count_says_how_many_it_left_out() -> None:
    """Many shallow fields are cut at the line limit; the last line counts the rest."""
    many = {f"field{n:03}": 1.0 for n in range(COVERAGE_MAX_LINES + 20)}
    lines = _coverage_lines(render_text(ReconcileReport("m", coverage=many)))
    assert len(lines) == COVERAGE_MAX_LINES + 2
    assert lines[-2].strip() == "... 20 more fields (all 100.00%)"
    assert "reconcile --all" in lines[-1]


def test_coverage_shows_fields_below_100_percent_before_cutting() -> None:
    """A field that is not always populated is shown rather than one that always is."""
    many = {f"field{n:03}": 1.0 for n in range(COVERAGE_MAX_LINES + 20)}
    many["zzz_sometimes"] = 0.25
    lines = _coverage_lines(render_text(ReconcileReport("m", coverage=many)))
    assert any(line.split()[0] == "zzz_sometimes" for line in lines)
    assert lines[-2].strip() == "... 21 more fields (all 100.00%)"


def test_coverage_cut_counts_the_hidden_fields_below_100_percent() -> None:
    """When more fields are below 100% than fit, the summary says how many and the lowest."""
    many = {f"half{n:03}": 0.5 for n in range(COVERAGE_MAX_LINES + 5)}
    many |= {f"full{n:03}": 1.0 for n in range(10)}
    many["half999"] = 0.75
    lines = _coverage_lines(render_text(ReconcileReport("m", coverage=many)))
    assert lines[-2].strip() == "... 16 more fields (6 below 100%, lowest 50.00%)"


@pytest.mark.parametrize("depth", [3, 80])
def test_all_fields_lists_every_path(depth: int) -> None:
    """all_fields=True (reconcile --all) prints one line per path, as before."""
    coverage = {"_id": 1.0, **_deep(depth)}
    lines = _coverage_lines(render_text(ReconcileReport("m", coverage=coverage), all_fields=True))
    assert [line.split()[0] for line in lines] == sorted(coverage)


def test_short_coverage_is_printed_whole() -> None:
    """A coverage list within both limits is printed as it is, with no summary line."""
    coverage = {"_id": 1.0, "customer.name": 1.0, "items.[].sku": 0.5}
    lines = _coverage_lines(render_text(ReconcileReport("m", coverage=coverage)))
    assert [line.split()[0] for line in lines] == sorted(coverage)
