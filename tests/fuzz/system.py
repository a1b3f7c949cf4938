"""`crm run` as real processes for the fuzz tests: its settings, start, stop, sign-in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import requests

from tests.crm_run import crm_run_environment, database_settings

ADMIN_EMAIL, ADMIN_PASSWORD = "fuzz-admin@example.com", "fuzz admin password"
TIMEOUT = 30


@dataclass(frozen=True)
class System:
    """A running system: the gateway's address and a session signed in as the admin."""

    base: str
    token: str
    session: requests.Session
    internal: str = ""  # the gateway's /ready and /metrics listener (not its public port)

    @property
    def api(self) -> str:
        return f"{self.base}/api/v1"


def system_environment(
    data_dir: Path, ports: dict[str, int], databases: dict[str, str], amqp: tuple[str, str]
) -> dict[str, str]:
    """`crm run`'s settings: our ports, databases and broker names; no rate limits."""
    return crm_run_environment(
        ports,
        data_dir,
        *amqp,
        **database_settings(databases),
        CRM_ADMIN_EMAIL=ADMIN_EMAIL,
        CRM_ADMIN_PASSWORD=ADMIN_PASSWORD,
        CRM_RATE_LIMITS="off",
        CRM_FORM_RATE_LIMIT="1000000",
        CRM_HTTP_TIMEOUT_SECONDS="20",  # a loaded 2-core machine: no 504 from slowness
        CRM_VIEW_TIMEOUT_SECONDS="10",
    )


def sign_in(base: str, internal: str = "") -> System:
    answer = requests.post(
        f"{base}/api/v1/auth/token",
        json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
        timeout=TIMEOUT,
    )
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return System(base=base, token=token, session=session, internal=internal)
