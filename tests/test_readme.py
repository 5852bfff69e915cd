"""Every Python block in README.md runs as written, and the own-loop block trains every
parameter under every weighting method (it once built its StepContext without the tasks' own
parameters: under gradient methods the heads and per-task attention got no gradient)."""

import io
import re
from pathlib import Path

import pytest
import torch
from rich.console import Console

from attnmtl.core import task_losses
from attnmtl.pipeline import train_run
from attnmtl.run.config import load_config
from attnmtl.weighting import StepContext, create_weighting, list_weightings

README = Path(__file__).parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
LOOP = next(block for block in BLOCKS if "weighting.step(" in block)


def run(code: str, namespace: dict | None = None) -> dict:
    namespace = {} if namespace is None else namespace
    exec(compile(code, str(README), "exec"), namespace)
    return namespace


def test_the_readme_has_python_blocks_and_the_own_loop():
    assert len(BLOCKS) >= 2 and "step = 0\n" in LOOP


@pytest.fixture(scope="module")
def a_run(tmp_path_factory):
    """A folder holding a small default run at ``runs/mine``, for blocks that load one."""
    folder = tmp_path_factory.mktemp("readme")
    tiny = ["train.epochs=1", "data.num_train=256", "data.num_val=64", "data.num_test=64"]
    tiny += ["train.report=false", "train.tensorboard=false", "train.progress=false"]
    quiet = Console(file=io.StringIO())
    train_run(load_config("default", tiny), folder / "runs" / "mine", quiet)
    return folder


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_every_python_block_runs_as_written(index, request, monkeypatch):
    if "runs/mine" in BLOCKS[index]:
        monkeypatch.chdir(request.getfixturevalue("a_run"))
    run(BLOCKS[index])


def _sized(code: str, **replacements: str) -> str:
    for old, new in replacements.items():
        assert old in code, old
        code = code.replace(old, new)
    return code


@pytest.mark.parametrize("method", list_weightings())
def test_the_own_loop_trains_every_parameter_and_lowers_every_task_loss(method):
    """The README's loop with its weighting replaced (and a shorter run): after it, every
    parameter of the model and the strategy has a non-zero gradient, and every task's training
    loss is lower than before it."""
    setup, loop = LOOP.split("step = 0\n")
    setup = _sized(setup, **{'"pcgrad"': repr(method), "num_train=1000": "num_train=320"})
    namespace = run(setup)
    model, train, tasks = namespace["model"], namespace["train"], namespace["splits"].tasks
    probe = train.batch(torch.arange(len(train)))

    def train_losses():
        with torch.no_grad():
            return {t: float(v) for t, v in task_losses(model(probe.inputs), probe, tasks).items()}

    before = train_losses()
    run("step = 0\n" + _sized(loop, **{"range(3)": "range(4)"}), namespace)
    after = train_losses()
    trainable = [*model.named_parameters(), *namespace["weighting"].named_parameters()]
    # A scorer's bias shifts every step's score alike, which a softmax over the steps cancels:
    # its true gradient is 0, and only round-off (which some strategies happen not to have)
    # makes it non-zero. It is not asked to move.
    silent = [
        n
        for n, p in trainable
        if (p.grad is None or not bool(p.grad.abs().sum() > 0)) and not n.endswith("scorer.bias")
    ]
    assert not silent, f"{method}: no gradient at the last step for {silent}"
    assert all(after[t] < before[t] for t in tasks), (method, before, after)
    weighting = namespace["weighting"]
    if method == "gradnorm":  # renormalised after every step: Σ w = K
        total = float(sum(w.detach() for w in weighting.weights))
        assert total == pytest.approx(len(tasks), rel=1e-5)
    if method == "famo":  # its logits moved (they stay at 0 without after_step)
        assert bool(weighting.logits.abs().sum() > 0)


def small(method):
    """The README loop's set-up on 64 samples with ``method``, and one forward pass."""
    setup = _sized(LOOP.split("step = 0\n")[0], **{"num_train=1000": "num_train=64"})
    namespace = run(setup.replace('"pcgrad"', repr(method)))
    model, train = namespace["model"], namespace["train"]
    batch = train.batch(torch.arange(64))
    output = model(batch.inputs, batch.lengths)
    losses = task_losses(output, batch, namespace["splits"].tasks)
    return namespace, batch, output, losses


def test_a_context_without_task_parameters_is_refused_with_the_fix():
    namespace, _, output, losses = small("mgda")
    model, weighting = namespace["model"], namespace["weighting"]
    context = StepContext(model.shared_parameters(), output.features, 0, 0)
    with pytest.raises(ValueError, match=r"^MGDA: StepContext.task_parameters has no entry for "):
        weighting.backward(losses, context)


@pytest.mark.parametrize("method", ["famo", "gradnorm"])
def test_a_missed_after_step_is_refused_at_the_next_backward(method):
    setup = _sized(LOOP.split("step = 0\n")[0], **{"num_train=1000": "num_train=64"})
    namespace = run(setup.replace('"pcgrad"', repr(method)))
    model, weighting, train = namespace["model"], namespace["weighting"], namespace["train"]
    batch = train.batch(torch.arange(64))
    for step in range(2):
        output = model(batch.inputs, batch.lengths)
        losses = task_losses(output, batch, namespace["splits"].tasks)
        context = StepContext.from_model(model, output, step, 0)
        if step == 0:
            weighting.backward(losses, context)
            continue
        with pytest.raises(RuntimeError, match=r"after_step\(\) was not called"):
            weighting.backward(losses, context)


def test_the_step_refuses_an_optimizer_without_the_strategy_parameters_and_famo_without_a_batch():
    namespace, _, output, losses = small("uncertainty")
    model, weighting = namespace["model"], namespace["weighting"]
    optimizer = torch.optim.AdamW(model.parameters())  # without weighting.parameters()
    with pytest.raises(ValueError, match=r"the optimizer does not hold the strategy's parameters"):
        weighting.step(losses, model, output, optimizer, step=0)
    famo = create_weighting("famo", list(namespace["splits"].tasks))
    with pytest.raises(ValueError, match=r"^FAMO updates itself .*: pass batch=batch$"):
        famo.step(losses, model, output, optimizer, step=0)
