"""Label-free training (``model.relevance_labels: false``): no objective sees a gold id, no gold
passage is put among the candidates, label-reading objectives are refused; the self-training and
distant-supervision positives of ``Similarity``."""

from __future__ import annotations

import math

import pytest
import torch

from joint_rag.data.collate import collate_examples
from joint_rag.losses import EndToEnd, ObjectiveInputs, Reinforce, Similarity
from joint_rag.losses.similarity import first_by, to_inbatch


def test_label_free_hides_gold_and_never_injects_it(tiny_module):
    labelled, data = tiny_module(num_candidates=2)
    batch = collate_examples(data.train[:6])
    labelled.build_index(show_progress=False)
    with_labels = labelled.training_candidates(batch)
    golds = [set(g) for g in batch.gold_ids]
    assert all(set(row) & g for row, g in zip(with_labels, golds))  # injected when missed
    free, _ = tiny_module(num_candidates=2, relevance_labels=False)
    free.build_index(show_progress=False)
    searched, _ = free.candidate_ids(batch.queries, batch.instructions)
    assert free.training_candidates(batch) == searched  # exactly what the index returned
    inputs = free._joint_inputs(batch, free.objective.needs)
    assert not inputs.gold.any() and not inputs.inbatch_gold.any()
    # the tiny untrained retriever misses some gold at C=2, so injection did change something
    assert searched != with_labels


@pytest.mark.parametrize(
    ("objective", "name"),
    [(Similarity(), "similarity"), (Reinforce(reward="ndcg"), "rl")],
)
def test_label_reading_objectives_are_refused(tiny_module, objective, name):
    with pytest.raises(ValueError, match=rf"relevance_labels is false but objectives \['{name}'\] read"):
        tiny_module(objectives={name: objective, "e2e": EndToEnd()}, relevance_labels=False)


def test_pretraining_is_refused_without_labels(tiny_module):
    with pytest.raises(ValueError, match="pretrain_steps > 0"):
        tiny_module(relevance_labels=False, pretrain_steps=2)


def test_label_free_positives_are_allowed_and_train(tiny_module):
    for positives in ("reference_top1", "answer_match"):
        module, data = tiny_module(
            objectives={"s": Similarity(positives=positives)}, relevance_labels=False, num_candidates=4
        )
        module.build_index(show_progress=False)
        batch = collate_examples(data.train[:4])
        inputs = module._joint_inputs(batch, module.objective.needs)
        assert inputs.reference_scores is not None
        if positives == "answer_match":
            texts = {
                p: t
                for p, t in zip(module.system.corpus.ids, module.system.texts_of(module.system.corpus.ids))
            }
            cands = module.training_candidates(batch)  # same index, same search
            for b, row in enumerate(cands):
                for c, pid in enumerate(row):
                    hit = any(a.lower() in texts[pid].lower() for a in batch.all_answers[b])
                    assert bool(inputs.answer_match[b, c]) == hit
        loss, _ = module.objective(inputs)
        assert torch.isfinite(loss)
        loss.backward()


def test_first_by_picks_the_best_allowed():
    ref = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])
    allowed = torch.tensor([[True, False, True], [False, False, False]])
    assert first_by(ref, allowed).tolist() == [[False, False, True], [False, False, False]]
    assert first_by(ref, torch.ones_like(allowed)).tolist() == [[False, True, False], [True, False, False]]


def test_pseudo_positives_map_onto_inbatch_columns():
    mask = torch.tensor([[False, True], [True, False]])
    cols = torch.tensor([[0, 2], [2, 1]])
    assert to_inbatch(mask, cols, 3).tolist() == [[False, False, True], [False, False, True]]


def test_similarity_positives_hand_computed():
    # exp(scores) = (1, 3, 4): the reference ranks candidate 0 first -> -ln(1/8); the answer
    # matches candidates 1 and 2, the reference prefers 2 among them -> -ln(4/8)
    scores = torch.log(torch.tensor([[1.0, 3.0, 4.0]]))
    inputs = ObjectiveInputs(
        scores=scores,
        gold=torch.zeros(1, 3, dtype=torch.bool),
        reference_scores=torch.tensor([[0.9, 0.1, 0.5]]),
        answer_match=torch.tensor([[False, True, True]]),
    )
    top1 = Similarity(temperature=1.0, in_batch=False, positives="reference_top1")(inputs)["info_nce"]
    assert top1.item() == pytest.approx(math.log(8.0), abs=1e-6)
    ds = Similarity(temperature=1.0, in_batch=False, positives="answer_match")(inputs)["info_nce"]
    assert ds.item() == pytest.approx(math.log(2.0), abs=1e-6)
    inputs.answer_match = torch.zeros(1, 3, dtype=torch.bool)  # no match: the query is skipped
    assert (
        Similarity(temperature=1.0, in_batch=False, positives="answer_match")(inputs)["info_nce"].item()
        == 0.0
    )
    with pytest.raises(ValueError, match="positives must be one of"):
        Similarity(positives="bm25")
    assert Similarity().reads_labels and not Similarity(positives="answer_match").reads_labels


def test_label_free_rag_token_trains_a_lora_text_reader_and_the_retriever(tiny_module):
    from joint_rag.losses import RAGToken
    from joint_rag.models import Generator

    module, data = tiny_module(
        generator=Generator("tiny-llama", mode="text", train_mode="lora", max_passage_tokens=24),
        objectives={"rag_token": RAGToken(temperature=0.05)},
        relevance_labels=False,
        num_candidates=4,
    )
    module.build_index(show_progress=False)
    inputs = module._joint_inputs(collate_examples(data.train[:4]), module.objective.needs)
    loss, _ = module.objective(inputs)
    loss.backward()
    lora = [p for n, p in module.system.generator.named_parameters() if "lora" in n]
    assert lora and any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    assert module.system.query_encoder is not None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.system.compressor.parameters())
