"""Where a copy's CPU goes: every local process, the servers' too, per document copied.

Why: on a small machine the stand-in, the broker and the pipeline share the same
cores, so no copy can be faster than ``cores / (CPU every process spends per
document)``. That bound, and the share of it a copy reached, say whether a copy is
slow because it waits (cores left idle: round trips, a serial chain) or because
the machine is full (every core busy: only less CPU per document helps, ours or
the servers'). The share of the bound a copy reached is the share of all cores
its processes kept busy. The servers are found by their listening port, so this works for the
fresh stacks the benchmarks start and for SM_MONGO_URI / SM_KAFKA_BOOTSTRAP on
loopback; servers elsewhere are not measured and the bound is not given.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
_TCP_LISTEN = "0A"  # the st column of /proc/net/tcp


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (all its threads), from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Field 2 (comm) is parenthesised and may hold spaces: split after its last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # fields 14 and 15 of stat(5)


def listener_pid(port: int) -> int | None:
    """The pid of the local process listening on TCP ``port`` (None: none of ours is)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == _TCP_LISTEN and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    return int(proc.name)
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return None


def _host_port(address: str) -> tuple[str, int] | None:
    match = re.match(r"^(?:mongodb://)?(?:[^@/]*@)?(\[[^\]]+\]|[^:/,?]+):(\d+)", address)
    return (match.group(1), int(match.group(2))) if match else None


def server_pids(mongo_uri: str, kafka_bootstrap: str) -> dict[str, int]:
    """``{"stand-in": pid, "Kafka": pid}`` for the servers that run on this machine."""
    pids = {}
    for name, address in (
        ("stand-in", mongo_uri),
        ("Kafka", kafka_bootstrap.split(",", maxsplit=1)[0]),
    ):
        where = _host_port(address)
        if where is not None and where[0] in _LOOPBACK:
            pid = listener_pid(where[1])
            if pid is not None:
                pids[name] = pid
    return pids


class MachineMeter:
    """The share of all cores busy (anything not idle or waiting on I/O) from now on."""

    def __init__(self) -> None:
        self._start = _machine_jiffies()

    def busy(self) -> float:
        total, idle = _machine_jiffies()
        spent = total - self._start[0]
        return 0.0 if spent <= 0 else 1 - (idle - self._start[1]) / spent


def _machine_jiffies() -> tuple[int, int]:
    """(all, idle + iowait) jiffies of every core, from the first line of /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values), values[3] + values[4]


class CpuMeter:
    """CPU seconds each of a set of processes spends from now on."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._start = {name: (pid, cpu_seconds(pid)) for name, pid in pids.items()}

    def spent(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) - at for name, (pid, at) in self._start.items()}

    def shares(self, seconds: float) -> dict[str, float]:
        """The share of all cores each group kept busy over ``seconds`` (a group: the
        first word of the processes' names, so ``writer 0`` and ``writer 1`` add up)."""
        capacity = max(seconds, 1e-9) * (os.cpu_count() or 1)
        out: dict[str, float] = {}
        for name, cpu in self.spent().items():
            group = name.split(" ", 1)[0]
            out[group] = out.get(group, 0.0) + cpu / capacity
        return out


@dataclass(frozen=True)
class Budget:
    """The CPU every process spent while ``docs`` documents were copied in ``seconds``."""

    docs: int
    seconds: float
    cpu_s: Mapping[str, float]  # process -> CPU seconds in the timed window
    servers_measured: bool  # the stand-in's and the broker's CPU are in cpu_s

    @property
    def us_per_doc(self) -> float:
        return 1e6 * sum(self.cpu_s.values()) / max(1, self.docs)

    @property
    def bound_docs_per_s(self) -> float | None:
        """The fastest copy this machine's cores allow at this CPU per document."""
        if not self.servers_measured or not self.us_per_doc:
            return None
        return (os.cpu_count() or 1) * 1e6 / self.us_per_doc

    @property
    def cores_busy(self) -> float | None:
        """The share of all cores these processes kept busy: the copy's rate over the bound."""
        bound = self.bound_docs_per_s
        return None if bound is None else (self.docs / self.seconds) / bound

    def describe(self) -> str:
        parts = " + ".join(
            f"{name} {1e6 * cpu / max(1, self.docs):.0f}" for name, cpu in self.cpu_s.items()
        )
        text = f"{parts} = {self.us_per_doc:.0f} µs per document"
        bound, busy = self.bound_docs_per_s, self.cores_busy
        if bound is None or busy is None:
            return text + " (servers not on this machine: no bound)"
        cores = os.cpu_count() or 1
        return (
            f"{text}; {100 * busy:.0f} % of the {cores} cores busy "
            f"(all {cores} at this CPU per document: {bound:,.0f}/s)"
        )
