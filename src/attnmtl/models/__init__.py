"""Multi-task models with attention, and the seed note's two reference models as presets.

Build by name: ``create_model("seed_attn_rnn", input_dim=1, output_dim=10)``.
"""

from attnmtl.core.output import MultiTaskOutput
from attnmtl.models.adatt import AdaTT
from attnmtl.models.aitm import AITM, InformationTransfer
from attnmtl.models.attention_mtl import AttentionMTL
from attnmtl.models.base import MultiTaskModel, make_head, unique_parameters
from attnmtl.models.cross_stitch import CrossStitch, CrossStitchUnit
from attnmtl.models.dense_cross_stitch import DilatedResNetCrossStitch
from attnmtl.models.dense_mmoe import DilatedResNetMMoE
from attnmtl.models.dselect_k import DSelectGate, DSelectK
from attnmtl.models.encoder import ModuleEncoder, SharedEncoder, build_encoder
from attnmtl.models.experts import ExpertModel
from attnmtl.models.fusion import AttentionFusionMTL, FusionAttention
from attnmtl.models.hard_sharing import HardSharing
from attnmtl.models.ltb import BranchNode, LearningToBranch
from attnmtl.models.mmoe import MMoE
from attnmtl.models.mtan import MTAN, MTANTrace
from attnmtl.models.omoe import OMoE
from attnmtl.models.ple import CGC, PLE
from attnmtl.models.registry import MODELS, create_model, list_models, register_model
from attnmtl.models.resnet_dilated import DeepLabHead, DilatedResNet, DilatedResNetHardSharing
from attnmtl.models.seed import SEED_TASKS, SeedAttnRNN, SeedAttnTransferMTL
from attnmtl.models.segnet import SegNetHardSharing, SegNetMTAN

__all__ = [
    "AITM",
    "CGC",
    "MODELS",
    "MTAN",
    "PLE",
    "SEED_TASKS",
    "AdaTT",
    "AttentionFusionMTL",
    "AttentionMTL",
    "BranchNode",
    "CrossStitch",
    "CrossStitchUnit",
    "DSelectGate",
    "DSelectK",
    "DeepLabHead",
    "DilatedResNet",
    "DilatedResNetCrossStitch",
    "DilatedResNetHardSharing",
    "DilatedResNetMMoE",
    "ExpertModel",
    "FusionAttention",
    "HardSharing",
    "InformationTransfer",
    "LearningToBranch",
    "MMoE",
    "MTANTrace",
    "ModuleEncoder",
    "MultiTaskModel",
    "MultiTaskOutput",
    "OMoE",
    "SeedAttnRNN",
    "SeedAttnTransferMTL",
    "SegNetHardSharing",
    "SegNetMTAN",
    "SharedEncoder",
    "build_encoder",
    "create_model",
    "list_models",
    "make_head",
    "register_model",
    "unique_parameters",
]
