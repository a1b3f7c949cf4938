"""The secrets `crm run` makes on one machine: random, kept under CRM_DATA_DIR, mode 0600.

No secret lives in the code. On first start `crm run` draws a signing secret and an admin
password, keeps each in a file only its owner may read, and hands both to every process it
starts through the environment; later starts read the same files. A value set in the
environment wins and nothing is written.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import MutableMapping
from pathlib import Path

JWT_SECRET_FILE = "jwt-secret"
ADMIN_PASSWORD_FILE = "admin-password"
# 48 random bytes, URL-safe: far beyond the 32 bytes production requires.
SECRET_BYTES = 48
PASSWORD_BYTES = 18


def kept_secret(path: Path, nbytes: int) -> str:
    """The secret in `path`, made (random, mode 0600) if the file does not exist yet."""
    with contextlib.suppress(FileExistsError):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(nbytes) + "\n")
    os.chmod(path, 0o600)  # a copy restored with looser permissions is tightened again
    return path.read_text().strip()


def provide_local_secrets(data_dir: Path, environ: MutableMapping[str, str]) -> dict[str, Path]:
    """Put CRM_JWT_SECRET and CRM_ADMIN_PASSWORD into `environ` from files under `data_dir`
    unless set there; which of them came from a file, and the file."""
    data_dir.mkdir(parents=True, exist_ok=True)
    kept = {}
    for name, filename, nbytes in (
        ("CRM_JWT_SECRET", JWT_SECRET_FILE, SECRET_BYTES),
        ("CRM_ADMIN_PASSWORD", ADMIN_PASSWORD_FILE, PASSWORD_BYTES),
    ):
        if environ.get(name):
            continue
        path = data_dir / filename
        environ[name] = kept_secret(path, nbytes)
        kept[name] = path
    return kept
