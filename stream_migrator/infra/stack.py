"""The local stack without Docker: a real Kafka broker (KRaft) and mongo-java-server.

Both run as detached child processes on free loopback ports; their pids, ports
and log files are recorded in ``<state_dir>/stack.json`` so ``infra status`` and
``infra down`` work from any later shell.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import string
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stream_migrator.errors import InfraError
from stream_migrator.infra.jars import DEPLOY_LOCAL, java_binary, resolve_jars
from stream_migrator.infra.probes import free_port, pid_alive, port_answers, protocol_ready

_STATE_FILE = "stack.json"
REPO_ROOT = DEPLOY_LOCAL.parents[1]
DEFAULT_STATE_DIR = REPO_ROOT / ".sm" / "stack"
DEFAULT_CACHE_DIR = REPO_ROOT / ".sm" / "cache"
_LOG4J = f"-Dlog4j2.configurationFile={DEPLOY_LOCAL / 'log4j2.yaml'}"
# TieredStopAtLevel=1 halves broker start-up on 2 cores (5.7 s -> 2.4 s to first TCP accept).
_KAFKA_JVM = [
    "-Xms256m",
    "-Xmx768m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
]
_MONGO_JVM = [
    "-Xms128m",
    "-Xmx3g",  # 200,000 documents + target + oplog (full documents) outgrow 1 GiB
    "-XX:+UseG1GC",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
]


@dataclass(frozen=True)
class ScramUser:
    """A SCRAM user created when the broker's storage is formatted (``--add-scram``)."""

    username: str
    password: str
    mechanism: str = "SCRAM-SHA-512"


