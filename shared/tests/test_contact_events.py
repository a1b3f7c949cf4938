"""The ids a contact.erased event ends, read alike by every service that erases."""

from __future__ import annotations

import uuid

import pytest

from shared.bus import PermanentError
from shared.contact_events import MAX_MERGED_IDS, erased_contact_ids
from shared.testing import make_event

ADA = str(uuid.uuid4())
MERGED = str(uuid.uuid4())


def test_the_person_then_the_merged_ids_each_once_and_canonical():
    data = {"id": ADA.upper(), "merged_ids": [MERGED, MERGED, ADA]}
    assert erased_contact_ids(make_event("contact.erased", data)) == [ADA, MERGED]


def test_without_data_id_the_aggregate_id_names_the_person():
    event = make_event("contact.erased", {}, aggregate_id=ADA)
    assert erased_contact_ids(event) == [ADA]


@pytest.mark.parametrize(
    "data",
    [
        {"id": ADA, "merged_ids": "x"},
        {"id": ADA, "merged_ids": [MERGED] * (MAX_MERGED_IDS + 1)},
        {"id": ADA, "merged_ids": ["not-an-id"]},
        {"id": 42},
    ],
)
def test_a_malformed_event_can_never_be_applied(data):
    with pytest.raises(PermanentError):
        erased_contact_ids(make_event("contact.erased", data))
