"""Resolve the local stack's Java jars from Maven Central into a cache directory."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from stream_migrator.errors import InfraError
from stream_migrator.progress import Progress

DEPLOY_LOCAL = Path(__file__).resolve().parents[2] / "deploy" / "local"
POM = DEPLOY_LOCAL / "pom.xml"


def java_binary() -> str:
    """The ``java`` to run servers with; a missing or too old Java is one clear sentence."""
    java = shutil.which("java")
    if java is None:
        raise InfraError(
            "Java 17 or newer is needed to run the local Kafka and MongoDB-wire servers, "
            "and no `java` is on PATH: install a JDK 17 (e.g. `apt-get install openjdk-17-jdk`)."
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    text = out.stderr + out.stdout
    major = _java_major(text)
    if major is not None and major < 17:
        raise InfraError(f"{java} is Java {major}; the local stack needs Java 17 or newer.")
    return java


def _java_major(version_text: str) -> int | None:
    for token in version_text.split('"')[1:2]:
        head = token.split(".")[0]
        if head == "1":  # 1.8.0_x style
            return 8
        if head.isdigit():
            return int(head)
    return None


def resolve_jars(
    cache_dir: Path,
    *,
    quiet: bool = False,
    pom: Path = POM,
    what: str = "Kafka and mongo-java-server",
) -> Path:
    """Return a directory holding every jar the stack needs, downloading them once.

    The cache is keyed by the pom's hash, so editing the pom re-resolves and a
    second start needs no network. ``pom`` selects another jar set (Kafka Connect
    uses ``deploy/local/connect/pom.xml``); ``what`` names it in messages.
    """
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    jar_dir = cache_dir / f"jars-{digest}"
    marker = jar_dir / ".complete"
    if marker.exists():
        return jar_dir
    mvn = shutil.which("mvn")
    if mvn is None:
        raise InfraError(
            "Maven (`mvn`) is needed once to download the stack's jars from Maven Central "
            "and is not on PATH: install it (e.g. `apt-get install maven`)."
        )
    java_binary()
    if not quiet:
        print(f"resolving {what} jars from Maven Central into {jar_dir} ...")
    tmp = jar_dir.with_suffix(".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        mvn,
        "-B",  # batch mode: one "Downloaded from ..." line per file, no transfer bars
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}",
        "-DincludeScope=runtime",
    ]
    code, output = _run_counting_downloads(cmd, what, quiet=quiet)
    if code != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InfraError(_explain_mvn_failure(output))
    shutil.rmtree(jar_dir, ignore_errors=True)
    tmp.rename(jar_dir)
    marker.write_text(digest + "\n")
    return jar_dir


def _run_counting_downloads(cmd: list[str], what: str, *, quiet: bool) -> tuple[int, str]:
    """Run Maven; each file it downloads advances a progress bar (log lines off a terminal).

    Returns its exit code and everything it printed (for the error message). The
    number of files is not known beforehand (it depends on what ``~/.m2`` holds), so
    the bar counts files without a total.
    """
    lines: list[str] = []
    with Progress(f"downloading {what} jars", unit="files", json=quiet) as progress:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if downloaded_file(line):
                progress.advance()
        code = proc.wait()
    return code, "".join(lines)


def downloaded_file(line: str) -> bool:
    """True for the line Maven prints in batch mode once a file is downloaded."""
    return line.lstrip().startswith(("Downloaded from ", "[INFO] Downloaded from "))


def _explain_mvn_failure(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if "ERROR" in ln] or output.splitlines()
    first = lines[0][:300] if lines else "(no output)"
    network = (
        "Could not transfer",
        "Unknown host",
        "Connection refused",
        "timed out",
        "Could not resolve",
        "Network is unreachable",
        "resolution",
    )
    if any(word in output for word in network):
        return (
            "cannot download the local stack's jars from Maven Central "
            "(https://repo.maven.apache.org): the registry is unreachable from this machine; "
            f"check the network or a Maven mirror in ~/.m2/settings.xml. Maven said: {first}"
        )
    return f"resolving the local stack's jars with Maven failed: {first}"
