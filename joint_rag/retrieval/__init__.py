"""Retrieval: the passage index over the corpus (exact through ``joint_rag.kernels``, or faiss)."""

from joint_rag.retrieval.index import BACKENDS, PassageIndex

__all__ = ["BACKENDS", "PassageIndex"]