@dataclass
class ServerInfo:
    """One running server of the stack."""

    name: str
    pid: int
    host: str
    port: int
    log: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class LocalStack:
    """Start, inspect and stop the local Kafka + MongoDB-wire servers."""

    def __init__(
        self,
        state_dir: Path,
        cache_dir: Path | None = None,
        host: str = "127.0.0.1",
        *,
        oplog_max_entries: int | None = None,
        oplog_impl: str = "bounded",
        sasl_ssl_user: ScramUser | None = None,
    ) -> None:
        """``oplog_max_entries`` bounds the stand-in's oplog (None: the launcher's large default);
        ``oplog_impl`` "library" selects mongo-java-server's own oplog (for A/B measurements);
        ``sasl_ssl_user`` adds a SASL_SSL listener to the broker (a test CA signs its
        certificate, see :meth:`kafka_ca_file`) that this SCRAM user can log in to."""
        self.state_dir = state_dir.resolve()
        self._sasl_ssl_user = sasl_ssl_user
        # Jars are shared by every stack on the machine: the demo's, the tests', yours.
        self.cache_dir = (cache_dir or DEFAULT_CACHE_DIR).resolve()
        self.host = host
        self._mongo_props = mongo_system_properties(oplog_max_entries, oplog_impl)

    # -- state ----------------------------------------------------------------
    @property
    def _state_path(self) -> Path:
        return self.state_dir / _STATE_FILE

    def servers(self) -> dict[str, ServerInfo]:
        """Recorded servers (running or not)."""
        if not self._state_path.exists():
            return {}
        data = json.loads(self._state_path.read_text())
        return {name: ServerInfo(**info) for name, info in data.items()}

    def _save(self, servers: dict[str, ServerInfo]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._state_path.write_text(
            json.dumps({n: asdict(s) for n, s in servers.items()}, indent=2)
        )

    def kafka_bootstrap(self) -> str:
        return self._require("kafka").address

    def kafka_sasl_ssl_bootstrap(self) -> str:
        """The broker's SASL_SSL listener (only with ``sasl_ssl_user``)."""
        return self._require("kafka-sasl-ssl").address

    def kafka_ca_file(self) -> Path:
        """PEM of the test CA that signed the SASL_SSL listener's certificate."""
        return self.state_dir / "tls" / "ca.pem"

    def mongo_uri(self) -> str:
        return f"mongodb://{self._require('mongo').address}/?directConnection=true"

    def _require(self, name: str) -> ServerInfo:
        info = self.servers().get(name)
        if info is None or not pid_alive(info.pid):
            raise InfraError(
                f"the local {name} server is not running (state in {self.state_dir}); "
                "start it with `stream-migrator infra up`"
            )
        return info

    def status(self) -> list[dict[str, Any]]:
        """One row per server: name, address, pid, running, log."""
        rows = []
        for name, info in self.servers().items():
            running = pid_alive(info.pid)
            rows.append(
                {
                    "name": name,
                    "address": info.address,
                    "pid": info.pid,
                    "running": running,
                    "answering": running and port_answers(info.host, info.port),
                    "log": info.log,
                }
            )
        return rows

    # -- lifecycle ------------------------------------------------------------
    def up(
        self,
        *,
        timeout: float = 120.0,
        quiet: bool = False,
        only: frozenset[str] = frozenset({"kafka", "mongo"}),
    ) -> dict[str, ServerInfo]:
        """Start whichever servers of ``only`` are not running yet and wait until they answer."""
        unknown = only - {"kafka", "mongo"}
        if unknown:
            raise InfraError(
                f"unknown local server(s) {sorted(unknown)}: choose kafka and/or mongo"
            )
        servers = {n: s for n, s in self.servers().items() if pid_alive(s.pid)}
        if only <= servers.keys():
            return servers
        java = java_binary()
        jars = resolve_jars(self.cache_dir, quiet=quiet)
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        try:
            if "mongo" in only and "mongo" not in servers:
                servers["mongo"] = self._start_mongo(java, jars)
                self._save(servers)
            if "kafka" in only and "kafka" not in servers:
                servers.update(self._start_kafka(java, jars))
                self._save(servers)
            deadline = time.monotonic() + timeout
            for info in servers.values():
                if info.name != "kafka-sasl-ssl":  # same process as "kafka"
                    self._wait_ready(info, deadline, quiet=quiet)
        except BaseException:
            self.down()
            raise
        return servers

    def down(self, timeout: float = 20.0) -> list[str]:
        """Stop every recorded server (SIGTERM, then SIGKILL after ``timeout``)."""
        stopped = []
        for name, info in self.servers().items():
            if pid_alive(info.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(info.pid, signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while pid_alive(info.pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if pid_alive(info.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(info.pid, signal.SIGKILL)
                stopped.append(name)
        if self._state_path.exists():
            self._state_path.unlink()
        return stopped

    # -- servers ----------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], port: int) -> ServerInfo:
        log_path = self.state_dir / "logs" / f"{name}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.state_dir,
                start_new_session=True,  # own process group: down() signals the whole JVM tree
            )
        return ServerInfo(name, proc.pid, self.host, port, str(log_path))

    def _start_mongo(self, java: str, jars: Path) -> ServerInfo:
        port = free_port(self.host)
        argv = [
            java,
            *_MONGO_JVM,
            *self._mongo_props,
            _LOG4J,
            "-cp",
            f"{jars}/*",
            str(DEPLOY_LOCAL / "MongoServerLauncher.java"),
            self.host,
            str(port),
        ]
        return self._spawn("mongo", argv, port)

    def _start_kafka(self, java: str, jars: Path) -> dict[str, ServerInfo]:
        port = free_port(self.host)
        controller = free_port(self.host)
        data = self.state_dir / "kafka-data"
        props = self.state_dir / "kafka.properties"
        template = (DEPLOY_LOCAL / "kafka" / "server.properties.template").read_text()
        rendered = string.Template(template).substitute(
            NODE_ID="1", BROKER_PORT=port, CONTROLLER_PORT=controller, LOG_DIR=data
        )
        secure_port = free_port(self.host) if self._sasl_ssl_user else None
        scram: list[str] = []
        if self._sasl_ssl_user is not None and secure_port is not None:
            rendered = self._with_sasl_ssl_listener(rendered, secure_port)
            user = self._sasl_ssl_user
            scram = [
                "--add-scram",
                f"{user.mechanism}=[name={user.username},password={user.password}]",
            ]
        props.write_text(rendered)
        classpath = ["-cp", f"{jars}/*"]
        log4j = _LOG4J
        # A fresh data directory on every start: the stack is for tests and demos.
        subprocess.run(["rm", "-rf", str(data)], check=True)
        fmt = subprocess.run(
            [
                java,
                "-Xmx256m",
                log4j,
                *classpath,
                "kafka.tools.StorageTool",
                "format",
                # "=" form: a random id may start with "-", which argparse reads as a flag.
                f"--cluster-id={_cluster_id()}",
                "-c",
                str(props),
                "--standalone",
                *scram,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise InfraError(
                f"formatting Kafka storage failed: {(fmt.stderr or fmt.stdout)[-500:]}"
            )
        argv = [java, *_KAFKA_JVM, log4j, *classpath, "kafka.Kafka", str(props)]
        broker = self._spawn("kafka", argv, port)
        started = {"kafka": broker}
        if secure_port is not None:
            started["kafka-sasl-ssl"] = ServerInfo(
                "kafka-sasl-ssl", broker.pid, self.host, secure_port, broker.log
            )
        return started

    def _with_sasl_ssl_listener(self, rendered: str, secure_port: int) -> str:
        """The broker's properties plus a SASL_SSL (SCRAM) listener with a test CA's certificate.

        The plaintext listener stays, for the broker's own traffic and the readiness probe.
        """
        from stream_migrator.infra.certs import keytool_keystore

        tls = keytool_keystore(self.state_dir / "tls", self.host)
        secure = f"SASL_SSL://{self.host}:{secure_port}"
        lines = []
        for line in rendered.splitlines():
            key = line.split("=", 1)[0]
            if key in ("listeners", "advertised.listeners"):
                lines.append(line.replace("PLAINTEXT://", f"{secure},PLAINTEXT://", 1))
            elif key == "listener.security.protocol.map":
                lines.append(line + ",SASL_SSL:SASL_SSL")
            else:
                lines.append(line)
        jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        lines += [
            "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512",
            f"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={jaas}",
            f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas}",
            "ssl.keystore.type=PKCS12",
            f"ssl.keystore.location={tls.keystore}",
            f"ssl.keystore.password={tls.password}",
            f"ssl.key.password={tls.password}",
        ]
        return "\n".join(lines) + "\n"

    def _wait_ready(self, info: ServerInfo, deadline: float, *, quiet: bool) -> None:
        if not quiet:
            print(f"waiting for {info.name} on {info.address} ...", flush=True)
        while time.monotonic() < deadline:
            if not pid_alive(info.pid):
                tail = Path(info.log).read_text(errors="replace")[-1500:]
                raise InfraError(
                    f"the local {info.name} server exited during start; "
                    f"last log lines ({info.log}):\n{tail}"
                )
            if port_answers(info.host, info.port) and protocol_ready(info.name, info.address):
                return
            time.sleep(0.25)
        raise InfraError(
            f"the local {info.name} server did not answer on {info.address} in time; see {info.log}"
        )


def mongo_system_properties(max_entries: int | None, impl: str = "bounded") -> list[str]:
    """The launcher's ``-D`` options for an oplog bound and implementation (see its header)."""
    if impl not in {"bounded", "library"}:
        raise InfraError(f"unknown oplog implementation {impl!r}: choose 'bounded' or 'library'")
    props = [f"-Dsm.oplog.impl={impl}"]
    if max_entries is not None:
        if max_entries < 1:
            raise InfraError(
                f"oplog bound {max_entries} is not a positive number of entries: give 1 or more"
            )
        props.append(f"-Dsm.oplog.maxEntries={max_entries}")
    return props


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
