"""Downloading the stack's jars reports each file Maven fetched (a stub `mvn` on PATH)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import structlog

from stream_migrator.errors import InfraError
from stream_migrator.infra.jars import downloaded_file, resolve_jars

_STUB = """#!/bin/sh
for arg in "$@"; do
  case "$arg" in -DoutputDirectory=*) out="${arg#-DoutputDirectory=}";; esac
done
echo "[INFO] Scanning for projects..."
for name in a b c; do
  echo "[INFO] Downloading from central: https://repo.maven.apache.org/$name.jar"
  echo "[INFO] Downloaded from central: https://repo.maven.apache.org/$name.jar (12 kB at 1 MB/s)"
done
if [ -n "$FAIL" ]; then echo "[ERROR] Could not transfer artifact x"; exit 1; fi
mkdir -p "$out" && touch "$out/a.jar" "$out/b.jar" "$out/c.jar"
"""


@pytest.fixture
def stub_mvn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    mvn = bin_dir / "mvn"
    mvn.write_text(_STUB)
    mvn.chmod(mvn.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    pom = tmp_path / "pom.xml"
    pom.write_text("<project/>")
    return pom


def test_each_downloaded_file_advances_the_progress(stub_mvn: Path, tmp_path: Path) -> None:
    """Three 'Downloaded from' lines: progress.done says 3 files; the jars are cached."""
    with structlog.testing.capture_logs() as logs:
        jar_dir = resolve_jars(tmp_path / "cache", pom=stub_mvn, quiet=True, what="test")
    assert sorted(p.name for p in jar_dir.glob("*.jar")) == ["a.jar", "b.jar", "c.jar"]
    done = [e for e in logs if e["event"] == "progress.done"]
    assert len(done) == 1
    assert done[0]["done"] == 3
    assert done[0]["unit"] == "files"
    assert done[0]["task"] == "downloading test jars"


def test_a_failed_download_is_one_clear_error(
    stub_mvn: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Maven's failure is explained from its own output, nothing half-cached."""
    monkeypatch.setenv("FAIL", "1")
    with pytest.raises(InfraError, match="cannot download the local stack's jars"):
        resolve_jars(tmp_path / "cache", pom=stub_mvn, quiet=True)
    assert not list((tmp_path / "cache").glob("jars-*"))


def test_downloaded_file_matches_only_finished_downloads() -> None:
    """'Downloading from' is a start, 'Downloaded from' a finished file."""
    assert downloaded_file("[INFO] Downloaded from central: https://x/a.jar (1 kB at 2 kB/s)")
    assert downloaded_file("Downloaded from central: https://x/a.pom")
    assert not downloaded_file("[INFO] Downloading from central: https://x/a.jar")
    assert not downloaded_file("[INFO] BUILD SUCCESS")
