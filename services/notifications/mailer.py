"""Outgoing mail over real SMTP: the server from `CRM_SMTP_URL`, proper MIME, kept connections.

`smtp://[user:pass@]host[:port]` (port 25 by default) speaks plain SMTP and upgrades with
STARTTLS when the server offers it; STARTTLS is required on the submission port 587 and
whenever credentials are given (a password never crosses the network in clear), unless
`?starttls=false` says otherwise; `?starttls=true` requires it on any port.
`smtps://...` (port 465 by default) is TLS from the first byte. Other query parameters:
`timeout` (seconds, default 30) and `cafile` (a private CA to trust). The MIME itself is
built by services/notifications/mime.py.

A failure is sorted by what it says about the message:
- `TransientSmtpError`: not accepted this time (4xx, refused or broken connection, TLS or
  authentication trouble): try again later;
- `PermanentSmtpError`: refused for good (5xx), `hard_bounce` for an unknown mailbox, or the
  message itself is unfit to send (`InvalidMessage`: header injection, bad address);
- `UncertainSmtpError`: the connection broke after the whole message was sent and before the
  server answered: it may have arrived, so it must not be sent again.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from urllib.parse import parse_qsl, unquote, urlsplit

from services.notifications.mime import (
    MailContent,
    MessageProblem,
    address_problem,  # noqa: F401 - offered here too: callers check addresses with it
    build_mime,
    mail_domain,
    sender_parts,
)
from shared.config import Settings

DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
SUBMISSION_PORT = 587
DEFAULT_TIMEOUT = 30.0
CATCHER_PORT = 8025
ENHANCED_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")
USER_UNKNOWN = re.compile(
    r"user unknown|unknown user|no such (user|mailbox|recipient)|mailbox unavailable"
    r"|does not exist|recipient (address )?rejected|invalid recipient",
    re.IGNORECASE,
)
# 5.1.7 and 5.1.8 are about the sender's address, not the recipient's mailbox.
SENDER_STATUSES = {"5.1.7", "5.1.8"}


class SmtpError(Exception):
    """A message was not (certainly) delivered to the SMTP server."""

    def __init__(self, detail: str, code: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code


class TransientSmtpError(SmtpError):
    """Not accepted this time (4xx, connection trouble): the message may be tried again."""


class PermanentSmtpError(SmtpError):
    """Refused for good (5xx); `hard_bounce` when the mailbox does not exist."""

    def __init__(self, detail: str, code: int | None = None, *, hard_bounce: bool = False):
        super().__init__(detail, code)
        self.hard_bounce = hard_bounce


class InvalidMessage(PermanentSmtpError):
    """The message cannot be sent as it is (an injected header, a malformed address)."""


class UncertainSmtpError(SmtpError):
    """The whole message went out but no answer came back: it may have been delivered."""


@dataclass(frozen=True)
class Prepared:
    """A message ready for the wire: envelope addresses and the dot-stuffed DATA payload."""

    message_id: str  # the delivery log's id
    smtp_message_id: str  # its Message-ID header
    sender: str
    recipient: str
    payload: bytes


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to reach the SMTP server."""

    host: str
    port: int
    implicit_tls: bool = False
    starttls: str = "auto"  # "auto", "always" or "never"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT
    cafile: str | None = None

    @property
    def requires_starttls(self) -> bool:
        if self.implicit_tls or self.starttls == "never":
            return False
        return self.starttls == "always" or self.port == SUBMISSION_PORT or bool(self.username)


def parse_smtp_url(url: str) -> SmtpConfig:
    """The SmtpConfig of an `smtp://` or `smtps://` URL; ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError("CRM_SMTP_URL must start with smtp:// or smtps://")
    if not parts.hostname:
        raise ValueError("CRM_SMTP_URL names no host")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - {"starttls", "timeout", "cafile"})
    if unknown:
        raise ValueError(f"CRM_SMTP_URL has unknown parameters: {', '.join(unknown)}")
    starttls = {"true": "always", "false": "never", None: "auto"}.get(options.get("starttls"))
    if starttls is None or (starttls == "always" and parts.scheme == "smtps"):
        raise ValueError("starttls must be true or false (and smtps:// is TLS already)")
    return SmtpConfig(
        host=parts.hostname,
        port=parts.port or DEFAULT_PORTS[parts.scheme],
        implicit_tls=parts.scheme == "smtps",
        starttls=starttls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        timeout=float(options.get("timeout", DEFAULT_TIMEOUT)),
        cafile=options.get("cafile") or None,
    )


def catcher_port(settings: Settings) -> int:
    """The local SMTP catcher's port: `CRM_SMTP_CATCHER_PORT`, 8025 by default."""
    return int(settings.extra.get("smtp_catcher_port") or CATCHER_PORT)


