"""`crm run` (what `make run` does) starts clean: no error or warning a newcomer can't act on."""

from __future__ import annotations

import re
import time

import pytest

from shared.cli import SERVICES
from tests.crm_run import crm_run_environment, free_ports, running_crm

pytestmark = pytest.mark.xdist_group("crm-run")

# What a newcomer would read as "something is broken".
NOISE = re.compile(r"error|Error|ERROR|Traceback|WARNING|warning")


def test_a_fresh_crm_run_prints_no_error_or_warning(tmp_path, amqp_url, amqp_prefix):
    from conftest import remember_queue

    ports = free_ports(SERVICES)
    env = crm_run_environment(
        ports,
        tmp_path / "fresh",  # nothing there yet: the first start of a new system
        amqp_url,
        amqp_prefix,
        CRM_ADMIN_EMAIL="boss@example.com",
        CRM_ADMIN_PASSWORD="correct horse",
    )
    env["HOME"] = str(tmp_path / "home")  # where gunicorn would put its control socket
    env.pop("XDG_RUNTIME_DIR", None)
    for name in (name for name, spec in SERVICES.items() if spec.has_worker):
        for suffix in ("", ".dlq", ".retry.200ms", ".retry.500ms"):
            remember_queue(amqp_prefix, f"{amqp_prefix}{name}.events{suffix}")
    log = tmp_path / "crm-run.log"
    with running_crm(env, ports, log):
        time.sleep(3)  # the first seconds after every service answers: timers have run
        lines = log.read_text(errors="replace").splitlines()
    assert [line for line in lines if NOISE.search(line)] == []
    assert any("CRM gateway: http://127.0.0.1" in line for line in lines)
    # Six gunicorn masters once fought over one ~/.gunicorn/gunicorn.ctl (each unlinking the
    # others'), with an error line when two met: no master opens a control socket now.
    assert not (tmp_path / "home" / ".gunicorn").exists()
