"""The whole-system tests' own helpers (tests/crm_run.py) do what their names say."""

from __future__ import annotations

import itertools

import pytest

from tests.crm_run import database_settings, eventually


def test_eventually_answers_the_first_answer_that_holds() -> None:
    counter = itertools.count()
    assert eventually(lambda: next(counter), lambda n: n >= 3, timeout=5, pause=0.01) == 3


def test_eventually_fails_when_time_runs_out_naming_what_and_the_last_answer() -> None:
    with pytest.raises(AssertionError, match=r"waiting for the answer; last: 'no'"):
        eventually(lambda: "no", lambda answer: answer == "yes", 0.1, pause=0.01, what="the answer")


def test_eventually_checks_truth_by_default() -> None:
    assert eventually(lambda: [1], timeout=1) == [1]
    with pytest.raises(AssertionError):
        eventually(lambda: [], timeout=0.1, pause=0.01)


def test_each_service_gets_its_database_setting() -> None:
    assert database_settings({"contacts": "postgresql://x"}) == {
        "CONTACTS_DATABASE_URL": "postgresql://x"
    }
    assert database_settings({}) == {}
