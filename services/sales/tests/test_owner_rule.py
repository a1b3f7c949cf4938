"""The owner rule lives in the domain functions: called with a sales user limited to their
own records, create, update and convert refuse to give a record to someone else (403) or
to reach someone else's (404), whatever route (or none) called them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from services.sales import conversion, deals, leads, pipelines, tasks
from services.sales.models import Deal, Lead, Task
from shared.auth import Principal
from shared.web import ApiError

ANA = Principal("00000000-0000-4000-8000-0000000000a1", "sales", "ana@example.com")
BEN = Principal("00000000-0000-4000-8000-0000000000b2", "sales", "ben@example.com")
ANA_WITH_TEAM = Principal(ANA.subject, "sales", ANA.email, team=True)
ADMIN = Principal("00000000-0000-4000-8000-0000000000ad", "admin", "admin@example.com")

NEW = {
    "deals": (deals.create_deal, {"name": "A deal"}),
    "leads": (leads.create_lead, {"first_name": "L", "email": "l@x.example"}),
    "tasks": (tasks.create_task, {"title": "Call back"}),
}
MODELS = {"deals": Deal, "leads": Lead, "tasks": Task}
UPDATE: dict[str, Callable[..., Any]] = {
    "deals": deals.update_deal,
    "leads": leads.update_lead,
    "tasks": tasks.update_task,
}
RENAME = {"deals": {"name": "X"}, "leads": {"first_name": "X"}, "tasks": {"title": "X"}}


def make(db: Any, kind: str, actor: Principal) -> str:
    create, data = NEW[kind]
    with db.session() as session:
        return create(session, dict(data), actor).id


def owner_of(db: Any, kind: str, record_id: str) -> str | None:
    with db.session() as session:
        return session.get(MODELS[kind], record_id).owner_id


def count(session: Any, model: Any) -> int:
    return session.scalar(select(func.count()).select_from(model))


def refused(status: int, call: Callable[[], Any]) -> None:
    with pytest.raises(ApiError) as raised:
        call()
    assert raised.value.status == status


@pytest.mark.parametrize("kind", ["deals", "leads", "tasks"])
@pytest.mark.parametrize("owner", [BEN.subject, None])
def test_a_scoped_user_creates_nothing_for_someone_else_or_for_nobody(db, kind, owner):
    create, data = NEW[kind]
    with db.session() as session:
        refused(403, lambda: create(session, {**data, "owner_id": owner}, ANA))
    with db.session() as session:
        assert count(session, MODELS[kind]) == 0


@pytest.mark.parametrize("kind", ["deals", "leads", "tasks"])
def test_a_scoped_user_cannot_give_their_record_away_in_an_update(db, kind):
    mine = make(db, kind, ANA)
    with db.session() as session:
        record = session.get(MODELS[kind], mine)
        refused(403, lambda: UPDATE[kind](session, record, {"owner_id": BEN.subject}, ANA))
    assert owner_of(db, kind, mine) == ANA.subject


@pytest.mark.parametrize("kind", ["deals", "leads", "tasks"])
def test_a_scoped_user_cannot_change_someone_elses_record(db, kind):
    theirs = make(db, kind, BEN)
    with db.session() as session:
        record = session.get(MODELS[kind], theirs)
        refused(404, lambda: UPDATE[kind](session, record, RENAME[kind], ANA))
        refused(404, lambda: UPDATE[kind](session, record, {"owner_id": ANA.subject}, ANA))
    assert owner_of(db, kind, theirs) == BEN.subject


@pytest.mark.parametrize("kind", ["deals", "leads", "tasks"])
@pytest.mark.parametrize("actor", [ANA_WITH_TEAM, ADMIN, None], ids=["team", "admin", "system"])
def test_team_visibility_admins_and_the_system_may_assign_to_anyone(db, kind, actor):
    create, data = NEW[kind]
    with db.session() as session:
        made = create(session, {**data, "owner_id": BEN.subject}, actor)
        UPDATE[kind](session, made, {"owner_id": ANA.subject}, actor)
        made_id = made.id
    assert owner_of(db, kind, made_id) == ANA.subject


def test_converting_someone_elses_lead_is_not_found(db):
    theirs = make(db, "leads", BEN)
    with db.session() as session:
        refused(404, lambda: conversion.convert_lead(session, theirs, {}, ANA))
    with db.session() as session:
        assert session.get(Lead, theirs).status == "new"
        assert count(session, Deal) == 0


def test_a_conversion_cannot_give_the_new_deal_to_someone_else(db):
    mine = make(db, "leads", ANA)
    spec = {"deal": {"name": "For Ben", "owner_id": BEN.subject}}
    with db.session() as session:
        refused(403, lambda: conversion.convert_lead(session, mine, spec, ANA))
    with db.session() as session:
        assert session.get(Lead, mine).status == "new"
        assert count(session, Deal) == 0


def test_a_scoped_users_conversion_gives_the_deal_to_them(db):
    mine = make(db, "leads", ANA)
    with db.session() as session:
        answer = conversion.convert_lead(session, mine, {}, ANA)
    assert answer["deal"]["owner_id"] == ANA.subject


def _delete_first_stage(db: Any, actor: Principal | None) -> None:
    first, second = (stage_id for stage_id, _name, _p in pipelines.DEFAULT_STAGES[:2])
    with db.session() as session:
        pipeline = pipelines.get_pipeline(session, pipelines.DEFAULT_PIPELINE_ID, for_update=True)
        stage = pipelines.get_stage(session, pipeline.id, first)
        deals.delete_stage(session, pipeline, stage, second, actor)


def stages_of_deals(db: Any) -> set[str]:
    with db.session() as session:
        return set(session.scalars(select(Deal.stage_id)))


def test_a_scoped_user_cannot_move_other_owners_deals_by_deleting_their_stage(db):
    make(db, "deals", ANA)
    make(db, "deals", BEN)
    before = stages_of_deals(db)
    refused(409, lambda: _delete_first_stage(db, ANA))
    assert stages_of_deals(db) == before

    _delete_first_stage(db, ADMIN)
    assert stages_of_deals(db) == {pipelines.DEFAULT_STAGES[1][0]}
