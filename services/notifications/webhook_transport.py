"""Where a webhook POST connects: the address that was checked, never a second DNS answer.

A name is looked up once per attempt, every address it has is checked (`webhooks.
address_problem`), and the connection goes to the first of them: a name that answers a
public address to the check and 127.0.0.1 to the connection (DNS rebinding) reaches the
public one, or nothing. The request still names the host: the Host header, TLS SNI and the
certificate check are for the name in the URL, only the TCP connection is pinned.

The session ignores the environment (`trust_env=False`): no HTTP(S)_PROXY (a proxy would
resolve the name again, and see the payloads), no .netrc credentials, no CA bundle from the
environment.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from services.notifications import webhooks


class RefusedHost(Exception):
    """A host webhooks may not reach (an internal address), or one that does not resolve."""


def checked_address(host: str, allowed: tuple[Any, ...] = ()) -> str:
    """The address to connect to for `host`: looked up once, every answer checked."""
    literal = webhooks.address_of(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError, ValueError) as error:
            raise RefusedHost(f"The host {host} does not resolve ({error}).") from error
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        raise RefusedHost(f"The host {host} has no address.")
    problem = webhooks.address_problem(host, addresses, allowed)
    if problem is not None:
        raise RefusedHost(problem)
    return str(addresses[0])


class PinnedAddressAdapter(HTTPAdapter):
    """Connects to one given address whatever the URL's host; TLS still checks the host."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(max_retries=0)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        hostname = host_params["host"]
        host_params["host"] = self.address  # the pool (and its connections) are per address
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = hostname  # SNI names the host, not the address
            pool_kwargs["assert_hostname"] = hostname  # and the certificate must be for it
        return host_params, pool_kwargs

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        """Send with the URL's host in the Host header (the connection is to an address)."""
        request.headers["Host"] = urlsplit(request.url or "").netloc
        return super().send(request, *args, **kwargs)


def pinned_session(address: str) -> requests.Session:
    """A session whose connections all go to `address`, blind to proxy settings."""
    session = requests.Session()
    session.trust_env = False
    adapter = PinnedAddressAdapter(address)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
