"""The tasks HTTP API: tasks and follow-ups, their list, complete and reopen."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, request

from services.sales import tasks
from services.sales.models import Task
from services.sales.schemas import (
    NoBodySchema,
    TaskInSchema,
    TaskListArgsSchema,
    optional_body,
    task_view,
)
from shared.auth import Principal, require_role
from shared.events import utcnow
from shared.pagination import list_params, page_answer, paginate, parse_sort
from shared.web import (
    created_with_etag,
    current_db,
    expected_version,
    invalid,
    load_body,
    no_content,
    parse_args,
    with_etag,
)

tasks_api = Blueprint("tasks", __name__, url_prefix="/api/v1")

task_in = TaskInSchema()


def writer() -> Principal:
    """The caller, if they may change tasks (sales or admin); else 403."""
    return require_role("sales")


task_list_query = TaskListArgsSchema()


@tasks_api.get("/tasks")
def list_tasks() -> Any:
    """Tasks matching the filters (owner, done, overdue, due range, links), paged."""
    args = parse_args(task_list_query, request.args)
    limit, cursor = list_params()
    sort = parse_sort(args.get("sort"), tasks.task_sorts(args), tasks.DEFAULT_SORT)
    now = utcnow()
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session, tasks.list_statement(args, now), sort, Task.id, limit=limit, cursor=cursor
        )
        return page_answer([task_view(task, now) for task in rows], next_cursor)


@tasks_api.post("/tasks")
def create_task() -> Any:
    """Create a task (201); the owner defaults to the caller."""
    actor = writer()
    data = load_body(task_in)
    with current_db().session() as session:
        body = task_view(tasks.create_task(session, data, actor))
    return created_with_etag(body, f"/api/v1/tasks/{body['id']}")


@tasks_api.get("/tasks/<uuid:task_id>")
def get_task(task_id: Any) -> Any:
    """One task, with its version as ETag."""
    with current_db().session() as session:
        return with_etag(task_view(tasks.get_task(session, task_id)))


@tasks_api.patch("/tasks/<uuid:task_id>")
def update_task(task_id: Any) -> Any:
    """Change some fields of a task; `done` completes or reopens it."""
    actor = writer()
    changes = load_body(task_in, partial=True)
    if "id" in changes:
        raise invalid({"id": ["The id cannot change."]})
    with current_db().session() as session:
        task = tasks.get_task(session, task_id, for_update=True)
        tasks.update_task(session, task, changes, actor, expected_version=expected_version())
        body = task_view(task)
    return with_etag(body)


@tasks_api.delete("/tasks/<uuid:task_id>")
def delete_task(task_id: Any) -> Any:
    """Delete a task (204)."""
    writer()
    with current_db().session() as session:
        task = tasks.get_task(session, task_id, for_update=True)
        tasks.delete_task(session, task, expected_version=expected_version())
    return no_content()


no_body_in = NoBodySchema()


def _act(task_id: Any, action: Callable[..., Task]) -> Response:
    writer()
    optional_body(no_body_in)
    version = expected_version()
    with current_db().session() as session:
        task = tasks.get_task(session, task_id, for_update=True)
        body = task_view(action(session, task, expected_version=version))
    return with_etag(body)


@tasks_api.post("/tasks/<uuid:task_id>/complete")
def complete_task(task_id: Any) -> Any:
    """Mark a task done (409 if it is done already)."""
    return _act(task_id, tasks.complete_task)


@tasks_api.post("/tasks/<uuid:task_id>/reopen")
def reopen_task(task_id: Any) -> Any:
    """Mark a done task not done (409 if it is not done)."""
    return _act(task_id, tasks.reopen_task)
