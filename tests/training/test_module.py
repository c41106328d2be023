"""The training module around its RAGSystem: per-example candidate lists (HotpotQA style), the
index-refresh callback, usefulness objectives in text mode, metric cut-offs from the config."""

from __future__ import annotations

import random

import pytest
import torch

from joint_rag.data.collate import collate_examples
from joint_rag.training.callbacks import IndexRefresh


def with_candidates(data, n=5, seed=0):
    rng = random.Random(seed)
    ids = data.corpus.ids
    for ex in data.train + data.val:
        others = [p for p in rng.sample(ids, n + 2) if p not in ex.gold_passage_ids][: n - 1]
        ex.candidate_ids = others + list(ex.gold_passage_ids[:1])
        rng.shuffle(ex.candidate_ids)
    return data


def test_example_candidates_train_and_rank(tiny_module):
    module, data = tiny_module(candidate_source="example", num_candidates=4)
    data = with_candidates(data)
    batch = collate_examples(data.train[:3])
    inputs = module._joint_inputs(batch, module.objective.needs)
    assert inputs.scores.shape == (3, 4)
    assert inputs.gold.any(dim=1).all()  # gold forced in when the truncated list misses it
    loss, _ = module.objective(inputs)
    loss.backward()
    assert module.system.index is None  # no corpus index is needed in this mode
    module.eval()
    val = collate_examples(data.val[:2])
    ranked = module.system.rank_candidates(val.queries, val.instructions, val.candidate_ids)
    assert [sorted(ids) for ids, _ in ranked] == [sorted(c) for c in val.candidate_ids]
    assert all(torch.all(s[:-1] >= s[1:]) for _, s in ranked)  # best first


def test_too_few_candidates_is_a_clear_error(tiny_module):
    module, data = tiny_module(candidate_source="example", num_candidates=4)
    data = with_candidates(data, n=2)
    with pytest.raises(ValueError, match="has 2 candidates but model.num_candidates is 4"):
        module.training_candidates(collate_examples(data.train[:2]))


def test_index_refresh_every_n_steps(tiny_module):
    module, _ = tiny_module()
    calls = []
    module.build_index = lambda show_progress=True: calls.append(1) or setattr(module.system, "index", _Idx())

    class _Idx:
        step = 0

    class _Trainer:
        global_step = 0
        sanity_checking = False
        fast_dev_run = False

    cb, trainer = IndexRefresh(every_n_steps=2, show_progress=False), _Trainer()
    cb.on_train_start(trainer, module)
    for step in range(1, 7):
        trainer.global_step = step
        cb.on_train_batch_end(trainer, module, None, None, step)
    assert len(calls) == 1 + 3  # fit start + steps 2, 4, 6
    state = cb.state_dict()
    assert state["last_refresh_step"] == 6 and state["refreshes"] == 4
    trainer.global_step = 6
    cb.on_train_batch_end(trainer, module, None, None, 7)  # same global step (gradient accumulation)
    assert len(calls) == 4


def test_text_mode_usefulness_objectives_train_the_retriever(tiny_module):
    from joint_rag.losses import EMDR2, PerplexityDistillation, RAGSequence
    from joint_rag.models import Generator

    for objective in (RAGSequence(temperature=0.1), PerplexityDistillation(), EMDR2()):
        module, data = tiny_module(
            generator=Generator("tiny-llama", mode="text"), objectives={"u": objective}
        )
        module.build_index(show_progress=False)
        inputs = module._joint_inputs(collate_examples(data.train[:2]), module.objective.needs)
        assert inputs.passage_loglik.shape == (2, 2)
        loss, _ = module.objective(inputs)
        loss.backward()
        grads = [p.grad for n, p in module.system.query_encoder.named_parameters() if p.grad is not None]
        assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_metric_cutoffs_come_from_the_config(tiny_module):
    module, data = tiny_module(recall_at=(1, 2, 3), mrr_at=3, ndcg_at=4, all_gold_at=(2,))
    assert module.val_retrieval.names == ["recall@1", "recall@2", "recall@3", "mrr@3", "ndcg@4", "all_gold@2"]
    module.eval()
    module.validation_step(collate_examples(data.val[:4]), 0)
    values = module.val_retrieval.compute()
    assert set(values) == set(module.val_retrieval.names)
    assert float(values["recall@1"]) <= float(values["recall@2"]) <= float(values["recall@3"])


