"""gunicorn settings for every service's api process (read from the environment)."""

import multiprocessing
import os
import tempfile

# Metrics from every worker process, summed at /metrics (prometheus_client's multiprocess
# mode). Set before prometheus_client is first imported: it picks its mode at import.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="crm-metrics-"))

# Workers from the CPU count unless told; each makes its own engine in create_app().
workers = int(os.environ.get("GUNICORN_WORKERS", min(2 * multiprocessing.cpu_count() + 1, 8)))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
keepalive = 5
# The longest request line gunicorn takes (its default is 4094): a search's query string
# of many non-ASCII words, percent-encoded, is 12 bytes a character. Longer: 414.
limit_request_line = 8190
preload_app = False  # never share connections across forks
accesslog = None  # the app logs each request as a JSON line with its request id
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "warning")
# Which proxies' X-Forwarded-* to believe is the app's decision (CRM_TRUSTED_PROXIES); by
# default gunicorn would believe X-Forwarded-Proto from anyone calling from 127.0.0.1.
forwarded_allow_ips = ""
# No control socket (gunicorn >= 25's `gunicornc` server): its one default path,
# ~/.gunicorn/gunicorn.ctl, is shared by every master on the machine, so under `crm run`
# six masters took it from each other (and printed an error when two met). Processes are
# managed by signals (honcho, Compose, Kubernetes), never through that socket.
control_socket_disable = True


def child_exit(_server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
