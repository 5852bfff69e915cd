"""Auto-Lambda: the look-ahead hypergradient against its exact value, the Adam step on λ, the
parameters left exactly as they were, and a run through the Trainer."""

import pytest
import torch
from torch import nn

from attnmtl.run.build import build_data, build_model
from attnmtl.run.config import parse_config
from attnmtl.run.trainer import Trainer
from attnmtl.weighting import create_weighting
from attnmtl.weighting.base import StepContext

TASKS = ["a", "b"]


class Quadratic(nn.Module):
    """L_k(θ) = ½‖A_k θ − y_k‖² / n on a train batch; the held-out batch has its own A, y."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.theta = nn.Parameter(torch.randn(4, dtype=torch.float64, generator=g))
        self.A = torch.randn(2, 6, 4, dtype=torch.float64, generator=g)
        self.y = torch.randn(2, 6, dtype=torch.float64, generator=g)
        self.A_val = torch.randn(2, 6, 4, dtype=torch.float64, generator=g)
        self.y_val = torch.randn(2, 6, dtype=torch.float64, generator=g)

    def losses(self, val: bool = False) -> dict[str, torch.Tensor]:
        A, y = (self.A_val, self.y_val) if val else (self.A, self.y)
        r = A @ self.theta - y  # (K, n)
        return {t: 0.5 * r[k].square().mean() for k, t in enumerate(TASKS)}

    def context(self, lr: float) -> StepContext:
        ctx = StepContext([self.theta], None, 0, 0, task_parameters={t: [] for t in TASKS})

        def rerun():
            with torch.no_grad():
                return self.losses()

        ctx.rerun, ctx.heldout, ctx.lr = rerun, lambda: self.losses(val=True), lr
        return ctx


def test_hypergradient_is_the_look_ahead_derivative():
    model, lr = Quadratic(), 0.1
    weighting = create_weighting("auto_lambda", TASKS, init=0.5, meta_lr=1e-3)
    theta = model.theta.detach().clone()
    weighting.backward(model.losses(), model.context(lr))
    # exact: ∂L_val(θ')/∂λ_k = −α ∇L_val(θ')ᵀ ∇L_k(θ), θ' = θ − α Σ_k λ_k ∇L_k(θ)
    x = theta.clone().requires_grad_(True)
    probe = Quadratic()
    with torch.no_grad():
        probe.theta.copy_(x)
    grads = [
        torch.autograd.grad(v, probe.theta, retain_graph=True)[0] for v in probe.losses().values()
    ]
    ahead = theta - lr * 0.5 * (grads[0] + grads[1])
    with torch.no_grad():
        probe.theta.copy_(ahead)
    d = torch.autograd.grad(sum(probe.losses(val=True).values()), probe.theta)[0]
    exact = [-lr * float(d @ g) for g in grads]
    got = weighting.last_meta_gradient
    assert [got["a"], got["b"]] == pytest.approx(exact, rel=1e-6)  # (quadratic: exact FD)
    # the first Adam step moves each λ by meta_lr against its hypergradient's sign
    expected = [0.5 - 1e-3 * (1 if e > 0 else -1) for e in exact]
    assert weighting.lambdas.tolist() == pytest.approx(expected, rel=1e-6)
    # the parameters are exactly as before; their gradient is that of Σ λ_k L_k at λ = 0.5
    assert torch.equal(model.theta.detach(), theta)
    torch.testing.assert_close(model.theta.grad, 0.5 * (grads[0] + grads[1]))


def test_only_primary_tasks_count_in_the_held_out_loss():
    model = Quadratic()
    weighting = create_weighting("auto_lambda", TASKS, primary=["a"])
    weighting.backward(model.losses(), model.context(0.1))
    assert set(weighting.last_meta_gradient) == {"a", "b"}  # both weights learn, for a's sake
    with pytest.raises(ValueError, match=r"primary=\['z'\]; expected some of the tasks"):
        create_weighting("auto_lambda", TASKS, primary=["z"])


def test_without_the_look_ahead_data_it_says_what_it_needs():
    model = Quadratic()
    ctx = model.context(0.1)
    ctx.heldout = None
    with pytest.raises(ValueError, match=r"needs StepContext\.heldout, rerun and lr"):
        create_weighting("auto_lambda", TASKS).backward(model.losses(), ctx)


def test_trains_through_the_trainer_and_moves_its_weights(tmp_path):
    cfg = parse_config(
        {
            "name": "autol",
            "data": {
                "name": "mnist1d-mt",
                "tasks": ["digit", "scale"],
                "num_train": 256,
                "num_val": 64,
                "num_test": 64,
            },
            "model": {
                "name": "hard_sharing",
                "encoder": "mlp",
                "encoder_options": {"hidden_dims": [32]},
            },
            "weighting": {"name": "auto_lambda", "meta_lr": 0.01, "init": 1.0},
            "optimizer": {"name": "adam", "lr": 0.003},
            "schedule": {"name": "constant"},
            "train": {
                "epochs": 3,
                "batch_size": 64,
                "progress": False,
                "tensorboard": False,
                "threads": 1,
            },
        }
    )
    splits = build_data(cfg)
    torch.manual_seed(0)
    trainer = Trainer.from_config(cfg, splits, build_model(cfg, splits), tmp_path)
    summary = trainer.fit()
    history = trainer.position.history
    for task in ("digit", "scale"):
        assert history[-1]["train_loss"][task] < history[0]["train_loss"][task]
    assert not torch.allclose(trainer.weighting.lambdas, torch.ones(2, dtype=torch.float64))
    assert set(summary["tasks"]) == {"digit", "scale"}


def exact_hypergradients(theta, lam, lr):
    """H_jk = −α ∇L_val_j(θ')ᵀ ∇L_k(θ), θ' = θ − α Σ_k λ_k ∇L_k(θ), by autograd."""
    probe = Quadratic()
    with torch.no_grad():
        probe.theta.copy_(theta)
    losses = probe.losses()
    grads = [torch.autograd.grad(v, probe.theta, retain_graph=True)[0] for v in losses.values()]
    with torch.no_grad():
        probe.theta.copy_(theta - lr * sum(w * g for w, g in zip(lam, grads, strict=True)))
    val = probe.losses(val=True)
    rows = []
    for v in val.values():
        d = torch.autograd.grad(v, probe.theta, retain_graph=True)[0]
        rows.append([-lr * float(d @ g) for g in grads])
    return torch.tensor(rows, dtype=torch.float64)


def test_moml_steps_along_the_mgda_direction_of_every_tasks_hypergradient():
    from attnmtl.weighting.solvers import min_norm

    model, lr = Quadratic(), 0.1
    theta = model.theta.detach().clone()
    moml = create_weighting("moml", TASKS, init=0.5)
    moml.backward(model.losses(), model.context(lr))
    H = exact_hypergradients(theta, [0.5, 0.5], lr)
    expected = min_norm(H @ H.T) @ H
    got = moml.last_meta_gradient
    assert [got["a"], got["b"]] == pytest.approx(expected.tolist(), rel=1e-5)
    assert torch.equal(model.theta.detach(), theta)


def test_moml_with_one_primary_task_is_auto_lambda():
    first, second = Quadratic(), Quadratic()
    moml = create_weighting("moml", TASKS, primary=["b"])
    autol = create_weighting("auto_lambda", TASKS, primary=["b"])
    moml.backward(first.losses(), first.context(0.1))
    autol.backward(second.losses(), second.context(0.1))
    assert moml.last_meta_gradient == pytest.approx(autol.last_meta_gradient, rel=1e-12)
    torch.testing.assert_close(moml.lambdas, autol.lambdas)


def test_the_two_probes_share_their_random_draws():
    """Dropout (or Gumbel) noise in the probes θ ± εd cancels: both draw the same numbers."""
    clean, noisy = Quadratic(), Quadratic()
    ctx = noisy.context(0.1)
    plain = ctx.rerun

    def with_noise():  # a random term, as dropout adds: identical in both probes, so it cancels
        return {t: v + 100 * torch.rand((), dtype=torch.float64) for t, v in plain().items()}

    ctx.rerun = with_noise
    first = create_weighting("auto_lambda", TASKS)
    second = create_weighting("auto_lambda", TASKS)
    first.backward(clean.losses(), clean.context(0.1))
    second.backward(noisy.losses(), ctx)
    assert second.last_meta_gradient == pytest.approx(first.last_meta_gradient, rel=1e-6)
