"""Evaluating a finished (or running) run directory on its own data or on other data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from attnmtl.config import apply_overrides, parse_config, read_yaml
from attnmtl.engine.checkpoint import load_checkpoint
from attnmtl.engine.setup import build_data, build_model, resolve_device
from attnmtl.eval.metrics import evaluate

SPLITS = ("train", "val", "test")
CHECKPOINTS = ("best", "last")


def evaluate_run(
    run_dir: Path,
    data: str | None = None,
    overrides: Sequence[str] = (),
    split: str = "test",
    checkpoint: str = "best",
) -> dict[str, dict[str, float]]:
    """task → metric → value of a run's checkpoint on ``split`` of its data.

    Args:
        run_dir: a run directory.
        data: another registered data set (its default options) with the same tasks.
        overrides: ``data.KEY=VALUE`` changes to the data section (e.g. more noise).
        split: ``train``, ``val`` or ``test``.
        checkpoint: ``best`` or ``last``.
    """
    if split not in SPLITS:
        raise ValueError(f"--split {split!r}; expected one of: {', '.join(SPLITS)}")
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"--checkpoint {checkpoint!r}; expected one of: {', '.join(CHECKPOINTS)}")
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise ValueError(f"{run_dir}: not a run directory (no config.yaml)")
    for item in overrides:
        if not item.startswith("data."):
            raise ValueError(f"override {item!r}; eval takes data.KEY=VALUE overrides only")
    raw = read_yaml(config_path)
    saved = parse_config(raw)
    if data is not None:
        raw["data"] = {"name": data, "task_mask": saved.data.task_mask}
    config = parse_config(apply_overrides(raw, overrides))
    state = load_checkpoint(run_dir / "checkpoints" / checkpoint)
    splits = build_data(config)
    tasks = [asdict(task) for task in splits.tasks.values()]
    if tasks != state.meta["tasks"]:
        raise ValueError(
            f"data {config.data.name!r} has tasks {[t['name'] for t in tasks]}; the run was "
            f"trained on {[t['name'] for t in state.meta['tasks']]} (same names, kinds, sizes "
            "needed)"
        )
    model = build_model(saved, splits)
    try:
        model.load_state_dict(state.model)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise ValueError(f"the run's weights do not fit this data's inputs: {first}") from None
    device = resolve_device(config.train.device)
    model.to(device)
    return evaluate(
        model, getattr(splits, split), splits.tasks, config.train.eval_batch_size, device
    )
