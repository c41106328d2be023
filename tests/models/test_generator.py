"""Generator: vocabulary logits only where an answer token is predicted, same loss and gradients."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from transformers import GenerationConfig

from joint_rag.models import Generator
from joint_rag.models import generator as generator_mod

# prompts of different lengths, so the answer positions differ between rows
QUERIES = ["where?", "what colour is the long-tailed cat of the miller?", "who"]
ANSWERS = ["in Torvik", "grey", "the miller's daughter Anna"]


def _loss_and_grads(gen: Generator, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
    gen.zero_grad()
    memory = memory.clone().requires_grad_(True)
    out = gen(QUERIES, ANSWERS, memory=memory)
    (out.nll.sum() + out.token_logprobs.sum()).backward()
    grads = {n: p.grad.clone() for n, p in gen.named_parameters() if p.grad is not None}
    return out.token_logprobs.detach(), memory.grad, grads


@pytest.mark.parametrize("train_mode", ["full", "lora"])
def test_sliced_logits_give_the_full_logits_loss_and_gradients(monkeypatch, train_mode):
    torch.manual_seed(0)
    gen = Generator("tiny-llama", train_mode=train_mode, lora_rank=4)
    assert generator_mod._logits_kwarg(gen.model) == "logits_to_keep"
    memory = torch.randn(3, 2, 2, gen.hidden_size)  # (B, K, M, H)

    calls = []
    forward = type(gen.model).forward

    @functools.wraps(forward)  # keeps the signature the generator inspects
    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("logits_to_keep"))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(gen.model), "forward", spy)
    sliced = _loss_and_grads(gen, memory)
    keep = calls[-1]
    assert isinstance(keep, torch.Tensor) and keep.numel() > 0
    monkeypatch.setattr(generator_mod, "_logits_kwarg", lambda model: None)  # every position's logits
    full = _loss_and_grads(gen, memory)
    assert calls[-1] is None

    torch.testing.assert_close(sliced[0], full[0])
    assert (sliced[0] != 0).any()
    torch.testing.assert_close(sliced[1], full[1])
    assert sliced[2].keys() == full[2].keys() and sliced[2]
    for name in full[2]:
        torch.testing.assert_close(sliced[2][name], full[2][name], msg=name)


def test_only_predicting_positions_are_kept(monkeypatch):
    torch.manual_seed(0)
    gen = Generator("tiny-llama")
    memory = torch.randn(3, 2, 2, gen.hidden_size)
    kept = []
    forward = type(gen.model).forward

    @functools.wraps(forward)
    def spy(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        kept.append((kwargs["inputs_embeds"].shape[1], out.logits.shape[1]))
        return out

    monkeypatch.setattr(type(gen.model), "forward", spy)
    out = gen(QUERIES, ANSWERS, memory=memory)
    seq_len, logit_positions = kept[-1]
    assert logit_positions < seq_len
    # at most one position per answer token per row
    assert logit_positions <= int(out.token_mask.sum())


def test_generation_is_unchanged_by_last_position_logits(monkeypatch):
    torch.manual_seed(0)
    gen = Generator("tiny-llama", max_new_tokens=5)
    memory = torch.randn(3, 2, 2, gen.hidden_size)
    sliced = gen.generate(QUERIES, memory=memory)
    monkeypatch.setattr(generator_mod, "_logits_kwarg", lambda model: None)
    assert gen.generate(QUERIES, memory=memory) == sliced


def _spread_generator(train_mode: str, mode: str = "memory") -> Generator:
    """A tiny generator whose weights (all, or the LoRA adapters) are spread so greedy decoding
    is not degenerate."""
    torch.manual_seed(0)
    gen = Generator("tiny-llama", mode=mode, train_mode=train_mode, max_new_tokens=6).eval()
    with torch.no_grad():
        for name, p in gen.model.named_parameters():
            if train_mode == "full" or "lora_B" in name:
                p.normal_(0, 0.3)
    return gen


#: greedy answers of the hand-written KV-cache loop (commit 43c76c4) on ``_spread_generator``
PINNED_GREEDY = {
    "memory/full": ["\\\ufffdw\tf", "t\ufffd@@@@", "\\\ufffdwt\ufffd"],
    "memory/lora": ["eeeeee", ":eeeee", ""],
    "text/full": ["\\\ufffd\ufffd@\ufffd", "@k@k@k", "\\\ufffd\ufffd@\ufffd"],
    "text/lora": ["eeeeee", "::eeee", ""],
}


@pytest.mark.parametrize("case", sorted(PINNED_GREEDY))
def test_greedy_answers_are_pinned(case: str) -> None:
    """Left-padded batches of different prompt lengths, memory and text mode, full and LoRA
    (the weights are spread so greedy decoding is not degenerate; one row stops at EOS)."""
    mode, train_mode = case.split("/")
    gen = _spread_generator(train_mode, mode)
    queries = ["Who?", "Where was the founder of Veloria born?", "x"]
    torch.manual_seed(1)
    if mode == "memory":
        memory = torch.randn(3, 2, 3, gen.hidden_size)
        answers = gen.generate(queries, memory=memory, instructions=[None, "Be brief.", None])
    else:
        answers = gen.generate(queries, passages=[["alpha beta", "gamma"], ["delta" * 5, "eps"], ["z", "y"]])
    assert answers == PINNED_GREEDY[case]


@pytest.mark.parametrize("train_mode", ["full", "lora"])
def test_checkpoint_generation_defaults_change_nothing(monkeypatch, capfd, train_mode):
    """A checkpoint's generation_config.json (sampling defaults, penalties, a minimum length) neither
    changes the greedy answers nor makes generate() print warnings."""
    gen = _spread_generator(train_mode)
    memory = torch.randn(3, 2, 3, gen.hidden_size)
    plain = gen.generate(QUERIES, memory=memory)
    load_backbone = generator_mod.load_backbone

    def load_with_defaults(spec, kind):
        bb = load_backbone(spec, kind)
        bb.model.generation_config = GenerationConfig(
            do_sample=True,
            temperature=0.2,
            top_p=0.9,
            top_k=5,
            repetition_penalty=1.5,
            no_repeat_ngram_size=2,
            min_new_tokens=4,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
        return bb

    monkeypatch.setattr(generator_mod, "load_backbone", load_with_defaults)
    gen = _spread_generator(train_mode)
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answers = gen.generate(QUERIES, memory=memory)
        short = gen.generate(QUERIES[:1], memory=memory[:1], max_new_tokens=2)
    assert answers == plain
    assert len(short) == 1 and len(gen.tokenizer(short[0]).input_ids) <= 2
    assert [str(w.message) for w in caught] == []
    assert capfd.readouterr().err == ""
