"""The ``/progress`` page of a long-running process."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from stream_migrator.settings import Settings
from stream_migrator.status.reader import StatusReader


class ProgressPage:
    """``/progress`` on a long-running process's HTTP port: the status document as JSON.

    Read at most every ``min_interval_s`` (a dashboard polling every second must not
    turn into a compare of Kafka and MongoDB per poll), the rates from the previous
    reading. One per migration; several make one document keyed by migration.
    """

    def __init__(self, settings: Settings | list[Settings], *, min_interval_s: float = 5.0) -> None:
        many = settings if isinstance(settings, list) else [settings]
        self._keyed = isinstance(settings, list)
        self._readers = [StatusReader(s, first_interval_s=0) for s in many]
        self._min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._body = b""
        self._read_at = 0.0

    def __call__(self, _environ: dict[str, Any]) -> tuple[str, str, bytes]:
        with self._lock:
            if not self._body or time.monotonic() - self._read_at >= self._min_interval_s:
                docs = [reader.read() for reader in self._readers]
                body: Any = {d["migration"]: d for d in docs} if self._keyed else docs[0]
                self._body = json.dumps(body, default=str).encode()
                self._read_at = time.monotonic()
            return "200 OK", "application/json", self._body

    def close(self) -> None:
        for reader in self._readers:
            reader.close()
