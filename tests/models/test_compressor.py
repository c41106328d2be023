"""Compressor outputs: memory shape, and mean-pool retrieval that ignores the memory tokens."""

from __future__ import annotations

import pytest
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


@pytest.mark.parametrize("backbone", ["tiny-bert", "tiny-llama"])
def test_last_token_retrieval_is_the_last_text_state_whatever_the_padding(backbone):
    torch.manual_seed(0)
    comp = Compressor(backbone, num_memory_tokens=2, retrieval="last_token").eval()
    texts = ["short text", "a somewhat longer passage of text here"]
    batched = comp(texts, need_memory=False).retrieval  # the short one is padded
    for i, text in enumerate(texts):
        enc = comp.tokenize([text])
        with torch.no_grad():
            hidden = comp.backbone(**enc).last_hidden_state  # (1, L, H), no padding
        torch.testing.assert_close(batched[i, 0], hidden[0, -1], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="'memory', 'mean_pool', 'last_token' or 'pool'"):
        Compressor("tiny-bert", retrieval="cls")


def test_memory_retrieval_is_the_memory():
    comp = Compressor("tiny-bert", num_memory_tokens=2)
    comp.build_projector(8)
    out = comp(["text"])
    assert out.retrieval is out.memory and out.memory.shape == (1, 2, 8)


def _extractive(k: int = 6):
    from joint_rag.models import Compressor, Generator

    torch.manual_seed(0)
    gen = Generator("tiny-llama")
    comp = Compressor("tiny-bert", num_memory_tokens=2, max_length=48, memory="extractive", extract_tokens=k)
    comp.build_projector(gen.hidden_size)
    comp.attach_generator(gen)
    return comp, gen


def test_extractive_memory_is_generator_token_embeddings_in_passage_order():
    comp, gen = _extractive(k=6)
    texts = ["Ama Lo keeps a ferret as a pet and plays the oboe.", "Bo Ri likes amber."]
    out = comp(texts)
    assert out.memory.shape == (2, 6, gen.hidden_size)
    assert out.retrieval.shape == (2, 2, gen.hidden_size)  # memory tokens serve retrieval
    table = gen.model.get_input_embeddings().weight
    for b, text in enumerate(texts):
        ids = gen.tokenizer(text, add_special_tokens=False).input_ids
        rows = [(table - out.memory[b, j]).abs().sum(-1).argmin().item() for j in range(6)]
        assert all(torch.equal(out.memory[b, j], table[r]) for j, r in enumerate(rows))
        real = [r for r in rows if r != gen.tokenizer.pad_token_id]
        # a subsequence of the passage's tokens, in order
        it = iter(ids)
        assert all(any(r == t for t in it) for r in real)
    assert len([r for r in rows if r != gen.tokenizer.pad_token_id]) <= len(
        gen.tokenizer(texts[1], add_special_tokens=False).input_ids
    )


def test_extractive_memory_trains_the_scorer_and_backbone_not_the_embeddings():
    comp, gen = _extractive(k=4)
    out = comp(["Ama Lo keeps a ferret as a pet and plays the oboe."])
    (out.memory * torch.randn_like(out.memory)).sum().backward()
    assert comp.scorer.weight.grad is not None and comp.scorer.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in comp.backbone.parameters())
    assert gen.model.get_input_embeddings().weight.grad is None


def test_extractive_queries_skip_extraction_and_copies_share_the_generator():
    comp, _ = _extractive()
    out = comp(["who keeps a ferret?"], need_memory=False)
    assert out.memory is None and out.retrieval.shape[1] == 2
    assert comp.copy_for_queries()._generator_parts is comp._generator_parts
    bare = type(comp)("tiny-bert", num_memory_tokens=2, memory="extractive", extract_tokens=2, output_dim=8)
    with pytest.raises(RuntimeError, match="attach_generator"):
        bare(["text"])
    with pytest.raises(ValueError, match="extract_tokens"):
        type(comp)("tiny-bert", memory="extractive", extract_tokens=0)


