"""Per-purpose keys: distinct per purpose and secret, stable, unknown purposes refused."""

import pytest

from shared.keys import PURPOSES, purpose_key


def test_every_purpose_has_its_own_key():
    keys = {purpose_key("s" * 32, purpose) for purpose in PURPOSES}
    assert len(keys) == len(PURPOSES)
    assert all(len(key) == 32 for key in keys)


def test_the_key_follows_the_secret_and_nothing_else():
    assert purpose_key("a" * 32, "csat-link") == purpose_key("a" * 32, "csat-link")
    assert purpose_key("a" * 32, "csat-link") != purpose_key("b" * 32, "csat-link")


def test_an_unknown_purpose_is_refused():
    with pytest.raises(ValueError):
        purpose_key("a" * 32, "anything")
