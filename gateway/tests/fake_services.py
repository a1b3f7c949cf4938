"""Stand-in services for the gateway's tests: real HTTP servers in threads.

Each FakeService answers GETs from a table of path -> answer (a status and a JSON body,
or a function of the query parameters), may be made slow, remembers every call, and can
be "stopped": its URL then points at a closed port (connection refused).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server

from gateway.tests.conftest import ensure_account
from shared.auth import Principal, issue_token

Reply = tuple[int, Any]
Answer = Reply | Callable[[dict[str, str]], Reply]
SERVICES = ("contacts", "sales", "support", "marketing", "notifications")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class FakeService:
    """One stand-in service; change `answers`, `delay` or `stopped` in a test."""

    name: str
    live_url: str = ""
    answers: dict[str, Answer] = field(default_factory=dict)
    delay: float = 0.0
    stopped: bool = False
    calls: list[dict[str, Any]] = field(default_factory=list)
    _dead_url: str = field(default_factory=lambda: f"http://127.0.0.1:{closed_port()}")

    @property
    def url(self) -> str:
        return self._dead_url if self.stopped else self.live_url

    def paths(self) -> list[str]:
        return [call["path"] for call in self.calls]

    def reply(self) -> Response:
        args = request.args.to_dict()
        self.calls.append({"path": request.path, "args": args, "headers": dict(request.headers)})
        if self.delay:
            time.sleep(self.delay)
        answer = self.answers.get(request.path)
        if answer is None:
            status, body = 404, {"title": "Not Found", "status": 404}
        else:
            status, body = answer(args) if callable(answer) else answer
        response = jsonify(body)
        response.status_code = status
        return response


def _app(service: FakeService) -> Flask:
    app = Flask(f"fake-{service.name}")
    app.add_url_rule("/<path:path>", "reply", lambda path: service.reply(), methods=["GET"])
    return app


@contextmanager
def running_services() -> Iterator[dict[str, FakeService]]:
    """Every stand-in service, each on its own port, until the block ends."""
    services = {name: FakeService(name) for name in SERVICES}
    servers = []
    for service in services.values():
        server = make_server("127.0.0.1", 0, _app(service), threaded=True)
        service.live_url = f"http://127.0.0.1:{server.server_port}"
        serve = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        serve.start()
        servers.append(server)
    try:
        yield services
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


class ServiceUrls(dict):
    """service_urls that follow the fakes: a stopped service's URL is its closed port."""

    def __init__(self, services: dict[str, FakeService]) -> None:
        super().__init__()
        self._services = services

    def get(self, name: str, default: Any = None) -> Any:
        service = self._services.get(name)
        return service.url if service else default

    def __getitem__(self, name: str) -> str:
        return self._services[name].url


def token_for(app: Flask, role: str = "viewer") -> dict[str, str]:
    principal = Principal(f"{role}-id", role, f"{role}@example.com")
    ensure_account(app, principal.subject, role)
    return {"Authorization": f"Bearer {issue_token(app.extensions['crm.settings'], principal)}"}


def page(*items: Any) -> Reply:
    """A list answer of the services' shape."""
    return 200, {"items": list(items), "next_cursor": None}
