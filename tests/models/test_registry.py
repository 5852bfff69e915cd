"""Registry and factory: names and arguments checked, with the valid choices named."""

import pytest

from attnmtl.core.registry import Registry
from attnmtl.models import create_model, list_models


def test_presets_are_registered():
    assert {"seed_attn_rnn", "seed_attn_transfer_mtl"} <= set(list_models())


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown model 'seed_rnn'.*seed_attn_rnn"):
        create_model("seed_rnn")


def test_unknown_argument_names_itself_and_the_valid_ones():
    with pytest.raises(ValueError, match=r"'hiden_dim'.*hidden_dim"):
        create_model("seed_attn_rnn", hiden_dim=3)


def test_a_name_registers_once():
    registry: Registry = Registry("thing")
    registry.register("a")(dict)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a")(list)
    assert "a" in registry and registry.names() == ["a"]
