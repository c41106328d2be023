"""Models: backbones, compressor, generator, scoring and differentiable selection."""

from joint_rag.models.compressor import Compressor
from joint_rag.models.generator import Generator
from joint_rag.models.selection import TopKSelector, straight_through_topk

__all__ = ["Compressor", "Generator", "TopKSelector", "straight_through_topk"]
