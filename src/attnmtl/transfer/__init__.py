"""Attention transfer: capture by module path, transfer losses, teachers, the transfer objective.

Teacher → student (attention maps of activations, MiniLM attention and value relations, the
feature and relational losses of FitNets, TinyBERT, PKD, RKD, SP, PKT and DIST,
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
from attnmtl.transfer.pairs import (
    LOGIT_LOSSES,
    PAIR_LOSSES,
    register_logit_loss,
    register_pair_loss,
)
from attnmtl.transfer.relational import (
    HintRegressor,
    attention_score_mse,
    attention_scores,
    dist_loss,
    hint_loss,
    pkd_loss,
    pkt_loss,
    rkd_angle,
    rkd_distance,
    similarity_preserving,
)
from attnmtl.transfer.teacher import (
    HFTeacher,
    freeze,
    load_pretrained,
)

__all__ = [
    "KINDS",
    "LOGIT_LOSSES",
    "PAIR_LOSSES",
    "QKV",
    "Capture",
    "HFTeacher",
    "HintRegressor",
    "activation_transfer_loss",
    "attention_kl",
    "attention_map",
    "attention_score_mse",
    "attention_scores",
    "check_eager",
    "dist_loss",
    "find_module",
    "freeze",
    "hint_loss",
    "load_pretrained",
    "logit_distillation",
    "pkd_loss",
    "pkt_loss",
    "register_logit_loss",
    "register_pair_loss",
    "relation_kl",
    "rkd_angle",
    "rkd_distance",
    "similarity_preserving",
    "value_relation_kl",
]
