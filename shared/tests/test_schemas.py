"""The shared schema pieces: JSON-only booleans."""

from __future__ import annotations

import pytest
from marshmallow import ValidationError, fields

from shared.schemas import JsonBoolean, StrictSchema


class Flags(StrictSchema):
    done = JsonBoolean()
    maybe = JsonBoolean(allow_none=True)


class Outer(StrictSchema):
    flags = fields.List(fields.Nested(Flags))


@pytest.mark.parametrize("value", [True, False])
def test_json_true_and_false_are_taken(value):
    assert Flags().load({"done": value}) == {"done": value}


@pytest.mark.parametrize("value", [1, 0, "true", "yes", "on", 1.0, [], {}])
def test_anything_else_is_not_a_valid_boolean(value):
    with pytest.raises(ValidationError) as refused:
        Flags().load({"done": value})
    assert refused.value.messages == {"done": ["Not a valid boolean."]}


def test_null_is_taken_only_where_allowed():
    assert Flags().load({"maybe": None}) == {"maybe": None}
    with pytest.raises(ValidationError) as refused:
        Flags().load({"done": None})
    assert refused.value.messages == {"done": ["Field may not be null."]}


def test_nested_booleans_are_as_strict_as_top_level_ones():
    with pytest.raises(ValidationError) as refused:
        Outer().load({"flags": [{"done": True}, {"done": 1}]})
    assert refused.value.messages == {"flags": {1: {"done": ["Not a valid boolean."]}}}


def test_query_string_booleans_stay_plain_booleans():
    assert JsonBoolean().deserialize(True) is True
    assert fields.Boolean().deserialize("true") is True  # what list filters keep using
