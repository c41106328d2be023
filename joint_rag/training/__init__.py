"""Training (the Lightning layer): the LightningModule around a ``RAGSystem``, the DataModule,
callbacks, metrics and train/eval modes. Nothing on the inference path imports this package."""

from joint_rag.training.callbacks import IndexRefresh, LogProgress
from joint_rag.training.datamodule import RAGDataModule
from joint_rag.training.module import JointRAGModule

__all__ = ["IndexRefresh", "JointRAGModule", "LogProgress", "RAGDataModule"]
