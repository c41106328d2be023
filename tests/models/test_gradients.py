"""The answer loss reaches the passage encoder, query encoder and projector through top-k."""

from __future__ import annotations

import torch

from joint_rag.data.collate import collate_examples


def grad_norm(params) -> float:
    total = 0.0
    for p in params:
        if p.grad is not None:
            assert torch.isfinite(p.grad).all()
            total += float(p.grad.abs().sum())
    return total


def run_step(module, data):
    module.train()
    module.build_index(show_progress=False)
    batch = collate_examples(data.train[:3])
    loss = module.training_step(batch, 0) if module._trainer is not None else None
    if loss is None:
        inputs = module._joint_inputs(batch, module.objective.needs)
        loss, _ = module.objective(inputs)
    loss.backward()
    return loss


def test_answer_loss_reaches_all_retrieval_parts(tiny_module):
    module, data = tiny_module()
    loss = run_step(module, data)
    assert torch.isfinite(loss)
    passage = [module.system.compressor.memory_tokens, *module.system.compressor.backbone.parameters()]
    query = [p for n, p in module.system.query_encoder.named_parameters() if not n.startswith("projector.")]
    assert grad_norm(passage) > 0
    assert grad_norm(query) > 0, "query encoder only gets gradient through the straight-through top-k"
    assert grad_norm(module.system.compressor.projector.parameters()) > 0
    assert grad_norm(module.system.generator.parameters()) > 0


def test_frozen_passage_encoder_gets_no_gradient(tiny_module):
    module, data = tiny_module(freeze_passage_encoder=True)
    run_step(module, data)
    passage = [module.system.compressor.memory_tokens, *module.system.compressor.backbone.parameters()]
    assert all(p.grad is None for p in passage)
    query = [p for n, p in module.system.query_encoder.named_parameters() if not n.startswith("projector.")]
    assert grad_norm(query) > 0
    assert grad_norm(module.system.compressor.projector.parameters()) > 0


def test_mean_pool_retrieval_and_maxsim_also_train(tiny_module):
    from joint_rag.models import Compressor

    for similarity, retrieval in (("cosine", "mean_pool"), ("maxsim", "memory"), ("dot", "memory")):
        comp = Compressor("tiny-bert", num_memory_tokens=2, max_length=48, retrieval=retrieval)
        module, data = tiny_module(compressor=comp, similarity=similarity)
        run_step(module, data)
        query = [
            p for n, p in module.system.query_encoder.named_parameters() if not n.startswith("projector.")
        ]
        assert grad_norm(query) > 0, similarity


def test_end_to_end_without_retriever_gradient_trains_the_generator_only(tiny_module):
    from joint_rag.losses import EndToEnd

    module, data = tiny_module(objectives={"end_to_end": EndToEnd(retriever_gradient=False)})
    assert not module.objective.answer_trains_retriever
    module.train()
    module.build_index(show_progress=False)
    batch = collate_examples(data.train[:3])
    inputs = module._joint_inputs(batch, module.objective.needs, detach_selection=True)
    loss, _ = module.objective(inputs)
    loss.backward()
    query = [p for n, p in module.system.query_encoder.named_parameters() if not n.startswith("projector.")]
    assert grad_norm(query) == 0, "the query side is reached only through the (detached) selection"
    assert grad_norm(module.system.generator.parameters()) > 0
    assert grad_norm(module.system.compressor.projector.parameters()) > 0  # memory still trains
    with_grad, _ = tiny_module(objectives={"end_to_end": EndToEnd()})
    assert with_grad.objective.answer_trains_retriever


def test_frozen_retriever_sends_no_gradient_into_the_retrieval_path(tiny_module):
    """With both encoders frozen the `frozen` ablation row trains nothing that makes retrieval
    vectors: with extractive generator memory the projector feeds only the retrieval vectors
    (retrieval="memory"), so it must get no gradient; the generator side still trains."""
    from joint_rag.models import Compressor

    comp = Compressor("tiny-bert", num_memory_tokens=2, max_length=48, memory="extractive", extract_tokens=4)
    module, data = tiny_module(compressor=comp, freeze_passage_encoder=True, freeze_query_encoder=True)
    assert module.retriever_frozen
    run_step(module, data)
    assert all(p.grad is None or not p.grad.any() for p in module.system.compressor.projector.parameters())
    assert grad_norm(module.system.generator.parameters()) > 0