def smtp_url(settings: Settings) -> str:
    """`CRM_SMTP_URL`, or the local SMTP catcher `crm run` starts when it is not set."""
    configured = settings.extra.get("smtp_url") or ""
    return configured or f"smtp://127.0.0.1:{catcher_port(settings)}"


# --- answers --------------------------------------------------------------------------------


def _reply_text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())


def classify_reply(code: int, reply: bytes | str, stage: str) -> SmtpError:
    """The error an SMTP answer means: 4xx transient, 5xx permanent (hard bounce for 5.1.x)."""
    text = _reply_text(reply)
    detail = f"{stage}: {code} {text}".strip()
    if 500 <= code < 600:
        enhanced = ENHANCED_STATUS.match(text)
        if enhanced:
            status = enhanced.group(0)
            unknown = status.startswith("5.1.") and status not in SENDER_STATUSES
        else:
            unknown = bool(USER_UNKNOWN.search(text))
        return PermanentSmtpError(detail, code, hard_bounce=unknown and stage != "MAIL FROM")
    return TransientSmtpError(detail, code)


def _quote_periods(payload: bytes) -> bytes:
    """DATA transparency (RFC 5321 4.5.2): a line starting with '.' gets a second one; then
    the end-of-data line."""
    quoted = re.sub(rb"(?m)^\.", b"..", payload)
    if not quoted.endswith(b"\r\n"):
        quoted += b"\r\n"
    return quoted + b".\r\n"


# --- the connection -------------------------------------------------------------------------


