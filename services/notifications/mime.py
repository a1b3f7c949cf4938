"""What a message looks like on the wire: checked addresses and headers, and proper MIME.

Plain text with an HTML alternative when there is one, `Message-ID` (derived from the log's
id), `Date`, `From`, `To`, `Subject` and the message's extra headers (`List-Unsubscribe`...).
Nothing that could inject a header or a recipient gets through: a line break in an address,
the subject or a header, a second address, or a header the mailer writes itself is a
MessageProblem, and the message is never sent.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass, field
from email.contentmanager import raw_data_manager
from email.header import Header
from email.message import EmailMessage
from email.policy import Compat32
from email.utils import format_datetime, formataddr, parseaddr
from typing import Any, Protocol

from shared.events import utcnow

MAX_ADDRESS = 254
MAX_SENDER = 320
MAX_HEADER_VALUE = 900  # an unfoldable value must still fit SMTP's 998-character line
# Headers the mailer writes itself (or that would add recipients): never taken from a message.
RESERVED_HEADERS = frozenset(
    "bcc cc content-transfer-encoding content-type date from message-id mime-version"
    " received return-path sender subject to".split()
)


class _WirePolicy(Compat32):
    """compat32 with CRLF line ends, writing a short ASCII header as it is: folding every
    header through email.header took most of the time a message needs to be built."""

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        short = isinstance(value, str) and len(name) + len(value) < 76 and value.isascii()
        if short and "\r" not in value and "\n" not in value:
            return f"{name}: {value}{self.linesep}"
        return super()._fold(name, value, sanitize)


# Header values are stored as given (checked first), not parsed back through the registry.
MIME_POLICY = _WirePolicy(linesep="\r\n")
HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # printable ASCII without ':' (RFC 5322)
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
ADDRESS = re.compile(rf"^{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+$")


class MessageProblem(ValueError):
    """A message that cannot be sent as it is (the mailer's InvalidMessage)."""


class MailContent(Protocol):
    """What the mailer needs of a message (a `Message` row or an `Outgoing` snapshot)."""

    id: str
    from_address: str
    to_address: str
    subject: str
    body_text: str
    body_html: str | None
    headers: dict[str, Any]


@dataclass(frozen=True)
class Outgoing:
    """A message as it goes out: a snapshot taken from the delivery log before sending."""

    id: str
    from_address: str
    to_address: str
    subject: str
    body_text: str
    body_html: str | None
    headers: dict[str, Any] = field(default_factory=dict)


def address_problem(address: Any) -> str | None:
    """Why `address` is not one plain ASCII email address (`ada@example.com`), or None."""
    if not isinstance(address, str) or not address:
        return "Give an email address."
    if len(address) > MAX_ADDRESS or not ADDRESS.match(address):
        return "Not a valid email address (one plain address such as ada@example.com)."
    if len(address.partition("@")[0]) > 64:
        return "The part before @ is longer than 64 characters."
    return None


def sender_problem(sender: Any) -> str | None:
    """Why `sender` is not `ada@example.com` or `Name <ada@example.com>` on one line, or None."""
    if not isinstance(sender, str) or len(sender) > MAX_SENDER:
        return f"Give a sender of at most {MAX_SENDER} characters."
    if any(character in sender for character in "\r\n\x00"):
        return "A sender cannot contain line breaks."
    name, address = sender_parts(sender)
    if address_problem(address) is not None or (name and "<" not in sender):
        return 'Give an address, or a name and address: "Shop <news@shop.example>".'
    return None


def header_problem(name: Any, value: Any) -> str | None:
    """Why an extra header cannot be sent as given, or None."""
    if not isinstance(name, str) or not HEADER_NAME.match(name):
        return f"{name!r} is not a header name."
    if name.lower() in RESERVED_HEADERS:
        return f"The header {name} is written by the mailer and cannot be given."
    if not isinstance(value, str) or len(value) > MAX_HEADER_VALUE:
        return f"The header {name} needs a text value of at most {MAX_HEADER_VALUE} characters."
    if "\r" in value or "\n" in value or "\x00" in value:
        return f"The header {name} cannot contain line breaks."
    return None


def _check_fit(message: MailContent) -> None:
    """Refuse what could inject headers or recipients (MessageProblem)."""
    problems = [address_problem(message.to_address)]
    for name, text in (("subject", message.subject), ("sender", message.from_address)):
        if not isinstance(text, str) or "\r" in text or "\n" in text:
            problems.append(f"The {name} cannot contain line breaks.")
    problems += [header_problem(name, value) for name, value in (message.headers or {}).items()]
    found = [problem for problem in problems if problem]
    if found:
        raise MessageProblem("; ".join(found))


@functools.lru_cache(maxsize=64)
def sender_parts(from_address: str) -> tuple[str, str]:
    """(display name, address) of a sender; cached: a service sends from a few addresses."""
    return parseaddr(from_address)


def mail_domain(from_address: str) -> str:
    """The domain of the sender's address (for Message-IDs and EHLO)."""
    return sender_parts(from_address)[1].rpartition("@")[2] or "localhost"


@functools.lru_cache(maxsize=64)
def _from_header(from_address: str) -> str:
    return formataddr(sender_parts(from_address), charset="utf-8")


def message_id_header(message_id: str, from_address: str) -> str:
    """The `Message-ID` of a message: its log id at the sender's domain.

    Derived, not random: the same message always carries the same Message-ID, so a bounce
    or a reply names the log entry, and a receiver can drop a copy it has already seen.
    """
    return f"<{message_id}@{mail_domain(from_address)}>"


def _header_value(value: str) -> str | Header:
    """ASCII as it is; anything else as an RFC 2047 encoded word."""
    return value if value.isascii() else Header(value, "utf-8")


def build_mime(message: MailContent) -> EmailMessage:
    """The MIME message: plain text, an HTML alternative if given, and the envelope headers.

    Headers are checked here (`_check_fit`) and stored as written, with the compat32 policy:
    parsing each one back through the header registry tripled the cost of a message.
    """
    _check_fit(message)
    mime = EmailMessage(policy=MIME_POLICY)
    mime["Message-ID"] = message_id_header(message.id, message.from_address)
    mime["Date"] = format_datetime(utcnow())
    mime["From"] = _from_header(message.from_address)
    mime["To"] = message.to_address
    mime["Subject"] = _header_value(message.subject)
    for name, value in sorted((message.headers or {}).items()):
        mime[name] = _header_value(value)
    # quoted-printable keeps any text 7-bit clean: no server needs 8BITMIME.
    mime.set_content(message.body_text, cte="quoted-printable", content_manager=raw_data_manager)
    if message.body_html:
        mime.add_alternative(
            message.body_html,
            subtype="html",
            cte="quoted-printable",
            content_manager=raw_data_manager,
        )
        # Ours, so the generator need not search the bodies for a safe one: quoted-printable
        # writes "=" as "=3D", so no line of a body can start with "=_".
        mime.set_boundary(f"=_{uuid.uuid4().hex}")
    return mime
