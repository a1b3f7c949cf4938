"""The campaigns HTTP API.

`/api/v1/campaigns` {id, name, segment_id, list_id, subject, body_text, body_html,
template, sender, status (draft|scheduled|sending|sent|cancelled), scheduled_at,
launched_at, sent_at, cancelled_at, stats {recipients, requested, sent, opened, clicked,
bounced, failed, unsubscribed, open_rate, click_rate, bounce_rate, unsubscribe_rate},
version, created_at, updated_at}: list (paged, ?status=, ?segment_id=, ?q=, ?sort=),
create (201, Location, ETag), get (ETag), PATCH (draft or scheduled; If-Match), DELETE
(draft only; If-Match).

`POST /campaigns/{id}/launch` {scheduled_at?} answers 202 at once: now (sending: the
worker fans it out) or at a future time (scheduled). A second launch of a campaign that is
sending, sent or cancelled is a 409 and sends nobody anything (send `Idempotency-Key` to
have a retried launch answered with its first 202). `POST /campaigns/{id}/cancel`: a
scheduled campaign, or the rest of a sending one. `GET /campaigns/{id}/recipients`: the
frozen recipients and what became of each email (paged, ?status=).

Every role reads; marketing and admin change. The rules are in campaigns.py.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request
from marshmallow import ValidationError, fields, validate, validates_schema
from sqlalchemy import select

from services.marketing import campaigns
from services.marketing.models import Campaign, CampaignRecipient, Contact
from shared.auth import require_role
from shared.pagination import SortKey, list_params, page_answer, paginate, parse_sort
from shared.schemas import StrictSchema
from shared.search import words_condition
from shared.web import (
    check_version,
    created_with_etag,
    current_db,
    expected_version,
    load_body,
    load_or_422,
    no_content,
    parse_args,
    with_etag,
)

campaigns_api = Blueprint("campaigns", __name__, url_prefix="/api/v1")
BASE = "/campaigns"
CAMPAIGN_SORTS = {
    "name": SortKey("name", Campaign.name),
    "created_at": SortKey("created_at", Campaign.created_at),
    "updated_at": SortKey("updated_at", Campaign.updated_at),
}
MAX_BODY = 200_000  # each recipient's request carries a copy
NOT_BLANK = validate.Regexp(r"^\s*\S", error="Cannot be blank.")
ONE_LINE = validate.Regexp(r"^[^\r\n]*$", error="Cannot contain line breaks.")
SENDER = validate.Regexp(
    r"^(?:[^<>\r\n\"]*<[^@\s<>]+@[^@\s<>]+>|[^@\s<>]+@[^@\s<>]+)$",
    error='Give an address, or a name and address: "Shop <news@shop.example>".',
)


# --- schemas ----------------------------------------------------------------------------


class CampaignPatchSchema(StrictSchema):
    """The fields a client writes; a PATCH gives any of them."""

    name = fields.String(validate=[validate.Length(min=1, max=200), NOT_BLANK])
    segment_id = fields.UUID()
    list_id = fields.UUID(allow_none=True)
    subject = fields.String(allow_none=True, validate=[validate.Length(max=1000), ONE_LINE])
    body_text = fields.String(allow_none=True, validate=validate.Length(max=MAX_BODY))
    body_html = fields.String(allow_none=True, validate=validate.Length(max=MAX_BODY))
    template = fields.String(
        allow_none=True, validate=[validate.Length(min=1, max=200), NOT_BLANK, ONE_LINE]
    )
    sender = fields.String(allow_none=True, validate=[validate.Length(max=320), SENDER])

    @validates_schema
    def one_content(self, data: dict[str, Any], **_: Any) -> None:
        """A template, or a subject and body: not both."""
        if data.get("template") and any(data.get(name) for name in campaigns.BODY_FIELDS):
            raise ValidationError(campaigns.BOTH_CONTENTS, "template")


campaign_patch_in = CampaignPatchSchema()


class CampaignInSchema(CampaignPatchSchema):
    """A new campaign (a draft): a name and a segment; the content may come later."""

    id = fields.UUID(load_default=None)
    name = fields.String(required=True, validate=[validate.Length(min=1, max=200), NOT_BLANK])
    segment_id = fields.UUID(required=True)


campaign_in_in = CampaignInSchema()


class LaunchSchema(StrictSchema):
    """When to send: now (no scheduled_at), or at a future moment."""

    scheduled_at = fields.AwareDateTime(allow_none=True, load_default=None)


launch_in = LaunchSchema()


class CampaignListArgsSchema(StrictSchema):
    status = fields.String(validate=validate.OneOf(campaigns.STATUSES))
    segment_id = fields.UUID()
    q = fields.String(validate=validate.Length(max=200))
    sort = fields.String()
    limit = fields.String()
    cursor = fields.String()


campaign_list_query = CampaignListArgsSchema()


class RecipientArgsSchema(StrictSchema):
    status = fields.String(validate=validate.OneOf(campaigns.RECIPIENT_STATUSES))
    limit = fields.String()
    cursor = fields.String()


recipient_query = RecipientArgsSchema()


# --- HTTP -------------------------------------------------------------------------------


def writer() -> None:
    """Marketing and admins change campaigns; else 403."""
    require_role("marketing")


def _answer(campaign: Campaign, status: int = 200) -> Any:
    return with_etag(campaigns.campaign_view(campaign), status)


@campaigns_api.get(BASE)
def list_campaigns() -> Any:
    """Campaigns, newest first (or ?sort=), filtered by ?status=, ?segment_id=, ?q=, paged."""
    args = parse_args(campaign_list_query)
    limit, cursor = list_params()
    sort = parse_sort(args.get("sort"), CAMPAIGN_SORTS, "-created_at")
    statement = select(Campaign)
    if "status" in args:
        statement = statement.where(Campaign.status == args["status"])
    if "segment_id" in args:
        statement = statement.where(Campaign.segment_id == args["segment_id"])
    statement = statement.where(words_condition(args.get("q"), Campaign.name))
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session, statement, sort, Campaign.id, limit=limit, cursor=cursor
        )
        return page_answer([campaigns.campaign_view(row) for row in rows], next_cursor)


@campaigns_api.post(BASE)
def create() -> Any:
    """Create a draft (201, Location, ETag)."""
    writer()
    data = load_body(campaign_in_in)
    with current_db().session() as session:
        body = campaigns.campaign_view(campaigns.create_campaign(session, data))
    return created_with_etag(body, f"/api/v1{BASE}/{body['id']}")


@campaigns_api.get(f"{BASE}/<uuid:campaign_id>")
def get(campaign_id: Any) -> Any:
    """One campaign with its stats, its version as ETag."""
    with current_db().session() as session:
        return _answer(campaigns.get_campaign(session, campaign_id))


@campaigns_api.patch(f"{BASE}/<uuid:campaign_id>")
def update(campaign_id: Any) -> Any:
    """Change a draft or scheduled campaign (If-Match honoured)."""
    writer()
    changes, version = load_body(campaign_patch_in), expected_version()
    with current_db().session() as session:
        campaign = campaigns.get_campaign(session, campaign_id, for_update=True)
        campaigns.update_campaign(session, campaign, changes, expected_version=version)
        return _answer(campaign)


@campaigns_api.delete(f"{BASE}/<uuid:campaign_id>")
def delete(campaign_id: Any) -> Any:
    """Delete a draft (204, If-Match honoured)."""
    writer()
    version = expected_version()
    with current_db().session() as session:
        campaign = campaigns.get_campaign(session, campaign_id, for_update=True)
        campaigns.delete_campaign(session, campaign, expected_version=version)
    return no_content()


def _optional_body(schema: StrictSchema) -> Any:
    """An optional JSON body: none at all reads as {}."""
    if not request.get_data(cache=True):
        return load_or_422(schema, {})
    return load_body(schema)


@campaigns_api.post(f"{BASE}/<uuid:campaign_id>/launch")
def launch(campaign_id: Any) -> Any:
    """Send now or at {scheduled_at}: 202 at once (the worker fans out); 409 if launched."""
    writer()
    data, version = _optional_body(launch_in), expected_version()
    with current_db().session() as session:
        campaign = campaigns.get_campaign(session, campaign_id, for_update=True)
        check_version(campaign.version, version)
        campaigns.launch_campaign(session, campaign, data["scheduled_at"])
        return _answer(campaign, 202)


strict_in = StrictSchema()


@campaigns_api.post(f"{BASE}/<uuid:campaign_id>/cancel")
def cancel(campaign_id: Any) -> Any:
    """Cancel a scheduled campaign, or stop a sending one; 409 otherwise."""
    writer()
    _optional_body(strict_in)
    with current_db().session() as session:
        campaign = campaigns.get_campaign(session, campaign_id, for_update=True)
        check_version(campaign.version, expected_version())
        return _answer(campaigns.cancel_campaign(session, campaign))


@campaigns_api.get(f"{BASE}/<uuid:campaign_id>/recipients")
def recipients(campaign_id: Any) -> Any:
    """The frozen recipients by contact id: {contact_id, email, status, message_id, ...}."""
    args = parse_args(recipient_query)
    limit, cursor = list_params()
    statement = select(CampaignRecipient).where(CampaignRecipient.campaign_id == str(campaign_id))
    if "status" in args:
        statement = statement.where(CampaignRecipient.status == args["status"])
    with current_db().session() as session:
        campaigns.get_campaign(session, campaign_id)
        rows, next_cursor = paginate(
            session, statement, [], CampaignRecipient.contact_id, limit=limit, cursor=cursor
        )
        ids = [row.contact_id for row in rows]
        found = session.execute(select(Contact.id, Contact.email).where(Contact.id.in_(ids)))
        emails = {row.id: row.email for row in found}
        items = [campaigns.recipient_view(row, emails.get(row.contact_id)) for row in rows]
        return page_answer(items, next_cursor)
