"""The whole system (`crm run`) started once for the security tests, and a user of each role.

Every module that attacks the running system marks itself `xdist_group("crm-run")`, so all
of them share one worker (and this one start), one at a time with the end-to-end tests.
"""

from __future__ import annotations

import base64
import email
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.crm_run import (
    crm_run_environment,
    database_settings,
    free_ports,
    internal_url,
    running_crm,
    service_schemas,
)

TIMEOUT = 10
JWT_SECRET = "security-tests-secret-" + "s" * 40
ADMIN_EMAIL = "root@security.example"
ADMIN_PASSWORD = "correct horse battery"
PASSWORD = "long enough password"
ROLES = ("admin", "sales", "support", "marketing", "viewer")


@dataclass
class System:
    """The running system: the gateway's address, each service's, and its data directory."""

    base: str
    ports: dict[str, int]
    data_dir: Path

    @property
    def api(self) -> str:
        return f"{self.base}/api/v1"

    @property
    def internal(self) -> str:
        """The gateway's internal listener: /ready and /metrics answer only there."""
        return internal_url(self.data_dir)

    def service_api(self, name: str) -> str:
        """A service's own /api/v1, reached directly (around the gateway)."""
        return f"http://127.0.0.1:{self.ports[name]}/api/v1"


@dataclass
class Caller:
    """A signed-in user: their record, password and a session carrying their access token."""

    user: dict[str, Any]
    password: str
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def id(self) -> str:
        return self.user["id"]

    @property
    def email(self) -> str:
        return self.user["email"]

    @property
    def token(self) -> str:
        return self.session.headers["Authorization"].removeprefix("Bearer ")

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", TIMEOUT)
        return self.session.get(url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", TIMEOUT)
        return self.session.post(url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", TIMEOUT)
        return self.session.patch(url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", TIMEOUT)
        return self.session.delete(url, **kwargs)


def _environment(ports: dict[str, int], data_dir: Path, amqp_url: str, prefix: str) -> dict:
    env = crm_run_environment(
        ports,
        data_dir,
        amqp_url,
        prefix,
        CRM_ADMIN_EMAIL=ADMIN_EMAIL,
        CRM_ADMIN_PASSWORD=ADMIN_PASSWORD,
        CRM_JWT_SECRET=JWT_SECRET,
        CRM_NOTIFICATIONS_TICK_SECONDS="0.2",
        # Every test signs in from 127.0.0.1: the per-address sign-in budget is not what
        # these tests are about (the per-email lockout stays as it is).
        CRM_RATE_LIMIT_AUTH="1000",
        CRM_MAX_BODY_BYTES=str(1024 * 1024),
    )
    for name in ("CRM_CORS_ORIGINS", "CRM_TRUSTED_PROXIES"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="package")
def service_databases(postgres_run_url: str) -> Iterator[dict[str, str]]:
    """A PostgreSQL schema per service, as production runs (a database per service)."""
    with service_schemas(postgres_run_url, f"security_{uuid.uuid4().hex[:8]}") as urls:
        yield urls


@pytest.fixture(scope="package")
def system(
    tmp_path_factory: pytest.TempPathFactory, amqp_url: str, service_databases: dict[str, str]
) -> Iterator[System]:
    """`crm run` as real processes on PostgreSQL, once for every security test that needs it."""
    from conftest import delete_broker_names, remember_queue
    from shared.cli import SERVICES

    prefix = f"security-{uuid.uuid4().hex[:8]}."
    for name in (name for name, spec in SERVICES.items() if spec.has_worker):
        for suffix in ("", ".dlq", ".retry.200ms", ".retry.500ms"):
            remember_queue(prefix, f"{prefix}{name}.events{suffix}")
    ports = free_ports(SERVICES)
    root = tmp_path_factory.mktemp("security")
    env = _environment(ports, root / "var", amqp_url, prefix)
    env.update(database_settings(service_databases))
    try:
        with running_crm(env, ports, root / "crm-run.log"):
            yield System(f"http://127.0.0.1:{ports['gateway']}", ports, root / "var")
    finally:
        delete_broker_names(amqp_url, prefix)


def sign_in(system: System, email_address: str, password: str) -> requests.Response:
    return requests.post(
        f"{system.api}/auth/token",
        json={"email": email_address, "password": password},
        timeout=TIMEOUT,
    )


def signed_in(system: System, user: dict[str, Any], password: str) -> Caller:
    answer = sign_in(system, user["email"], password)
    assert answer.status_code == 200, answer.text
    caller = Caller(user, password)
    caller.session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
    return caller


@pytest.fixture(scope="package")
def admin(system: System) -> Caller:
    answer = sign_in(system, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert answer.status_code == 200, answer.text
    caller = Caller({"email": ADMIN_EMAIL}, ADMIN_PASSWORD)
    caller.session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
    caller.user = caller.get(f"{system.api}/me").json()
    return caller


@pytest.fixture(scope="package")
def make_user(system: System, admin: Caller) -> Callable[..., Caller]:
    """A new user of a role, made through the admin API, signed in."""

    def make(role: str, name: str | None = None) -> Caller:
        address = f"{name or role}-{uuid.uuid4().hex[:8]}@security.example"
        body = {"email": address, "name": name or role, "role": role, "password": PASSWORD}
        made = admin.post(f"{system.api}/users", json=body)
        assert made.status_code == 201, made.text
        return signed_in(system, made.json(), PASSWORD)

    return make


@pytest.fixture(scope="package")
def users(make_user: Callable[..., Caller], admin: Caller) -> dict[str, Caller]:
    """One signed-in user of each role, plus a second sales user (`sales_b`)."""
    made = {role: make_user(role) for role in ROLES if role != "admin"}
    made["admin"] = admin
    made["sales_b"] = make_user("sales", "ben")
    return made


def assert_problem(answer: requests.Response, *statuses: int) -> dict[str, Any]:
    """The answer is a problem+json of one of `statuses`; its body."""
    assert answer.status_code in statuses, (answer.status_code, answer.text[:500])
    assert answer.headers["Content-Type"].startswith("application/problem+json"), answer.headers
    return answer.json()


def mail_to(system: System, address: str) -> list[EmailMessage]:
    """The messages the SMTP catcher kept for one recipient, oldest first."""
    directory = system.data_dir / "mail"
    if not directory.is_dir():
        return []
    kept = [
        email.message_from_bytes(path.read_bytes(), policy=policy.default)
        for path in sorted(directory.glob("*.eml"))
    ]
    return [message for message in kept if message["To"] and address in message["To"]]


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A JWT's header, claims and signature (unverified)."""
    header, claims, signature = token.split(".")
    return json.loads(unb64url(header)), json.loads(unb64url(claims)), signature


def unsigned_jwt(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    """A JWT made by hand: any header, any claims, any signature."""
    encoded = [b64url(json.dumps(part).encode()) for part in (header, claims)]
    return ".".join([*encoded, signature])


def forwarded(caller: Caller) -> dict[str, str]:
    """The Authorization the gateway forwards for this caller (a service-call token, signed
    with the key derived from the system's secret): to test a service's own checks."""
    from shared.auth import Principal, issue_service_token
    from shared.config import load_settings

    settings = load_settings("gateway", environ={"CRM_JWT_SECRET": JWT_SECRET})
    principal = Principal(caller.id, caller.user["role"], caller.email)
    return {"Authorization": f"Bearer {issue_service_token(settings, principal)}"}
