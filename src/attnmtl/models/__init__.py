"""Multi-task models with attention, and the seed note's two reference models as presets.

Build by name: ``create_model("seed_attn_rnn", input_dim=1, output_dim=10)``.
"""

from attnmtl.models.output import MultiTaskOutput
from attnmtl.models.registry import MODELS, create_model, list_models, register_model
from attnmtl.models.seed import SEED_TASKS, SeedAttnRNN, SeedAttnTransferMTL

__all__ = [
    "MODELS",
    "SEED_TASKS",
    "MultiTaskOutput",
    "SeedAttnRNN",
    "SeedAttnTransferMTL",
    "create_model",
    "list_models",
    "register_model",
]
