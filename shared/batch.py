"""Batch endpoints (`/{object}/batch/create|update|read`): one result per input, 207 if mixed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Response, jsonify
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.web import ApiError, conflict, current_db


def failure(index: int, error: ApiError) -> dict[str, Any]:
    """The result of one input that was refused, shaped like a problem."""
    result: dict[str, Any] = {"index": index, "status": error.status, "title": error.title}
    if error.detail:
        result["detail"] = error.detail
    if error.errors:
        result["errors"] = error.errors
    return result


def batch_answer(results: list[dict[str, Any]], success_status: int) -> Response:
    """`{"results": [...]}`: the success status when every input succeeded, else 207."""
    all_ok = all(result["status"] == success_status for result in results)
    response = jsonify({"results": results})
    response.status_code = success_status if all_ok else 207
    return response


def run_batch(
    inputs: list[Any],
    apply: Callable[[Session, Any], Any],
    view: Callable[[Any], dict[str, Any]],
    success_status: int,
) -> Response:
    """Apply each input in its own savepoint: one failing input does not undo the others."""
    results = []
    with current_db().session() as session:
        for index, raw in enumerate(inputs):
            try:
                with session.begin_nested():
                    item = view(apply(session, raw))
                results.append({"index": index, "status": success_status, "item": item})
            except ApiError as error:
                results.append(failure(index, error))
            except IntegrityError:
                clash = conflict("The change conflicts with an existing record")
                results.append(failure(index, clash))
    return batch_answer(results, success_status)


def read_batch(ids: list[str], model: Any, view: Callable[[Any], dict[str, Any]]) -> Response:
    """Read records of `model` by id in one query: 200 if all exist, else 207 with 404s."""
    what = model.__name__.lower()
    with current_db().session() as session:
        found = {row.id: row for row in session.scalars(select(model).where(model.id.in_(ids)))}
        results = [
            {"index": index, "status": 200, "item": view(found[record_id])}
            if record_id in found
            else failure(index, ApiError(404, "Not Found", f"{what} {record_id} does not exist"))
            for index, record_id in enumerate(ids)
        ]
    return batch_answer(results, 200)
