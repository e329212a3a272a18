"""FAKE network faults for the client tests: a loopback TCP relay in front of the real API server.

A real API server does not drop a watch or lose a response on request; this relay does, at the TCP level
(TLS passes through untouched): `cut()` closes every live connection, `pause()` also refuses new ones until
`resume()`, and `lose_responses = n` closes the next n connections as soon as the server starts answering
(the request reached the server, the answer never reaches the client: a timed-out create).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlparse


class FaultyProxy:
    def __init__(self, upstream_url: str) -> None:
        url = urlparse(upstream_url)
        self.upstream = (url.hostname or "127.0.0.1", url.port or 443)
        self.port = 0
        self.connections = 0
        self.lose_responses = 0
        self._lock = threading.Lock()
        self._live: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.resume()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def resume(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def pause(self) -> None:
        """Refuse new connections (the listener is closed) and cut the live ones."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        self.cut()

    def cut(self) -> None:
        with self._lock:
            live, self._live = self._live, []
        for s in live:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.pause()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += 1
                lose = self.lose_responses > 0
                self.lose_responses -= int(lose)
                self._live += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, lose), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, lose: bool) -> None:
        try:
            while data := src.recv(65536):
                if lose:
                    break  # the server answered: drop the answer and the connection
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
