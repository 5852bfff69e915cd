"""Attention figures draw the weights where they belong; TensorBoard gets one image per task."""

import numpy as np
import pytest
import torch

from attnmtl.data import create_dataset
from attnmtl.models import create_model
from attnmtl.report import (
    AttentionExamples,
    attention_figure,
    attention_note,
    collect_attention,
    log_attention_images,
)
from attnmtl.report.attention import map_shape, spatial_map


def _examples(layout, inputs, attention, gates=False, lengths=None):
    n = inputs.shape[0]
    return AttentionExamples(
        layout=layout,
        inputs=inputs,
        lengths=lengths,
        attention={"t": attention},
        gates=gates,
        labels={"t": ["1"] * n},
        preds={"t": ["2"] * n},
    )


def test_sequence_bars_are_the_weights_over_the_steps_they_cover():
    inputs = np.arange(2 * 8, dtype=np.float32).reshape(2, 8, 1)
    weights = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.6, 0.0, 0.0]])  # L = 4 over T = 8
    figure = attention_figure(_examples("sequence", inputs, weights), "t")
    bottom = figure.axes[2:]  # row-major: the inputs' row, then the attention row
    steps = [ax.patches[0].get_data() for ax in bottom]  # one filled step patch per example
    # position j covers steps [2j, 2j + 2), i.e. [2j - 0.5, 2j + 1.5) in plot coordinates
    assert [list(s.edges) for s in steps] == [[-0.5, 1.5, 3.5, 5.5, 7.5]] * 2
    assert [list(s.values) for s in steps] == [list(w) for w in weights]
    shading = figure.axes[0].images[0].get_array()  # the input shaded by the same weights
    assert np.allclose(shading[0, :, 3], 0.3 * weights[0] / 0.4)
    assert figure.axes[0].get_title() == "#0: true 1, pred 2"


def test_padded_steps_are_cut_and_queries_averaged():
    inputs = np.zeros((1, 5, 1), dtype=np.float32)
    weights = np.array([[[0.2, 0.8, 0.0, 0.0, 0.0], [0.6, 0.4, 0.0, 0.0, 0.0]]])  # (N, Q, T)
    figure = attention_figure(_examples("sequence", inputs, weights, lengths=[2]), "t")
    values, edges, _ = figure.axes[1].patches[0].get_data()
    assert list(values) == pytest.approx([0.4, 0.6]) and list(edges) == [-0.5, 0.5, 1.5]
    assert "mean of 2 queries" in figure.get_suptitle()


@pytest.mark.parametrize(
    ("length", "shape"),
    [(112, (8, 14)), (14, (1, 14)), (28, (4, 7)), (12, (3, 4)), (7, (1, 7))],
)
def test_flattened_maps_take_the_images_aspect_ratio(length, shape):
    assert map_shape(length, 8, 14) == shape


def test_a_query_axis_is_told_apart_from_a_map_by_its_aspect_ratio():
    maps = np.arange(2 * 4 * 7, dtype=float).reshape(2, 4, 7)
    assert spatial_map(maps[0], 8, 14)[0].shape == (4, 7)  # (h, w), ratio 4/7 = 8/14
    flat = maps.reshape(2, 28)  # (Q, S): ratio 2/28 is far from 8/14
    averaged, queries = spatial_map(flat, 8, 14)
    assert queries == 2 and np.allclose(averaged, maps.mean(0))


def test_the_overlay_is_the_map_scaled_to_its_maximum():
    inputs = np.random.default_rng(0).random((1, 1, 4, 6)).astype(np.float32)
    weights = np.zeros((1, 24))
    weights[0, 7] = 0.5  # row 1, column 1 of the (4, 6) map
    weights[0, 0] = 0.25
    figure = attention_figure(_examples("image", inputs, weights), "t")
    overlay = figure.axes[1].images[1].get_array()
    expected = np.zeros((4, 6))
    expected[1, 1], expected[0, 0] = 1.0, 0.5
    assert np.allclose(overlay, expected)


def test_mmoe_gates_are_bars_per_expert_and_attention_free_models_are_skipped():
    splits = create_dataset("mnist1d-mt", num_train=20, num_val=10, num_test=10)
    tasks = list(splits.tasks.values())
    mmoe = create_model(
        "mmoe", tasks=tasks, input_shape=(40, 1), num_experts=3, encoder_options={"hidden_dim": 4}
    )
    batch = splits.test.batch(torch.arange(2))
    examples = collect_attention(mmoe, batch, splits.tasks)
    assert examples.kind() == "gate"
    figure = attention_figure(examples, "digit")
    gates = examples.attention["digit"]
    heights = [p.get_height() for p in figure.axes[0].patches]
    assert heights == pytest.approx([*gates[0], *gates[1]], abs=1e-6)
    plain = create_model(
        "hard_sharing", tasks=tasks, input_shape=(40, 1), encoder_options={"hidden_dim": 4}
    )
    examples = collect_attention(plain, batch, splits.tasks)
    assert attention_note(examples, "digit") == "the model has no attention for this task"


class Writer:
    def __init__(self):
        self.images = []

    def add_image(self, tag, image, step, dataformats):
        self.images.append((tag, image, step, dataformats))


def test_tensorboard_gets_one_image_per_task_without_drawing_random_numbers():
    splits = create_dataset("multidigits", num_train=20, num_val=10, num_test=10)
    model = create_model(
        "attention_mtl",
        tasks=list(splits.tasks.values()),
        input_shape=splits.train.input_shape,
        layout="image",
        encoder="cnn",
        encoder_options={"channels": [4], "downsample": 1},
    )
    batch = splits.val.batch(torch.arange(3))
    writer, state = Writer(), torch.get_rng_state()
    model.train()
    tags = log_attention_images(writer, model, batch, 7, splits.tasks, examples=2)
    assert tags == ["attention/left", "attention/right"]
    assert [(t, s, f) for t, _, s, f in writer.images] == [(t, 7, "HWC") for t in tags]
    image = writer.images[0][1]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert model.training and torch.equal(state, torch.get_rng_state())
    examples = collect_attention(model, batch, splits.tasks, examples=2)
    assert examples.kind() == "spatial" and examples.attention["left"].shape == (2, 8 * 14)
    assert examples.labels["left"] == [str(int(v)) for v in batch.labels["left"][:2]]
