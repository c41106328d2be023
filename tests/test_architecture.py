"""The architecture's promises, checked by running them: the downstream API loads and answers
without Lightning; `jrag fit` searches through the kernel dispatch (CPU here; the Triton kernel
on CUDA in the gpu-marked test); the index lives on the module's device."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from smoke_fit import fit_smoke  # noqa: E402  (tests/ is on sys.path under pytest)

REPO = Path(__file__).resolve().parents[1]

_DOWNSTREAM = """
import sys
from joint_rag import JointRAG
import joint_rag.data, joint_rag.kernels, joint_rag.models, joint_rag.retrieval, joint_rag.system
rag = JointRAG.from_pretrained(sys.argv[1])
rag.retrieve(["Who founded Veloria?"], k=3)
rag.answer(["Who founded Veloria?"])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("pytorch_lightning", "lightning")
                or m.startswith("joint_rag.training") or m == "joint_rag.config")
print(loaded)
sys.exit(1 if loaded else 0)
"""


def test_downstream_api_never_imports_lightning(tiny_module, tmp_path):
    from joint_rag.export import export_module

    module, data = tiny_module()
    out = export_module(module, tmp_path / "exp", data.corpus)
    env = dict(os.environ, HF_HUB_OFFLINE="1", JRAG_PROGRESS="0")
    res = subprocess.run(
        [sys.executable, "-c", _DOWNSTREAM, str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert res.stdout.strip() == "[]"


def test_smoke_fit_searches_through_the_kernel_dispatch(tmp_path, monkeypatch):
    """Every training step's candidate search (and the index builds' evaluation) calls
    ``joint_rag.kernels.similarity_topk`` with the YAML similarity, on the module's device."""
    from joint_rag.kernels import dispatch
    from joint_rag.retrieval import index as index_mod

    calls: list[tuple[str, torch.device]] = []
    real = index_mod.similarity_topk

    def counting(queries, passages, k, similarity, **kwargs):
        calls.append((similarity, passages.device))
        return real(queries, passages, k, similarity, **kwargs)

    monkeypatch.setattr(index_mod, "similarity_topk", counting)
    dispatch.last_path = ""
    cli, _ = fit_smoke(tmp_path / "run", "--model.similarity=maxsim")
    system = cli.model.system
    assert len(calls) >= 2 and {s for s, _ in calls} == {"maxsim"}  # exact MaxSim, no proxy
    assert {d for _, d in calls} == {system.device}
    assert dispatch.last_path == "torch"  # the CPU path of the dispatch
    assert system.index.backend == "exact" and system.index.vectors.device == system.device


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fit_step_runs_the_triton_kernel(tmp_path, monkeypatch):
    """On CUDA, `jrag fit` searches with the Triton kernel (the dense path for small searches is
    turned off here, so the tiny corpus goes to the kernel too)."""
    from joint_rag.kernels import dispatch

    monkeypatch.setenv("JOINT_RAG_DENSE_CAP_MIB", "0")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    dispatch.last_path = ""
    cli, _ = fit_smoke(
        tmp_path / "run", "--trainer.accelerator=gpu", "--trainer.devices=1", "--trainer.max_steps=1"
    )
    assert dispatch.last_path == "triton"
    assert cli.model.system.index.vectors.is_cuda
