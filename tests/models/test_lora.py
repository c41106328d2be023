"""LoRA on compressor and generator: only adapters (and memory/projector) train."""

from __future__ import annotations

import torch

from joint_rag.models import Compressor, Generator


def test_lora_compressor_and_generator_train_adapters_only():
    torch.manual_seed(0)
    gen = Generator("tiny-llama", train_mode="lora", lora_rank=4)
    comp = Compressor("tiny-bert", num_memory_tokens=2, lora_rank=4)
    comp.build_projector(gen.hidden_size)
    out = comp(["a passage about Torvik", "another passage"])
    res = gen(["where?", "what?"], ["Torvik", "x"], memory=out.memory.view(2, 1, 2, -1))
    res.nll.mean().backward()
    trainable = {n for n, p in comp.named_parameters() if p.requires_grad}
    assert any("lora" in n for n in trainable)
    assert not any("encoder.layer.0.attention.self.query.base_layer.weight" in n for n in trainable)
    assert comp.memory_tokens.grad is not None and comp.memory_tokens.grad.abs().sum() > 0
    gen_trainable = [n for n, p in gen.named_parameters() if p.requires_grad]
    assert gen_trainable and all("lora" in n for n in gen_trainable)
    assert all(p.grad is not None for n, p in gen.named_parameters() if p.requires_grad and "lora_B" in n)


def test_text_mode_generator_reads_passages():
    gen = Generator("tiny-llama", mode="text", max_new_tokens=3)
    out = gen(["q?"], ["a"], passages=[["passage one", "passage two"]])
    assert torch.isfinite(out.nll).all()
    assert len(gen.generate(["q?"], passages=[["passage one", "passage two"]])) == 1
