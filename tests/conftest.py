"""Shared fixtures: tiny models built from config, offline, quiet progress bars."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("JRAG_PROGRESS", "0")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# the kernel tests run Triton kernels in the CPU interpreter; it must be chosen before anything
# (transformers, peft) imports triton
os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# `python -m pytest` from the repository root puts the root first on sys.path; its kernels/ folder
# (installed as joint_rag.kernels) would shadow Hugging Face's `kernels` package, which
# transformers 5.x imports. Take the root off the path here and in the tests' subprocesses
# (PYTHONSAFEPATH; joint_rag itself comes from the editable install).
os.environ.setdefault("PYTHONSAFEPATH", "1")
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO]
if getattr(sys.modules.get("kernels"), "__file__", None) == str(REPO / "kernels" / "__init__.py"):
    del sys.modules["kernels"]


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def tiny_module():
    """A JointRAGModule on tiny random models over a small synthetic corpus."""
    import torch

    from joint_rag.data.synthetic import SyntheticSource
    from joint_rag.losses import EndToEnd
    from joint_rag.models import Compressor, Generator, TopKSelector
    from joint_rag.training import JointRAGModule

    def make(**kwargs):
        torch.manual_seed(0)
        data = SyntheticSource(num_entities=12, seed=0).load()
        defaults = dict(
            compressor=Compressor("tiny-bert", num_memory_tokens=2, max_length=48),
            generator=Generator("tiny-llama", max_new_tokens=3),
            objectives={"end_to_end": EndToEnd()},
            selector=TopKSelector(k=2),
            num_candidates=4,
        )
        defaults.update(kwargs)
        module = JointRAGModule(**defaults)
        module.system.attach_corpus(data.corpus)
        return module, data

    return make