@pytest.mark.parametrize("layers", [1, 2])
def test_center_projector_zeroes_the_mean_memory_and_survives_save_load(tmp_path, layers):
    torch.manual_seed(0)
    comp = Compressor("tiny-bert", num_memory_tokens=3, projector_layers=layers, center_projector=True)
    comp.build_projector(8)
    texts = [f"passage number {i} about {w}" for i, w in enumerate(["cats", "oboes", "towns", "rivers"] * 3)]
    before = comp.eval()(texts).memory
    spread = comp.center_projector(texts, batch_size=5)  # batches of 5, 5, 2
    after = comp(texts).memory  # (12, 3, 8)
    torch.testing.assert_close(after.mean(0), torch.zeros(3, 8), atol=1e-5, rtol=0)
    torch.testing.assert_close(after, before - before.mean(0), atol=1e-5, rtol=0)  # an offset, nothing else
    assert spread[0] > 0.5 and spread[1] < spread[0], spread  # the memory starts in one direction
    loaded = Compressor.from_pretrained(comp.save_pretrained(tmp_path / "c")).eval()
    torch.testing.assert_close(loaded(texts).memory, after, atol=1e-5, rtol=0)


def test_center_projector_needs_the_option_and_passages():
    comp = Compressor("tiny-bert", num_memory_tokens=2)
    comp.build_projector(8)
    with pytest.raises(RuntimeError, match="center_projector: true"):
        comp.center_projector(["text"])
    comp = Compressor("tiny-bert", num_memory_tokens=2, center_projector=True)
    comp.build_projector(8)
    with pytest.raises(ValueError, match="no passages"):
        comp.center_projector([])


def test_the_module_centres_at_fit_setup_only(tiny_module):
    module, _ = tiny_module(
        compressor=Compressor("tiny-bert", num_memory_tokens=2, max_length=48, center_projector=True)
    )
    offset = module.system.compressor.projector[-1].bias
    module.setup("validate")
    assert offset.abs().sum() == 0
    module.setup("fit")
    assert offset.abs().sum() > 0
    assert module.system.query_encoder.projector is module.system.compressor.projector  # one space


@pytest.mark.parametrize("backbone", ["tiny-bert", "tiny-llama"])
def test_pool_readout_starts_as_the_mean_pooled_vector_and_slots_part(backbone):
    torch.manual_seed(0)
    comp = Compressor(backbone, num_memory_tokens=3, memory_readout="pool", retrieval="mean_pool").eval()
    comp.build_projector(8)
    texts = ["short text", "a somewhat longer passage of text here"]  # padded in a batch
    out = comp(texts)
    assert out.memory.shape == (2, 3, 8) and out.retrieval.shape[:2] == (2, 1)
    with torch.no_grad():
        pooled = comp.projector(out.retrieval[:, 0])  # the mean-pooled state, projected
    # near-uniform attention at init: every slot is nearly the mean-pooled vector, padding ignored
    torch.testing.assert_close(out.memory, pooled.unsqueeze(1).expand(-1, 3, -1), atol=5e-3, rtol=1e-2)
    with torch.no_grad():
        comp.memory_tokens.copy_(torch.randn_like(comp.memory_tokens) * 5)
    parted = comp(texts).memory
    assert (parted[:, 0] - parted[:, 1]).abs().max() > 1e-2  # learned queries give distinct slots
    for i, text in enumerate(texts):  # each text alone (no padding) gives the same slots
        torch.testing.assert_close(comp([text]).memory[0], parted[i], atol=1e-4, rtol=0)


def test_pool_readout_trains_its_queries_at_the_new_parts_rate_and_reloads(tmp_path, tiny_module):
    comp = Compressor(
        "tiny-bert", num_memory_tokens=2, max_length=48, memory_readout="pool", retrieval="memory"
    )
    module, _ = tiny_module(compressor=comp, lr=1e-3, lr_retriever=1e-5)
    groups = module.configure_optimizers()["optimizer"].param_groups
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert rate[id(module.system.compressor.memory_tokens)] == 1e-3
    assert rate[id(module.system.query_encoder.memory_tokens)] == 1e-3
    assert rate[id(next(module.system.compressor.backbone.parameters()))] == 1e-5
    out = module.system.compressor(["a passage to read"]).memory
    out.sum().backward()
    assert module.system.compressor.memory_tokens.grad.abs().sum() > 0  # the queries get a gradient
    loaded = Compressor.from_pretrained(module.system.compressor.save_pretrained(tmp_path / "c")).eval()
    assert loaded.memory_readout == "pool"
    torch.testing.assert_close(
        loaded(["a passage to read"]).memory, module.system.compressor.eval()(["a passage to read"]).memory
    )
    with pytest.raises(ValueError, match="memory_readout"):
        Compressor("tiny-bert", memory_readout="cls")


