"""Attention transfer: capture by module path, transfer losses, teachers, the transfer objective.

Teacher → student (attention maps of activations, MiniLM attention and value relations,
MiniLMv2 relations, logit distillation), between tasks inside one multi-task model, and
attention fusion of frozen source models (:class:`attnmtl.models.AttentionFusionMTL`).
"""

from attnmtl.transfer.capture import KINDS, QKV, Capture, check_eager, find_module
from attnmtl.transfer.losses import (
    activation_transfer_loss,
    attention_kl,
    attention_map,
    logit_distillation,
    relation_kl,
    value_relation_kl,
)
from attnmtl.transfer.pairs import PAIR_LOSSES, register_pair_loss
from attnmtl.transfer.teacher import (
    HFTeacher,
    freeze,
    load_pretrained,
)

__all__ = [
    "KINDS",
    "PAIR_LOSSES",
    "QKV",
    "Capture",
    "HFTeacher",
    "activation_transfer_loss",
    "attention_kl",
    "attention_map",
    "check_eager",
    "find_module",
    "freeze",
    "load_pretrained",
    "logit_distillation",
    "register_pair_loss",
    "relation_kl",
    "value_relation_kl",
]
