"""Training objectives: one module each, one interface (see base.py)."""

from joint_rag.losses.base import Objective, ObjectiveInputs
from joint_rag.losses.distillation import EMDR2, LMSupervisedRetrieval, PerplexityDistillation
from joint_rag.losses.end_to_end import EndToEnd
from joint_rag.losses.marginal import RAGSequence, RAGToken
from joint_rag.losses.objective import CombinedObjective
from joint_rag.losses.pretraining import CompressorPretraining
from joint_rag.losses.reinforce import Reinforce
from joint_rag.losses.similarity import Similarity, info_nce
from joint_rag.losses.uniformity import Uniformity

__all__ = [
    "EMDR2",
    "CombinedObjective",
    "CompressorPretraining",
    "EndToEnd",
    "LMSupervisedRetrieval",
    "Objective",
    "ObjectiveInputs",
    "PerplexityDistillation",
    "RAGSequence",
    "RAGToken",
    "Reinforce",
    "Similarity",
    "Uniformity",
    "info_nce",
]
