"""Where webhook POSTs may go: no loopback unless opened, no proxy, no DNS rebinding, TLS kept."""
# ruff: noqa: F811 - `receiver` is a fixture, imported from test_webhooks

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3.util.connection
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.notifications import webhook_transport, webhooks
from services.notifications.tests.test_webhooks import (  # noqa: F401 - `receiver` is a fixture
    Receiver,
    _handler_for,
    _Server,
    add_webhook,
    deal_won,
    deliveries,
    fan_out,
    opened_to_loopback,
    receiver,
)
from services.notifications.webhook_delivery import Claim, deliver_due, post_delivery

PUBLIC = "93.184.215.14"  # a public address no test ever connects to
LOOPBACK = webhooks.allowed_networks(["127.0.0.0/8", "::1/128"])


def claim_for(url: str) -> Claim:
    return Claim("delivery-1", "hook-1", url, "secret", "deal.won", '{"id": "e-1"}', 1)


@pytest.fixture
def resolver(monkeypatch) -> dict[str, list[str]]:
    """Names of our own (`*.example.test`): each lookup takes the next scripted answer."""
    answers: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host in answers:
            address = answers[host].pop(0) if len(answers[host]) > 1 else answers[host][0]
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 0))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


@pytest.fixture
def connections(monkeypatch) -> list[str]:
    """Where each webhook connection went; one to the outside is refused, never made."""
    made: list[str] = []
    real = urllib3.util.connection.create_connection

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        made.append(address[0])
        if address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise ConnectionRefusedError(f"test: no traffic to {address[0]}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)
    return made


# --- loopback only when opened ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/hook", "http://localhost/hook", "https://[::1]/", "https://127.9.9.9/"],
)
def test_loopback_is_refused_unless_the_operator_opens_it(url):
    assert "internal address" in webhooks.url_problem(url)
    assert webhooks.url_problem(url, LOOPBACK) is None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "::ffff:127.0.0.1"])
def test_a_delivery_to_a_loopback_host_is_refused_unless_opened(host):
    assert webhooks.host_problem(host, resolve=True) is not None
    assert webhooks.host_problem(host, resolve=True, allowed=LOOPBACK) is None


def test_a_delivery_to_this_machine_is_not_sent_by_default(app, db, receiver):
    add_webhook(db, receiver.url, ["deal.won"])
    fan_out(db, deal_won())
    closed = app.extensions["crm.settings"].with_overrides(http_timeout_seconds=2.0)
    assert deliver_due(db, closed) == 1
    assert receiver.requests == []
    [delivery] = deliveries(db)
    assert delivery.status == "pending" and delivery.last_error.startswith("not sent: ")
    assert deliver_due(db, opened_to_loopback(closed), delivery.next_attempt_at) == 1
    assert len(receiver.posts()) == 1


# --- one DNS answer, checked, is where the connection goes -------------------------------------


def test_a_second_dns_answer_cannot_point_the_connection_inside(resolver, connections, receiver):
    resolver["rebind.example.test"] = [PUBLIC, "127.0.0.1"]  # public to the check, then inside
    outcome = post_delivery(claim_for(f"http://rebind.example.test:{receiver.port}/hook"), 2.0)
    assert connections == [PUBLIC] and receiver.requests == []
    assert outcome.status_code is None and "ConnectionError" in outcome.error


def test_a_name_with_any_inside_address_is_not_connected_to(resolver, connections, receiver):
    resolver["mixed.example.test"] = ["127.0.0.1"]
    outcome = post_delivery(claim_for(f"http://mixed.example.test:{receiver.port}/hook"), 2.0)
    assert connections == [] and receiver.requests == []
    assert (
        outcome.error == "not sent: The host mixed.example.test is an internal address (127.0.0.1)."
    )


def test_a_name_that_does_not_resolve_is_a_failed_attempt(connections):
    outcome = post_delivery(claim_for("https://no-such-host.invalid/hook"), 2.0)
    assert connections == [] and outcome.error.startswith("not sent: ")


def test_proxy_settings_in_the_environment_are_ignored(monkeypatch, receiver):
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens: a used proxy fails
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    outcome = post_delivery(claim_for(receiver.url), 2.0, LOOPBACK)
    assert outcome.delivered, outcome.error
    assert len(receiver.posts()) == 1


# --- TLS still names the host ------------------------------------------------------------------


def _certificates(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA (its certificate: the bundle to verify with) and a server certificate for `name`."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhook test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.fixture
def tls_receiver(tmp_path) -> Iterator[tuple[Receiver, Path, list[str]]]:
    """An https receiver on 127.0.0.1 for `hooks.example.test`; the SNI names it was asked."""
    ca, cert, key = _certificates(tmp_path, "hooks.example.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server_names: list[str] = []
    context.sni_callback = lambda _sock, name, _ctx: server_names.append(name)
    receiver = Receiver()
    server = _Server(("127.0.0.1", 0), _handler_for(receiver))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver, ca, server_names
    server.shutdown()
    server.server_close()


def test_a_pinned_https_post_still_names_and_verifies_the_host(resolver, tls_receiver):
    receiver, ca, server_names = tls_receiver
    resolver["hooks.example.test"] = ["127.0.0.1"]
    url = f"https://hooks.example.test:{receiver.port}/hook"
    outcome = post_delivery(claim_for(url), 5.0, LOOPBACK, verify=str(ca))
    assert outcome.delivered, outcome.error
    [post] = receiver.posts()
    assert post.headers["Host"] == f"hooks.example.test:{receiver.port}"
    assert server_names == ["hooks.example.test"]


def test_a_certificate_for_another_name_is_refused(resolver, tls_receiver):
    receiver, ca, _server_names = tls_receiver
    resolver["other.example.test"] = ["127.0.0.1"]
    url = f"https://other.example.test:{receiver.port}/hook"
    outcome = post_delivery(claim_for(url), 5.0, LOOPBACK, verify=str(ca))
    assert outcome.status_code is None and "SSLError" in outcome.error
    assert receiver.posts() == []


def test_the_checked_address_is_the_first_answer(resolver):
    resolver["twice.example.test"] = [PUBLIC, "127.0.0.1"]
    assert webhook_transport.checked_address("twice.example.test") == PUBLIC
