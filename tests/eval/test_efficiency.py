"""Efficiency: parameter counts and FLOPs by hand, the recurrent-layer formula, timing keys."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils.flop_counter import FlopCounterMode

from attnmtl.core.tasks import Task
from attnmtl.data import MultiTaskDataset
from attnmtl.eval.efficiency import count_flops, measure_efficiency, rnn_flops
from attnmtl.models import MultiTaskModel, MultiTaskOutput

TASKS = [Task("a", "multiclass", 3), Task("b", "regression")]


class TinyMLP(MultiTaskModel):
    """(B, 4, 2) → flatten 8 → Linear(8, 16) → ReLU → heads Linear(16, 3) and Linear(16, 1)."""

    def __init__(self, rnn: nn.RNNBase | None = None) -> None:
        super().__init__(TASKS)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU())
        self.frozen = nn.Parameter(torch.zeros(5), requires_grad=False)
        self.heads = nn.ModuleDict({"a": nn.Linear(16, 3), "b": nn.Linear(16, 1)})
        self.rnn = rnn

    def task_modules(self, task):
        return [self.heads[task]]

    def forward(self, inputs, lengths=None):
        if self.rnn is not None and lengths is None:
            self.rnn(inputs)
        elif self.rnn is not None:
            packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
            self.rnn(packed)
        features = self.encoder(inputs)
        return MultiTaskOutput({t: head(features) for t, head in self.heads.items()}, {})


def _data(n=10, lengths=None):
    labels = {"a": torch.arange(n) % 3, "b": torch.randn(n)}
    return MultiTaskDataset(torch.randn(n, 4, 2), labels, TASKS, lengths=lengths)


def test_parameters_by_hand():
    # encoder 8·16 + 16 = 144; heads 16·3 + 3 = 51 and 16 + 1 = 17; 5 frozen
    counts = measure_efficiency(TinyMLP(), _data(), latency_repeats=2, throughput_repeats=1)
    assert counts["parameters"] == {
        "total": 144 + 51 + 17 + 5,
        "trainable": 144 + 51 + 17,
        "shared": 144,
        "per_task": {"a": 51, "b": 17},
    }


def test_flops_of_an_mlp_are_two_per_multiply_add_per_sample():
    # 2·8·16 + 2·16·3 + 2·16·1 = 256 + 96 + 32 per sample, whatever the batch size
    data = _data()
    for size in (1, 7):
        flops, by_op = count_flops(TinyMLP(), data.batch(torch.arange(size)))
        assert flops == 384
        assert by_op == {"addmm": 384}


def test_rnn_formula_by_hand():
    # GRU(3 → 5): per step 2·3·5·(3 + 5) = 240; 28 steps
    assert rnn_flops(nn.GRU(3, 5), 28) == 28 * 240
    # 2 layers, both directions: layer 2 reads 2·5 features: 2·3·5·(10 + 5) = 450 per step
    assert rnn_flops(nn.GRU(3, 5, num_layers=2, bidirectional=True), 28) == 28 * 2 * (240 + 450)
    # LSTM with a projection of size 2: 2·4·5·(3 + 2) + 2·5·2 = 200 + 20
    assert rnn_flops(nn.LSTM(3, 5, proj_size=2), 10) == 10 * 220


@pytest.mark.filterwarnings("ignore:TF32 acceleration")
@pytest.mark.parametrize(
    "rnn",
    [
        nn.RNN(3, 5, num_layers=2, bidirectional=True, batch_first=True),
        nn.GRU(3, 5, num_layers=2, bidirectional=True, batch_first=True),
        nn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True),
        nn.LSTM(3, 5, proj_size=2, batch_first=True),
    ],
)
def test_rnn_formula_matches_flop_counter_where_it_sees_the_products(rnn):
    # without oneDNN every cell decomposes into mm / addmm calls on CPU
    x = torch.randn(4, 7, 3)
    with torch.backends.mkldnn.flags(enabled=False), FlopCounterMode(display=False) as counter:
        rnn(x)
    assert counter.get_total_flops() == rnn_flops(rnn, 4 * 7)


@pytest.mark.parametrize("lengths", [None, torch.tensor([4, 2, 3])])
def test_an_lstm_is_counted_with_or_without_onednn(lengths):
    # on CPU, oneDNN runs an unpacked LSTM as one kernel FlopCounterMode cannot see into
    lstm = nn.LSTM(2, 5, batch_first=True)
    data = _data(3, lengths)
    flops, _ = count_flops(TinyMLP(lstm), data.batch(torch.arange(3)))
    steps = 12 if lengths is None else 9
    assert flops == pytest.approx(384 + rnn_flops(lstm, steps) / 3)


class OpaqueGRU(nn.GRU):
    """A stand-in for a fused kernel: right shapes, no operation FlopCounterMode counts."""

    def forward(self, packed, hx=None):
        return packed, torch.zeros(1, int(packed.batch_sizes[0]), self.hidden_size)


def test_an_rnn_the_counter_cannot_see_into_is_counted_by_formula_over_real_steps():
    lengths = torch.tensor([4, 2, 3])  # 9 real steps of 12
    data = _data(3, lengths)
    model = TinyMLP(OpaqueGRU(2, 5, batch_first=True))
    flops, by_op = count_flops(model, data.batch(torch.arange(3)))
    per_step = 2 * 3 * 5 * (2 + 5)
    assert by_op["rnn (formula)"] == pytest.approx(9 * per_step / 3)
    assert flops == pytest.approx(384 + 9 * per_step / 3)


def test_latency_throughput_and_memory():
    model = TinyMLP().train()
    result = measure_efficiency(model, _data(), latency_repeats=9, throughput_batch=32)
    assert 0 < result["latency_ms_p50"] <= result["latency_ms_p95"]
    assert result["latency_repeats"] == 9
    assert result["throughput_samples_per_s"] > 0
    assert result["throughput_batch"] == 32
    assert result["peak_memory_kind"] == "process_rss"
    assert result["peak_memory_mib"] > 10  # at least the interpreter and torch
    assert result["device"] == "cpu"
    assert model.training  # its mode is restored


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"latency_repeats": 0}, r"^latency_repeats=0; expected >= 1$"),
        ({"throughput_batch": 0}, r"^throughput_batch=0; expected >= 1$"),
        ({"warmup": -1}, r"^warmup=-1; expected >= 0$"),
    ],
)
def test_bad_options(option, message):
    with pytest.raises(ValueError, match=message):
        measure_efficiency(TinyMLP(), _data(), **option)