class Mailer:
    """Sends messages over one SMTP connection, kept open across a batch (reconnects on failure).

    Not thread-safe: one Mailer per thread. `close()` (or a `with` block) ends the session.
    """

    def __init__(
        self,
        config: SmtpConfig,
        *,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
    ) -> None:
        self.config = config
        self.ssl_context = ssl_context or ssl.create_default_context(cafile=config.cafile)
        self.local_hostname = local_hostname or "localhost"
        self._smtp: smtplib.SMTP | None = None
        self._awaiting = False  # a submitted message's verdict is still to be read

    @classmethod
    def from_settings(cls, settings: Settings) -> Mailer:
        """A Mailer for the configured server (the local catcher when none is)."""
        domain = mail_domain(settings.extra.get("mail_from", ""))
        return cls(parse_smtp_url(smtp_url(settings)), local_hostname=domain)

    def __enter__(self) -> Mailer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(self, message: MailContent) -> None:
        """Deliver one message to the server, or raise the SmtpError saying why not."""
        self.submit(self.prepare(message))
        self.confirm()

    @staticmethod
    def build(message: MailContent) -> EmailMessage:
        """The MIME message (InvalidMessage if it cannot be sent)."""
        try:
            return build_mime(message)
        except MessageProblem as problem:
            raise InvalidMessage(str(problem)) from problem
        except (ValueError, TypeError, UnicodeError) as error:
            raise InvalidMessage(f"cannot build the message: {error!r}") from error

    @classmethod
    def prepare(cls, message: MailContent, mime: EmailMessage | None = None) -> Prepared:
        """The message as it goes on the wire, from its MIME if already `build()`-t."""
        mime = mime if mime is not None else cls.build(message)
        try:
            payload = mime.as_bytes()
        except (ValueError, TypeError, UnicodeError) as error:
            raise InvalidMessage(f"cannot encode the message: {error!r}") from error
        sender = sender_parts(message.from_address)[1]
        return Prepared(
            message.id, mime["Message-ID"], sender, message.to_address, _quote_periods(payload)
        )

    def submit(self, prepared: Prepared, meanwhile: Iterator[object] | None = None) -> None:
        """MAIL, RCPT, DATA and the message, leaving the server's verdict to `confirm()`.

        Raises Transient/PermanentSmtpError when refused before the message went out.
        `meanwhile`, an iterator of the caller's, is advanced one step while each answer is
        awaited: its work overlaps with the server's (the sender builds the next message).
        """
        if self._awaiting:
            raise RuntimeError("confirm() the message in flight before submitting another")
        smtp = self._begin(prepared.sender, meanwhile)
        recipient = f"TO:{smtplib.quoteaddr(prepared.recipient)}"
        try:
            self._command(smtp, "RCPT TO", recipient, (250, 251), meanwhile)
            self._command(smtp, "DATA", "", (354,), meanwhile)
        except (TransientSmtpError, PermanentSmtpError):
            self._reset()
            raise
        try:
            smtp.send(prepared.payload)
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            # The end-of-data line never went out whole: the server cannot have the message.
            self._drop()
            raise TransientSmtpError(f"DATA: connection lost while sending ({error!r})") from error
        # From here on the server may have taken it even if its answer never reaches us.
        self._awaiting = True

    def confirm(self, meanwhile: Iterator[object] | None = None) -> None:
        """The server's verdict on the submitted message: None when it accepted it."""
        if not self._awaiting or self._smtp is None:
            raise RuntimeError("no message is waiting for the server's verdict")
        self._awaiting = False
        _advance(meanwhile)
        try:
            code, reply = self._smtp.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            self._drop()
            raise UncertainSmtpError(
                f"DATA: connection lost after the message was sent ({error!r})"
            ) from error
        if code != 250:
            self._reset()
            raise classify_reply(code, reply, "DATA")

    def close(self) -> None:
        """End the SMTP session politely (QUIT), or just drop a broken connection."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()

    def _begin(self, sender: str, meanwhile: Iterator[object] | None) -> smtplib.SMTP:
        """MAIL FROM on the kept connection; a stale one is replaced once (nothing was sent)."""
        argument = f"FROM:{smtplib.quoteaddr(sender)}"
        for _ in range(2):
            reused = self._smtp is not None
            smtp = self._connection()
            try:
                self._command(smtp, "MAIL FROM", argument, (250,), meanwhile)
                return smtp
            except TransientSmtpError:
                if not reused:
                    self._reset()
                    raise
                self._drop()  # a kept connection the server had closed: once more, afresh
            except PermanentSmtpError:
                self._reset()
                raise
        raise TransientSmtpError("MAIL FROM: the server closed the connection")

    def _command(
        self,
        smtp: smtplib.SMTP,
        stage: str,
        argument: str,
        accepted: tuple[int, ...],
        meanwhile: Iterator[object] | None,
    ) -> None:
        """One command and its answer; a broken connection is transient here (no message
        data went out). `meanwhile` takes a step while the server works on it."""
        try:
            smtp.putcmd(stage.split()[0].lower(), argument)
            _advance(meanwhile)
            code, reply = smtp.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            self._drop()
            raise TransientSmtpError(f"{stage}: connection lost ({error!r})") from error
        if code not in accepted:
            raise classify_reply(code, reply, stage)

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is None:
            self._smtp = self._connect()
        return self._smtp

    def _connect(self) -> smtplib.SMTP:
        """A fresh session: connect, EHLO, STARTTLS when wanted, AUTH when configured."""
        config, smtp = self.config, None
        try:
            if config.implicit_tls:
                smtp = smtplib.SMTP_SSL(
                    config.host,
                    config.port,
                    local_hostname=self.local_hostname,
                    timeout=config.timeout,
                    context=self.ssl_context,
                )
            else:
                smtp = smtplib.SMTP(
                    config.host,
                    config.port,
                    local_hostname=self.local_hostname,
                    timeout=config.timeout,
                )
            self._secure_and_login(smtp)
            return smtp
        except (smtplib.SMTPException, OSError) as error:
            if smtp is not None:
                smtp.close()
            raise TransientSmtpError(
                f"cannot open an SMTP session with {config.host}:{config.port}: {_describe(error)}"
            ) from error

    def _secure_and_login(self, smtp: smtplib.SMTP) -> None:
        config = self.config
        smtp.ehlo()
        offered = smtp.has_extn("starttls")
        if not config.implicit_tls and config.starttls != "never" and offered:
            smtp.starttls(context=self.ssl_context)
            smtp.ehlo()
        elif config.requires_starttls:
            raise smtplib.SMTPNotSupportedError("the server does not offer STARTTLS")
        if config.username:
            _login(smtp, config.username, config.password or "")

    def _reset(self) -> None:
        """RSET after a refused message, so the session can carry the next; drop it if broken."""
        if self._smtp is None:
            return
        try:
            code, _ = self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            code = 0
        if code != 250:
            self._drop()

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()


def _advance(meanwhile: Iterator[object] | None) -> None:
    if meanwhile is not None:
        next(meanwhile, None)


def _login(smtp: smtplib.SMTP, username: str, password: str) -> None:
    """AUTH PLAIN when offered (one try, inside TLS), else whatever smtplib finds."""
    if "PLAIN" not in smtp.esmtp_features.get("auth", "").upper().split():
        smtp.login(username, password)
        return
    # smtplib's login() would try each offered mechanism in turn after a refusal.
    smtp.user, smtp.password = username, password
    smtp.auth("PLAIN", smtp.auth_plain)


def _describe(error: BaseException) -> str:
    if isinstance(error, smtplib.SMTPResponseException):
        return f"{error.smtp_code} {_reply_text(error.smtp_error)}"
    return repr(error)
