"""A TCP proxy on loopback for outage tests: ``cut()`` is the outage, ``restore()`` ends it."""

from __future__ import annotations

import contextlib
import socket
import threading


def _close(sock: socket.socket) -> None:
    # shutdown first: it wakes a thread blocked in accept()/recv() on this socket,
    # which a bare close() does not on Linux (the kernel socket would stay open).
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class TcpProxy:
    """A TCP proxy on 127.0.0.1 to one upstream: ``cut()`` is an outage, ``restore()`` ends it."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._live: set[socket.socket] = set()
        self.port = 0
        self.restore()

    @property
    def uri(self) -> str:
        # directConnection: otherwise the driver would discover the server's own
        # address from its hello reply and bypass the proxy.
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def restore(self) -> None:
        """Listen again (on the same port after the first time)."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        self._acceptor = threading.Thread(
            target=self._accept, args=(listener,), daemon=True, name="proxy-accept"
        )
        self._acceptor.start()

    def cut(self) -> None:
        """Close the listening socket and every live connection; new connects are refused."""
        with self._lock:
            listener, self._listener = self._listener, None
            live, self._live = self._live, set()
        if listener is not None:
            _close(listener)
        if self._acceptor is not None:
            self._acceptor.join(5)
            assert not self._acceptor.is_alive(), "the proxy's accept thread did not stop"
        for sock in live:
            _close(sock)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                downstream, _ = listener.accept()
            except OSError:
                return  # cut
            downstream.settimeout(None)
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                _close(downstream)
                continue
            upstream.settimeout(None)
            with self._lock:
                current = self._listener is listener
                if current:
                    self._live.update((downstream, upstream))
            if not current:  # cut while this connection was being set up
                _close(downstream)
                _close(upstream)
                return
            for src, dst in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(
                    target=self._pump, args=(src, dst), daemon=True, name="proxy-pump"
                ).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._live.discard(src)
                self._live.discard(dst)
            _close(src)
            _close(dst)
