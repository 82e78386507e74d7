"""Probes of the local servers: a free port, a live pid, an answering socket and protocol."""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie child of ours is reaped and counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def port_answers(host: str, port: int) -> bool:
    """Whether ``host:port`` accepts a TCP connection within half a second."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def protocol_ready(name: str, address: str) -> bool:
    """A TCP accept is not enough: ask the server (``mongo``, else Kafka) something real."""
    if name == "mongo":
        from pymongo import MongoClient
        from pymongo.errors import PyMongoError

        client: MongoClient[dict[str, Any]] = MongoClient(
            f"mongodb://{address}/?directConnection=true", serverSelectionTimeoutMS=1000
        )
        try:
            client.admin.command("ping")
            return True
        except PyMongoError:
            return False
        finally:
            client.close()
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": address})
    try:
        meta = admin.list_topics(timeout=2)
        return bool(meta.brokers)
    except Exception:  # noqa: BLE001 - any failure just means "not ready yet"
        return False
