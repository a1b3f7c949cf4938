"""The gateway's HTTP client for the services: pooled connections, timeouts, no retries.

It is urllib3, the transport `requests` is built on, used directly. The gateway makes
at least one upstream call for every call it serves (eleven for a customer view), and
requests' own layer (prepared requests, cookies, hooks, settings merged per call) cost
as much CPU as the call itself: 0.74 ms against 0.39 ms a GET (bench/README.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import IO, Any

import urllib3
from urllib3.exceptions import (
    HTTPError,
    NewConnectionError,
    ProtocolError,
)
from urllib3.exceptions import (
    TimeoutError as UpstreamTimeout,
)

# What went wrong with a call, for the caller's answer (503, 504 or 502).
UNREACHABLE, TIMED_OUT, BROKEN = "unreachable", "timed out", "broken"

__all__ = ["BROKEN", "TIMED_OUT", "UNREACHABLE", "HTTPError", "Upstream", "UpstreamError"]


class UpstreamError(Exception):
    """A call that got no usable answer: `kind` says whether the service was unreachable,
    too slow, or answered something that is not HTTP."""

    def __init__(self, kind: str, cause: BaseException) -> None:
        super().__init__(f"{kind}: {type(cause).__name__}")
        self.kind = kind
        self.cause = cause


def failure_kind(error: HTTPError) -> str:
    # NewConnectionError is a ConnectTimeoutError too (urllib3 keeps it so): test it first.
    if isinstance(error, (NewConnectionError, ProtocolError)):
        return UNREACHABLE
    if isinstance(error, UpstreamTimeout):
        return TIMED_OUT
    return BROKEN


class Upstream:
    """One pool of keep-alive connections per service address (one Upstream per app).

    No proxies or .netrc from the environment (a .netrc would replace the caller's
    token), no retries (a write must not be sent twice), no redirects followed (a
    service's redirect is the caller's to follow).
    """

    def __init__(self, pool_size: int = 32, pools: int = 16) -> None:
        self._pools = urllib3.PoolManager(num_pools=pools, maxsize=pool_size, retries=False)

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        timeout: tuple[float, float],
        body: IO[bytes] | Iterable[bytes] | bytes | None = None,
        chunked: bool = False,
        stream: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        """The service's answer; with `stream`, its body is still to be read (and closed).

        Raises UpstreamError when no answer came (the connection failed, the time ran out).
        """
        try:
            return self._pools.request(
                method,
                url,
                headers=dict(headers),
                body=body,
                chunked=chunked,
                timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
                redirect=False,
                preload_content=not stream,
                # A relayed answer keeps its Content-Encoding; one the gateway reads is decoded.
                decode_content=not stream,
            )
        except HTTPError as error:
            raise UpstreamError(failure_kind(error), error) from None

    def get_json(
        self, url: str, headers: Mapping[str, str], timeout: float
    ) -> tuple[int, Any | None]:
        """A GET's status and its JSON body (None when the body is not JSON)."""
        answer = self.send("GET", url, headers=headers, timeout=(timeout, timeout))
        try:
            return answer.status, answer.json()
        except ValueError:  # not JSON (a UnicodeDecodeError is a ValueError too)
            return answer.status, None

    def close(self) -> None:
        self._pools.clear()
