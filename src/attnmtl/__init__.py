"""attnmtl: attention modules, attention encoders, multi-task learning with attention, and
attention transfer, on PyTorch.

The main names are here, loaded on first use so that ``import attnmtl`` costs nothing beyond
itself (``attnmtl.Trainer`` loads the run layer, ``attnmtl.create_model`` only the models)::

    import attnmtl
    model = attnmtl.create_model("attention_mtl", tasks=..., input_shape=(40, 1))
    weighting = attnmtl.create_weighting("mgda", ["digit", "scale"])

Each layer is also a package of its own (bottom to top): ``attnmtl.core``, ``attention``,
``encoders``, ``models``, ``weighting``, ``transfer``, ``data``, ``eval``, ``run``, ``report``,
``pipeline``, ``bench``, ``cli``; a layer imports only from the ones below it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name → the module it lives in (each a public module of its layer)
_EXPORTS = {
    "Batch": "attnmtl.core",
    "MultiTaskOutput": "attnmtl.core",
    "Task": "attnmtl.core",
    "task_losses": "attnmtl.core",
    "AdditiveAttention": "attnmtl.attention",
    "AttentionPooling": "attnmtl.attention",
    "MultiHeadAttention": "attnmtl.attention",
    "ScaledDotProductAttention": "attnmtl.attention",
    "ENCODERS": "attnmtl.encoders",
    "EncoderOutput": "attnmtl.encoders",
    "register_encoder": "attnmtl.encoders",
    "MODELS": "attnmtl.models",
    "MultiTaskModel": "attnmtl.models",
    "create_model": "attnmtl.models",
    "register_model": "attnmtl.models",
    "StepContext": "attnmtl.weighting",
    "WEIGHTINGS": "attnmtl.weighting",
    "Weighting": "attnmtl.weighting",
    "create_weighting": "attnmtl.weighting",
    "register_weighting": "attnmtl.weighting",
    "Capture": "attnmtl.transfer",
    "DATASETS": "attnmtl.data",
    "create_dataset": "attnmtl.data",
    "register_dataset": "attnmtl.data",
    "evaluate": "attnmtl.eval",
    "RunConfig": "attnmtl.run",
    "Trainer": "attnmtl.run",
    "load_config": "attnmtl.run",
    "load_run": "attnmtl.run",
    "resume_run": "attnmtl.pipeline",
    "train_run": "attnmtl.pipeline",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    """``attnmtl.NAME``: imported from its module on first use (PEP 562), then cached."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'attnmtl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:  # what type checkers and IDEs see
    from attnmtl.attention import (
        AdditiveAttention as AdditiveAttention,
    )
    from attnmtl.attention import (
        AttentionPooling as AttentionPooling,
    )
    from attnmtl.attention import (
        MultiHeadAttention as MultiHeadAttention,
    )
    from attnmtl.attention import (
        ScaledDotProductAttention as ScaledDotProductAttention,
    )
    from attnmtl.core import (
        Batch as Batch,
    )
    from attnmtl.core import (
        MultiTaskOutput as MultiTaskOutput,
    )
    from attnmtl.core import (
        Task as Task,
    )
    from attnmtl.core import (
        task_losses as task_losses,
    )
    from attnmtl.data import (
        DATASETS as DATASETS,
    )
    from attnmtl.data import (
        create_dataset as create_dataset,
    )
    from attnmtl.data import (
        register_dataset as register_dataset,
    )
    from attnmtl.encoders import (
        ENCODERS as ENCODERS,
    )
    from attnmtl.encoders import (
        EncoderOutput as EncoderOutput,
    )
    from attnmtl.encoders import (
        register_encoder as register_encoder,
    )
    from attnmtl.eval import (
        evaluate as evaluate,
    )
    from attnmtl.models import (
        MODELS as MODELS,
    )
    from attnmtl.models import (
        MultiTaskModel as MultiTaskModel,
    )
    from attnmtl.models import (
        create_model as create_model,
    )
    from attnmtl.models import (
        register_model as register_model,
    )
    from attnmtl.pipeline import (
        resume_run as resume_run,
    )
    from attnmtl.pipeline import (
        train_run as train_run,
    )
    from attnmtl.run import (
        RunConfig as RunConfig,
    )
    from attnmtl.run import (
        Trainer as Trainer,
    )
    from attnmtl.run import (
        load_config as load_config,
    )
    from attnmtl.run import (
        load_run as load_run,
    )
    from attnmtl.transfer import (
        Capture as Capture,
    )
    from attnmtl.weighting import (
        WEIGHTINGS as WEIGHTINGS,
    )
    from attnmtl.weighting import (
        StepContext as StepContext,
    )
    from attnmtl.weighting import (
        Weighting as Weighting,
    )
    from attnmtl.weighting import (
        create_weighting as create_weighting,
    )
    from attnmtl.weighting import (
        register_weighting as register_weighting,
    )
