"""Training objectives: one module each, one interface (see base.py)."""

from joint_rag.losses.base import Objective, ObjectiveInputs
from joint_rag.losses.end_to_end import EndToEnd
from joint_rag.losses.objective import CombinedObjective
from joint_rag.losses.similarity import Similarity, info_nce

__all__ = ["CombinedObjective", "EndToEnd", "Objective", "ObjectiveInputs", "Similarity", "info_nce"]
