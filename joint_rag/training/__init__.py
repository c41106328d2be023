"""Training: the LightningModule, callbacks and metrics."""

from joint_rag.training.callbacks import IndexRefresh
from joint_rag.training.module import JointRAGModule

__all__ = ["IndexRefresh", "JointRAGModule"]
