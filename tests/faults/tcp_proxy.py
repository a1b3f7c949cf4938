"""A small threaded TCP proxy a fault test puts between a process and a server it needs.

The test switches it between three behaviours while the process runs:
- pass: bytes flow both ways, as if the proxy were not there;
- drop: every open connection is reset and new ones are reset as soon as accepted;
- stall: connections are accepted and kept, but nothing is forwarded either way (a
  hung network: no error, no bytes);
- pass again (`restore`).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from typing import Any

PASS, DROP, STALL = "pass", "drop", "stall"
TICK_SECONDS = 0.05  # how soon every thread notices a new mode or close()
CHUNK = 65536


def _reset(sock: socket.socket | None) -> None:
    """Close with an RST (linger 0), as a network fault does, rather than a polite FIN."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Listens on 127.0.0.1 (a free port) and forwards each connection to `target`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = PASS
        self.generation = 0  # bumped by drop(): connections of older generations end
        self.accepted = 0
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(TICK_SECONDS)
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="tcp-proxy-accept", daemon=True
        )
        self._acceptor.start()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()

    def drop(self) -> None:
        """Reset every connection now and every new one until restore()."""
        with self._lock:
            self.mode = DROP
            self.generation += 1

    def stall(self) -> None:
        """Keep every connection, forward nothing, until restore() (or drop())."""
        with self._lock:
            self.mode = STALL

    def restore(self) -> None:
        """Forward again (connections that survived a stall carry on)."""
        with self._lock:
            self.mode = PASS

    def close(self) -> None:
        """Stop accepting, end every connection and join every thread."""
        self._closed.set()
        self._acceptor.join(timeout=5)  # first, so no connection starts after the snapshot
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:  # wakes a thread blocked in recv or sendall; it closes its own
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self._listener.close()
        alive = [t.name for t in (self._acceptor, *self._threads) if t.is_alive()]
        assert not alive, f"proxy threads still running: {alive}"

    def _spawn(self, target: Any, name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=f"tcp-proxy-{name}", daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.mode == DROP:
                _reset(client)
                continue
            self.accepted += 1
            self._spawn(self._serve, f"conn-{self.accepted}", client, self.generation)

    def _serve(self, client: socket.socket, generation: int) -> None:
        """One connection: wait out a stall, connect upstream, then pump both ways."""
        upstream = None
        self._track(client)
        try:
            if not self._wait_while_stalled(generation):
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                return
            self._track(upstream)
            self._pump(client, upstream, generation)
        finally:
            with self._lock:
                self._sockets.difference_update((client, upstream))
            _reset(client)
            _reset(upstream)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _wait_while_stalled(self, generation: int) -> bool:
        """True once forwarding may go on; False when the connection must end."""
        while not self._closed.is_set():
            if self.generation != generation or self.mode == DROP:
                return False
            if self.mode == PASS:
                return True
            self._closed.wait(TICK_SECONDS)
        return False

    def _pump(self, client: socket.socket, upstream: socket.socket, generation: int) -> None:
        peers = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                sock.settimeout(5)
                selector.register(sock, selectors.EVENT_READ)
            while self._wait_while_stalled(generation):
                for key, _events in selector.select(TICK_SECONDS):
                    if self.mode != PASS:
                        break  # stalled or dropped between select and recv: forward nothing
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        data = source.recv(CHUNK)
                        if not data:
                            return
                        peers[source].sendall(data)
                    except OSError:
                        return
