"""The MIME of a message: plain text and HTML alternative, headers, encodings, CRLF."""

from __future__ import annotations

from email import policy
from email.parser import BytesParser
from typing import Any

from services.notifications.mime import build_mime
from services.notifications.tests.test_mailer import SENDER, outgoing


def parse(built: Any) -> Any:
    """A built message as a receiver reads it."""
    wire = built.as_bytes().replace(b"\r\n", b"\n")
    return BytesParser(policy=policy.default).parsebytes(wire)


def test_a_message_is_plain_text_with_an_html_alternative_and_proper_headers():
    message = outgoing(
        subject="Grüße from the CRM",
        body_text="Ünïcode text\n.\nand a lone dot above\n",
        headers={
            "List-Unsubscribe": "<https://crm.example.com/u/abc>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "Reply-To": "support@example.com",
        },
    )
    built = build_mime(message)
    assert built.as_bytes().isascii()  # 7-bit clean: no server needs 8BITMIME
    assert b"\r\n" in built.as_bytes() and b"\n\n" not in built.as_bytes()  # SMTP's CRLF
    mime = parse(built)
    assert mime.get_content_type() == "multipart/alternative"
    plain, html = mime.iter_parts()
    assert plain.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
    assert plain.get_content() == "Ünïcode text\n.\nand a lone dot above\n"
    assert "<b>Ada</b>" in html.get_content()
    assert mime["Message-ID"] == f"<{message.id}@example.com>"
    assert mime["From"] == SENDER and mime["To"] == "ada@example.com"
    assert mime["Subject"] == "Grüße from the CRM" and mime["Date"]
    assert mime["List-Unsubscribe"] == "<https://crm.example.com/u/abc>"
    assert mime["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mime["Reply-To"] == "support@example.com"


def test_non_ascii_names_and_headers_are_encoded_words():
    message = outgoing(from_address="Zoë’s CRM <crm@example.com>", headers={"X-Note": "café"})
    built = build_mime(message)
    assert built.as_bytes().isascii()
    mime = parse(built)
    assert mime["From"] == "Zoë’s CRM <crm@example.com>" and mime["X-Note"] == "café"


def test_a_text_only_message_is_a_single_part():
    mime = parse(build_mime(outgoing(body_html=None)))
    assert mime.get_content_type() == "text/plain"
