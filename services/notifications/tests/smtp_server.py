"""A real SMTP server for the tests: aiosmtpd's Controller on a free local port.

It records every message it accepts, can answer 4xx or 5xx for the next N messages (at RCPT
or after DATA), can stall after the data (so the client times out not knowing the verdict),
can speak STARTTLS or TLS from the first byte with a throw-away self-signed certificate, and
can require a login.
"""

from __future__ import annotations

import asyncio
import email
import ipaddress
import socket
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, valid for a day, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Received:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    peer: tuple[Any, ...] = ()  # the client's (host, port): one per connection

    @property
    def message(self) -> EmailMessage:
        """The parsed message (line ends as Python writes them)."""
        text = self.content.replace(b"\r\n", b"\n")
        return email.message_from_bytes(text, policy=policy.default)  # type: ignore[return-value]


@dataclass
class _Script:
    """What the server does with the next messages instead of accepting them."""

    stage: str  # "rcpt", "data" or "stall"
    reply: str
    remaining: int


@dataclass
class SmtpServer:
    """The server; use as a context manager, or start() and stop()."""

    tls: str | None = None  # None, "starttls" or "implicit"
    login: tuple[str, str] | None = None
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.port = free_port()
        self._lock = threading.Lock()
        self._scripts: list[_Script] = []
        self._directory = tempfile.TemporaryDirectory()
        self.certificate: Path | None = None
        self._controller: Controller | None = None

    # --- control ------------------------------------------------------------------------

    def refuse_next(self, count: int, reply: str, stage: str = "data") -> None:
        """Answer `reply` (e.g. "451 4.3.0 Try later") at RCPT or after DATA, `count` times."""
        with self._lock:
            self._scripts.append(_Script(stage, reply, count))

    def stall_next(self, count: int = 1) -> None:
        """Take the next messages' data and never answer (the client times out)."""
        with self._lock:
            self._scripts.append(_Script("stall", "", count))

    @property
    def url(self) -> str:
        scheme = "smtps" if self.tls == "implicit" else "smtp"
        credentials = f"{self.login[0]}:{self.login[1]}@" if self.login else ""
        return f"{scheme}://{credentials}127.0.0.1:{self.port}"

    def client_context(self) -> ssl.SSLContext:
        """A client TLS context trusting this server's certificate."""
        return ssl.create_default_context(cafile=str(self.certificate))

    def messages_for(self, address: str) -> list[Received]:
        with self._lock:
            return [item for item in self.received if address in item.rcpt_tos]

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < count:
            assert time.monotonic() < deadline, f"the SMTP server got {self.count()} of {count}"
            time.sleep(0.02)

    # --- life -----------------------------------------------------------------------------

    def start(self) -> SmtpServer:
        options: dict[str, Any] = {"hostname": "127.0.0.1", "port": self.port}
        if self.tls:
            self.certificate, key = self_signed_certificate(Path(self._directory.name))
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.certificate, key)
            options["ssl_context" if self.tls == "implicit" else "tls_context"] = context
        if self.login:
            options["authenticator"] = self._authenticate
            options["auth_require_tls"] = self.tls is not None
        self._controller = Controller(_Recorder(self), **options)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        self._directory.cleanup()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- what the handler asks ------------------------------------------------------------

    def _authenticate(self, *args: Any) -> AuthResult:
        data = args[-1]
        ok = isinstance(data, LoginPassword) and self.login == (
            data.login.decode(),
            data.password.decode(),
        )
        return AuthResult(success=ok, handled=False)

    def _script_for(self, stage: str) -> _Script | None:
        with self._lock:
            for script in self._scripts:
                if script.stage == stage and script.remaining > 0:
                    script.remaining -= 1
                    return script
            return None

    def _record(self, envelope: Any, peer: Any) -> None:
        with self._lock:
            self.received.append(
                Received(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    envelope.original_content,
                    tuple(peer),
                )
            )


class _Recorder:
    """The aiosmtpd handler: follows the server's script, else accepts and records."""

    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(self, *args: Any) -> str:
        envelope, address = args[2], args[3]
        script = self.server._script_for("rcpt")
        if script is not None:
            return script.reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, _server: Any, session: Any, envelope: Any) -> str:
        script = self.server._script_for("data")
        if script is not None:
            return script.reply
        self.server._record(envelope, session.peer)
        if self.server._script_for("stall") is not None:
            await asyncio.sleep(30)  # accepted, but the answer never comes in time
        return "250 2.0.0 OK: queued"
