"""Run configs: validation, overrides, shipped configs, errors that name the bad key or value."""

import pytest

from attnmtl.run.config import (
    apply_overrides,
    dump_config,
    load_config,
    parse_config,
    shipped_configs,
)

SHIPPED = sorted(shipped_configs())


def test_the_expected_configs_are_shipped():
    for name in (
        "default",
        "seed_attn_rnn",
        "seed_attn_transfer_mtl",
        "multidigits",
        "csv_example",
    ):
        assert name in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_loads_and_validates(name):
    config = load_config(name)
    assert config.name
    assert parse_config(__import__("yaml").safe_load(dump_config(config))) == config


def test_overrides_set_nested_keys_with_yaml_values():
    data = apply_overrides(
        {},
        [
            "train.epochs=3",
            "model.encoder_options.hidden_dim=8",
            "data.tasks=[digit, scale]",
            "name=x",
        ],
    )
    assert data == {
        "train": {"epochs": 3},
        "model": {"encoder_options": {"hidden_dim": 8}},
        "data": {"tasks": ["digit", "scale"]},
        "name": "x",
    }
    config = load_config(None, ["train.epochs=3", "weighting.name=equal"])
    assert config.train.epochs == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.epoch=3"], "unknown key 'train.epoch'; expected one of: .*epochs"),
        (["trian.epochs=3"], "unknown key 'trian'; expected one of: .*train"),
        (["train.epochs=-1"], r"train.epochs: .*greater than or equal to 1 \(got -1\)"),
        (["train.batch_size=big"], "train.batch_size: .*integer.*'big'"),
        (["optimizer.name=rmsprop"], "optimizer.name: .*'adamw'.*'rmsprop'"),
        (
            ["model.name=resnet"],
            "model.name: unknown model 'resnet'; expected one of: .*attention_mtl",
        ),
        (["weighting.name=magic"], "weighting.name: unknown weighting 'magic'; expected one of"),
        (["model.hidden=3"], r"unknown key 'model.hidden'; expected one of: .*encoder_options"),
        (["model.head_hidden_dim=abc"], "model.head_hidden_dim: .*'abc'"),
        (["model.tasks=[a]"], "model.tasks is set from the data set"),
        (["data.name=nope"], "data.name: unknown dataset 'nope'"),
        (["train.monitor=digit"], "train.monitor='digit'"),
        (["train"], "expected dotted.key=value"),
        (["train.epochs.x=1"], "'epochs' is not a section"),
    ],
)
def test_bad_configs_give_one_line_errors_naming_the_problem(overrides, message):
    with pytest.raises(ValueError, match=message) as info:
        load_config(None, overrides)
    assert "\n" not in str(info.value)


def test_unknown_config_name_lists_the_shipped_ones(tmp_path):
    with pytest.raises(ValueError, match=r"shipped: .*default"):
        load_config("nonexistent")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ValueError, match="invalid YAML"):
        load_config(str(bad))
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n")
    with pytest.raises(ValueError, match="mapping at the top level"):
        load_config(str(listing))
