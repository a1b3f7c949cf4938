"""`crm run` as real processes for the fuzz tests: its settings, start, stop, sign-in."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

ADMIN_EMAIL, ADMIN_PASSWORD = "fuzz-admin@example.com", "fuzz admin password"
TIMEOUT = 30


@dataclass(frozen=True)
class System:
    """A running system: the gateway's address and a session signed in as the admin."""

    base: str
    token: str
    session: requests.Session

    @property
    def api(self) -> str:
        return f"{self.base}/api/v1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"crm run exited with {process.returncode}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise AssertionError(f"{url} never answered")


def stop_process_group(process: subprocess.Popen) -> None:
    """Stop `crm run` (our own process group: honcho and its children)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def system_environment(
    data_dir: Path, ports: dict[str, int], databases: dict[str, str], amqp: tuple[str, str]
) -> dict[str, str]:
    """`crm run`'s settings: our ports, databases and broker names; no rate limits."""
    env = {
        **os.environ,
        **{f"CRM_{name.upper()}_PORT": str(port) for name, port in ports.items()},
        **{f"{name.upper()}_DATABASE_URL": url for name, url in databases.items()},
        "CRM_DATA_DIR": str(data_dir),
        "CRM_AMQP_URL": amqp[0],
        "CRM_AMQP_PREFIX": amqp[1],
        "CRM_RETRY_DELAYS": "0.2,0.5",
        "CRM_RELAY_IDLE_SECONDS": "0.05",
        "GUNICORN_WORKERS": "2",
        "CRM_ADMIN_EMAIL": ADMIN_EMAIL,
        "CRM_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "CRM_RATE_LIMITS": "off",
        "CRM_FORM_RATE_LIMIT": "1000000",
        "CRM_SMTP_CATCHER_PORT": str(free_port()),
        "CRM_PUBLIC_URL": f"http://127.0.0.1:{ports['gateway']}",
        "CRM_HTTP_TIMEOUT_SECONDS": "20",  # a loaded 2-core machine: no 504 from slowness
        "CRM_VIEW_TIMEOUT_SECONDS": "10",
    }
    env.pop("CRM_SMTP_URL", None)
    return env


def sign_in(base: str) -> System:
    answer = requests.post(
        f"{base}/api/v1/auth/token",
        json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
        timeout=TIMEOUT,
    )
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return System(base=base, token=token, session=session)
