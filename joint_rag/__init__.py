"""joint-rag: train a retriever and a generator together.

The answer loss of the generator flows back through a differentiable top-k selection into
the retrieval embeddings, so the retriever learns which passages help answer.
"""

import os as _os

# faiss and torch share libgomp; with the default active wait policy, faiss's idle OpenMP
# threads spin and slow every following torch op several-fold on small CPUs. Must be set
# before torch/faiss load their OpenMP runtime.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
__all__ = ["JointRAG", "__version__"]


def __getattr__(name: str):
    if name == "JointRAG":
        from joint_rag.pipeline import JointRAG

        return JointRAG
    raise AttributeError(name)
