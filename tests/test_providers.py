"""Key choice per request: by weight among the keys whose `models` allow the model."""

from collections import Counter

import pytest

from hookway.errors import GatewayError
from hookway.providers import KeyPicker, ProviderKey


def test_keys_are_chosen_by_weight_among_those_allowing_the_model():
    picker = KeyPicker([ProviderKey("heavy", "a", ["*"], 3.0), ProviderKey("light", "b", ["*"], 1.0),
                        ProviderKey("other", "c", ["gpt-*"], 100.0)])
    counts = Counter(picker.pick("llama-3.3-70b").name for _ in range(4000))
    assert set(counts) == {"heavy", "light"}
    assert 0.70 < counts["heavy"] / 4000 < 0.80
    assert Counter(picker.pick("gpt-4o").name for _ in range(200))["other"] > 180


def test_exclude_rotates_to_another_key_and_none_allowed_is_a_403():
    picker = KeyPicker([ProviderKey("k1", "a"), ProviderKey("k2", "b")])
    assert {picker.pick("m", exclude={"k1"}).name for _ in range(50)} == {"k2"}
    only = KeyPicker([ProviderKey("k1", "a", ["claude-*"])])
    with pytest.raises(GatewayError) as info:
        only.pick("llama")
    assert info.value.status == 403 and "llama" in info.value.message


def test_no_keys_means_no_auth():
    assert KeyPicker([]).pick("m") is None