def _parted_slots(m: int) -> Compressor:
    """M pooled slots retrieving unprojected, their queries started large (slots apart), eval mode."""
    return Compressor(
        "tiny-bert",
        num_memory_tokens=m,
        max_length=48,
        memory_readout="pool",
        retrieval="pool",
        pool_init_std=3.0,
    ).eval()


def test_pool_retrieval_is_the_unprojected_slots_and_trains_both_sides(tiny_module, tmp_path):
    torch.manual_seed(0)
    one = Compressor("tiny-bert", num_memory_tokens=1, max_length=48, memory_readout="pool", retrieval="pool")
    plain = Compressor("tiny-bert", num_memory_tokens=1, max_length=48, retrieval="mean_pool")
    plain.backbone.load_state_dict(one.backbone.state_dict())
    texts = ["short text", "a somewhat longer passage of text here"]
    one.eval(), plain.eval()
    # one slot at the default (small) query scale is the mean-pooled vector, in the backbone's space
    got = one(texts, need_memory=False).retrieval
    assert got.shape == (2, 1, one.hidden)
    torch.testing.assert_close(got, plain(texts, need_memory=False).retrieval, atol=5e-3, rtol=1e-2)
    torch.manual_seed(0)
    four = _parted_slots(4)
    four.build_projector(8)
    out = four(texts)
    assert out.retrieval.shape == (2, 4, four.hidden) and out.memory.shape == (2, 4, 8)
    assert (out.retrieval[:, 0] - out.retrieval[:, 1]).abs().max() > 1e-2  # a larger scale starts them apart
    loaded = Compressor.from_pretrained(four.save_pretrained(tmp_path / "c")).eval()
    assert (loaded.retrieval_mode, loaded.pool_init_std) == ("pool", 3.0)
    torch.testing.assert_close(loaded(texts).retrieval, out.retrieval)
    module, data = tiny_module(
        compressor=Compressor(
            "tiny-bert", num_memory_tokens=2, max_length=48, memory_readout="pool", retrieval="pool"
        ),
        similarity="maxsim",
    )
    assert module.system.query_encoder.projector is None  # queries need no projector: no shared space to keep
    from joint_rag.data.collate import collate_examples

    module.train()
    module.build_index(show_progress=False)
    total, _ = module.objective(
        module._joint_inputs(collate_examples(data.train[:3]), module.objective.needs)
    )
    total.backward()
    assert module.system.compressor.memory_tokens.grad.abs().sum() > 0
    assert module.system.query_encoder.memory_tokens.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs memory_readout: pool"):
        Compressor("tiny-bert", retrieval="pool")


def test_normalize_retrieval_gives_unit_vectors_so_maxsim_sums_cosines(tmp_path):
    from joint_rag.kernels import similarity

    torch.manual_seed(0)
    comp = _parted_slots(3)
    raw = comp(["a passage to read", "another one"], need_memory=False).retrieval
    comp.normalize_retrieval = True
    unit = comp(["a passage to read", "another one"], need_memory=False).retrieval
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(2, 3))
    torch.testing.assert_close(unit, torch.nn.functional.normalize(raw, dim=-1))
    scores = similarity(unit[:1], unit, "maxsim")  # (1, 2): a sum of 3 cosines, at most 3
    assert float(scores.max()) <= 3 + 1e-5 and float(scores[0, 0]) == pytest.approx(3.0, abs=1e-5)
    comp.build_projector(8)
    assert torch.allclose(
        comp(["a passage to read"]).retrieval.norm(dim=-1), torch.ones(1, 3)
    )  # the memory path too
    comp2 = Compressor(
        "tiny-bert",
        num_memory_tokens=3,
        max_length=48,
        memory_readout="pool",
        retrieval="pool",
        normalize_retrieval=True,
    )
    loaded = Compressor.from_pretrained(comp2.save_pretrained(tmp_path / "c"))
    assert loaded.normalize_retrieval
