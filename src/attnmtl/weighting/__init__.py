"""Task-balancing strategies behind one interface (:class:`Weighting`), found by name.

Build by name: ``create_weighting("dwa", tasks=["digit", "shift"], temperature=2.0)``.
Importing this package registers every strategy below.
"""

from attnmtl.weighting.aligned_mtl import AlignedMTL
from attnmtl.weighting.base import StepContext, Weighting
from attnmtl.weighting.cagrad import CAGrad
from attnmtl.weighting.constant import ConstantWeighting
from attnmtl.weighting.dwa import DynamicWeightAverage
from attnmtl.weighting.equal import EqualWeighting
from attnmtl.weighting.famo import FAMO
from attnmtl.weighting.gls import GeometricLossStrategy
from attnmtl.weighting.gradient import (
    GradientBased,
    GradientWeighting,
    RowWeighting,
    SampledWeighting,
)
from attnmtl.weighting.gradnorm import GradNorm
from attnmtl.weighting.gradvac import GradVac
from attnmtl.weighting.imtl import IMTL
from attnmtl.weighting.mgda import MGDA, MGDAUB
from attnmtl.weighting.nash_mtl import NashMTL
from attnmtl.weighting.pcgrad import PCGrad
from attnmtl.weighting.registry import (
    WEIGHTINGS,
    create_weighting,
    list_weightings,
    register_weighting,
)
from attnmtl.weighting.rlw import RandomLossWeighting
from attnmtl.weighting.scale_invariant import ScaleInvariantWeighting
from attnmtl.weighting.uncertainty import UncertaintyWeighting
from attnmtl.weighting.upgrad import UPGrad

__all__ = [
    "CRMOGM",
    "DBMTL",
    "FAMO",
    "FORUM",
    "IMTL",
    "IMTLL",
    "MGDA",
    "MGDAUB",
    "MOML",
    "STCH",
    "WEIGHTINGS",
    "AlignedMTL",
    "AutoLambda",
    "CAGrad",
    "ConFIG",
    "ConstantWeighting",
    "DualProj",
    "DynamicWeightAverage",
    "EqualWeighting",
    "ExcessMTL",
    "FairGrad",
    "GeometricLossStrategy",
    "GradDrop",
    "GradNorm",
    "GradVac",
    "GradientBased",
    "GradientWeighting",
    "MoCo",
    "MoDo",
    "NashMTL",
    "PCGrad",
    "PerGroup",
    "RandomLossWeighting",
    "RowWeighting",
    "SDMGrad",
    "SampledWeighting",
    "ScaleInvariantWeighting",
    "StepContext",
    "UPGrad",
    "UncertaintyWeighting",
    "Weighting",
    "create_weighting",
    "list_weightings",
    "register_weighting",
]

from attnmtl.weighting.auto_lambda import AutoLambda
from attnmtl.weighting.conflict_free import ConFIG
from attnmtl.weighting.cr_mogm import CRMOGM
from attnmtl.weighting.db_mtl import DBMTL
from attnmtl.weighting.dualproj import DualProj
from attnmtl.weighting.excess_mtl import ExcessMTL
from attnmtl.weighting.fairgrad import FairGrad
from attnmtl.weighting.forum import FORUM
from attnmtl.weighting.graddrop import GradDrop
from attnmtl.weighting.imtl_l import IMTLL
from attnmtl.weighting.moco import MoCo
from attnmtl.weighting.modo import MoDo
from attnmtl.weighting.moml import MOML
from attnmtl.weighting.per_group import PerGroup
from attnmtl.weighting.sdmgrad import SDMGrad
from attnmtl.weighting.stch import STCH