@pytest.mark.parametrize("index_in_checkpoint", [True, False])
def test_a_resumed_fit_keeps_or_tags_its_index_with_the_restored_step(tmp_path, index_in_checkpoint):
    """A checkpoint holds the index it was trained with: the resumed fit searches it as it was
    (built at step 0, so 2 steps stale at step 2: no rebuild). From a checkpoint without one,
    IndexRefresh builds the index once the global step is restored and tags it with step 2
    (staleness counts from there), not 0."""
    from smoke_fit import fit_smoke

    from joint_rag.config import make_cli
    from joint_rag.training.module import CHECKPOINT_KEY

    _, ckpt = fit_smoke(tmp_path / "run", "--trainer.val_check_interval=100", "--trainer.limit_val_batches=0")
    config = ckpt.parents[1] / "config.yaml"
    state = torch.load(ckpt, weights_only=True)
    assert state[CHECKPOINT_KEY]["index"]["step"] == 0
    if not index_in_checkpoint:
        del state[CHECKPOINT_KEY]["index"]
        ckpt = tmp_path / "no-index.ckpt"
        torch.save(state, ckpt)
    steps = []

    class Spy(IndexRefresh):
        def _refresh(self, trainer, pl_module):
            super()._refresh(trainer, pl_module)
            steps.append((trainer.global_step, pl_module.system.index.step))

    cli = make_cli(
        [
            "-c",
            str(config),
            f"--trainer.default_root_dir={tmp_path / 'resumed'}",
            "--trainer.max_steps=3",
            "--trainer.limit_val_batches=0",
        ],
        run=False,
    )
    cli.trainer.callbacks = [c for c in cli.trainer.callbacks if not isinstance(c, IndexRefresh)]
    cli.trainer.callbacks.append(Spy(every_n_steps=100, show_progress=False))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=str(ckpt))
    assert cli.trainer.global_step == 3
    if index_in_checkpoint:
        assert steps == [] and cli.model.index_restored and cli.model.system.index.step == 0
    else:
        assert steps[0] == (2, 2)


@pytest.mark.parametrize("retrieval", ["mean_pool", "memory"])
def test_query_side_training_reads_passage_vectors_from_the_index(tiny_module, retrieval):
    """A frozen plain passage encoder (mean_pool) takes its vectors from the index, with the
    scores of encoding them; under memory retrieval the projector trains, so it encodes."""
    from joint_rag.losses import Similarity
    from joint_rag.models import Compressor

    module, data = tiny_module(
        compressor=Compressor("tiny-bert", num_memory_tokens=2, max_length=48, retrieval=retrieval),
        objectives={"similarity": Similarity()},
        freeze_passage_encoder=True,
        similarity="cosine",
    )
    module.train()
    module.build_index(show_progress=False)
    batch = collate_examples(data.train[:4])
    calls = []
    real = module.system.compressor.forward
    module.system.compressor.forward = lambda *a, **k: calls.append(1) or real(*a, **k)
    random.seed(0), torch.manual_seed(0)  # candidates, and the query side's dropout
    fast = module._joint_inputs(batch, module.objective.needs)
    assert bool(calls) == (retrieval == "memory")
    if retrieval == "memory":
        return
    module._index_passage_vectors = lambda ids: None  # the encoding path, for reference
    random.seed(0), torch.manual_seed(0)
    slow = module._joint_inputs(batch, module.objective.needs)
    assert calls  # it did encode this time
    torch.testing.assert_close(fast.scores, slow.scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.inbatch_scores, slow.inbatch_scores, atol=1e-5, rtol=0)
    loss, _ = module.objective(fast)
    loss.backward()
    grads = [p.grad for p in module.system.query_encoder.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0  # the query side trains


def test_end_to_end_with_a_text_reader_warns_that_the_retriever_gets_no_gradient(tiny_module):
    import warnings

    from joint_rag.losses import EndToEnd, LMSupervisedRetrieval
    from joint_rag.models import Generator

    with pytest.warns(UserWarning, match=r"\['end_to_end'\].*cannot reach the retrieval scores"):
        tiny_module(generator=Generator("tiny-llama", mode="text", max_new_tokens=3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        tiny_module(generator=Generator("tiny-llama", max_new_tokens=3))  # memory mode: the gradient flows
        tiny_module(  # a text reader with a distilled objective, or the answer loss on the generator only
            generator=Generator("tiny-llama", mode="text", max_new_tokens=3),
            objectives={"lsr": LMSupervisedRetrieval(), "gen": EndToEnd(retriever_gradient=False)},
        )
