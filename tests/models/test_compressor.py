"""Compressor outputs: memory shape, and mean-pool retrieval that ignores the memory tokens."""

from __future__ import annotations

import torch

from joint_rag.models import Compressor


def test_mean_pool_retrieval_is_the_plain_sentence_embedding():
    torch.manual_seed(0)
    comp = Compressor("tiny-bert", num_memory_tokens=3, retrieval="mean_pool").eval()
    comp.build_projector(16)
    texts = ["short text", "a somewhat longer passage of text"]
    out = comp(texts)
    assert out.memory.shape == (2, 3, 16) and out.retrieval.shape == (2, 1, 32)
    enc = comp.tokenize(texts)
    with torch.no_grad():
        hidden = comp.backbone(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    ref = (hidden * mask).sum(1) / mask.sum(1)
    assert torch.allclose(out.retrieval[:, 0], ref, atol=1e-6)
    with torch.no_grad():
        comp.memory_tokens.add_(torch.randn_like(comp.memory_tokens))
    assert torch.allclose(comp(texts).retrieval, out.retrieval, atol=1e-6)  # memory tokens do not leak in
    assert comp(texts, need_memory=False).memory is None


def test_memory_retrieval_is_the_memory():
    comp = Compressor("tiny-bert", num_memory_tokens=2)
    comp.build_projector(8)
    out = comp(["text"])
    assert out.retrieval is out.memory and out.memory.shape == (1, 2, 8)
