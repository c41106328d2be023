"""IndexRefresh modes: blocking, rolling (1/R of the corpus after each step) and rerank (stale
pool, fresh order); staleness metrics; state that survives resume."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from joint_rag.data.synthetic import SyntheticSource
from joint_rag.system import eval_mode
from joint_rag.training import IndexRefresh
from joint_rag.training.datamodule import RAGDataModule


class _Record(pl.Callback):
    """Logged staleness metrics and the index's row steps after every step."""

    def __init__(self) -> None:
        self.metrics: list[dict] = []
        self.row_steps: list[list[int]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        keys = ("train/staleness", "train/row_age_mean", "train/row_age_max", "train/stale_overlap")
        self.metrics.append({k: float(v) for k, v in trainer.callback_metrics.items() if k in keys})
        self.row_steps.append(pl_module.system.index.row_steps.tolist())


def _fit(module, refresh: IndexRefresh, steps: int, root, ckpt_path=None, checkpoint=False):
    record = _Record()
    callbacks = [refresh, record]
    if checkpoint:
        callbacks.append(pl.callbacks.ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=1))
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=checkpoint,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=callbacks,
        default_root_dir=root,
    )
    dm = RAGDataModule(source=SyntheticSource(num_entities=12, seed=0), batch_size=2)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return record, trainer


def test_rolling_refresh_spreads_one_full_pass_over_r_steps(tiny_module, tmp_path) -> None:
    module, data = tiny_module()
    n = len(data.corpus)
    record, _ = _fit(module, IndexRefresh(mode="rolling", rolling_steps=3, show_progress=False), 4, tmp_path)
    chunk = -(-n // 3)
    # after step s the rows [(s-1)*chunk, s*chunk) (mod N) carry step s: nothing is older than R steps
    for s, steps in enumerate(record.row_steps, start=1):
        for row in range((s - 1) * chunk, s * chunk):
            assert steps[row % n] == s, (s, row)
        assert s - min(steps) <= 3
    ages = [m["train/row_age_max"] for m in record.metrics]
    assert ages[0] == 0 and max(ages) <= 3, ages
    assert all("train/row_age_mean" in m for m in record.metrics)


def test_rolling_rows_equal_a_fresh_build_when_the_encoder_is_fixed(tiny_module) -> None:
    module, data = tiny_module()
    system = module.system
    system.build_index(show_progress=False)
    fresh = system.build_index(step=5, show_progress=False, replace=False)
    for p in system.compressor.parameters():  # change the encoder: stale rows now differ
        p.data.add_(0.05 * torch.randn_like(p))
    after = system.build_index(step=5, show_progress=False, replace=False)
    assert not torch.allclose(after.vectors, fresh.vectors)
    n = len(data.corpus)
    for start in range(0, n, 5):
        system.refresh_rows(list(range(start, min(n, start + 5))), step=5)
    torch.testing.assert_close(system.index.vectors, after.vectors)
    assert set(system.index.row_steps.tolist()) == {5} and system.index.step == 5


def test_rerank_keeps_the_fresh_best_of_the_stale_pool(tiny_module) -> None:
    module, data = tiny_module()
    system = module.system
    system.build_index(show_progress=False)
    for p in system.compressor.parameters():  # the index is now stale
        p.data.add_(0.05 * torch.randn_like(p))
    queries = [e.query for e in data.train[:6]]
    module.rerank_depth = len(data.corpus)  # the pool is everything: rerank == a fresh search
    cands, rows = module.candidate_ids(queries, None)
    assert rows.shape == (6, len(data.corpus))
    fresh = system.build_index(show_progress=False, replace=False)
    with torch.no_grad(), eval_mode(system):
        _, want = fresh.search(system.encode_queries(queries), system.num_candidates)
    assert [[fresh.passage_ids[r] for r in row] for row in want.tolist()] == cands


def test_rerank_mode_never_rebuilds_in_training(tiny_module, tmp_path) -> None:
    module, _ = tiny_module()
    refresh = IndexRefresh(mode="rerank", every_n_steps=1, rerank_depth=8, show_progress=False)
    record, _ = _fit(module, refresh, 3, tmp_path)
    assert refresh.refreshes == 1 and module.rerank_depth == 8  # only the first build
    assert [m["train/staleness"] for m in record.metrics] == [0.0, 1.0, 2.0]


def test_overlap_is_one_when_nothing_changed_and_logged_per_mode(tiny_module, tmp_path) -> None:
    module, _ = tiny_module(lr=0.0, lr_retriever=0.0)  # the encoder never changes
    refresh = IndexRefresh(mode="rolling", rolling_steps=4, overlap_every_n_steps=2, show_progress=False)
    record, _ = _fit(module, refresh, 2, tmp_path)
    assert record.metrics[1]["train/stale_overlap"] == 1.0
    module, _ = tiny_module(lr=1.0, lr_retriever=1.0)  # a big step: the blocking index goes stale
    blocking = IndexRefresh(mode="blocking", every_n_steps=2, show_progress=False)
    record, _ = _fit(module, blocking, 2, tmp_path / "b")
    overlap = record.metrics[1]["train/stale_overlap"]
    assert 0.0 <= overlap <= 1.0 and blocking.last_overlap == overlap


def test_rolling_state_survives_resume(tiny_module, tmp_path) -> None:
    module, _ = tiny_module()
    first = IndexRefresh(mode="rolling", rolling_steps=5, show_progress=False)
    _fit(module, first, 2, tmp_path, checkpoint=True)
    assert first.cursor > 0
    module, _ = tiny_module()
    resumed = IndexRefresh(mode="rolling", rolling_steps=5, show_progress=False)
    record, _ = _fit(module, resumed, 3, tmp_path, ckpt_path=str(tmp_path / "last.ckpt"), checkpoint=True)
    chunk = first.cursor // 2
    assert resumed.cursor == 3 * chunk  # went on from the saved cursor
    # the resumed fit searches the checkpoint's rolling index (rows of steps 1 and 2 and the
    # first build's, ages kept), then step 3 re-encodes the next slice
    after = record.row_steps[0]
    assert set(after[:chunk]) == {1} and set(after[chunk : 2 * chunk]) == {2}
    assert set(after[2 * chunk : 3 * chunk]) == {3} and set(after[3 * chunk :]) <= {0}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "lazy"}, "mode must be one of"),
        ({"mode": "rolling", "every_n_steps": 0}, "rolling_steps >= 1"),
        ({"rerank_depth": 0}, "rerank_depth must be >= 1"),
        ({"probe_queries": -1}, "probe_queries must be >= 0"),
    ],
)
def test_bad_refresh_options_are_one_line(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        IndexRefresh(**kwargs)


def test_rerank_depth_must_exceed_c(tiny_module) -> None:
    module, _ = tiny_module()
    with pytest.raises(ValueError, match="must exceed model.num_candidates=4"):
        IndexRefresh(mode="rerank", rerank_depth=4).setup(None, module, "fit")


def test_rolling_updates_an_index_built_under_inference_mode(tiny_module) -> None:
    """Lightning's validate runs under torch.inference_mode: an index (and corpus memory) built
    there must still take a rolling refresh's in-place writes in training."""
    module, _ = tiny_module()
    with torch.inference_mode():
        module.system.build_index(show_progress=False)
    assert module.system.index.vectors.is_inference()
    module.system.refresh_rows([0, 1, 2], step=1)
    assert module.system.index.row_steps[:3].tolist() == [1, 1, 1]


@pytest.mark.parametrize("cache_memory", [False, True])
def test_a_frozen_plain_passage_encoder_is_never_re_encoded(tiny_module, tmp_path, cache_memory) -> None:
    """Query-side training (frozen mean-pooled passage encoder): the first build only, the rows
    marked fresh at every refresh; with a corpus memory (the projector trains) it rebuilds."""
    from joint_rag.losses import Similarity
    from joint_rag.models import Compressor

    module, _ = tiny_module(
        compressor=Compressor("tiny-bert", num_memory_tokens=2, max_length=48, retrieval="mean_pool"),
        objectives={"similarity": Similarity()},
        freeze_passage_encoder=True,
        cache_corpus_memory=cache_memory,
    )
    refresh = IndexRefresh(every_n_steps=1, show_progress=False)
    record, _ = _fit(module, refresh, 3, tmp_path)
    assert refresh.refreshes == (4 if cache_memory else 1)  # the first build, then one per step
    assert [m["train/row_age_max"] for m in record.metrics] == [0.0, 0.0, 0.0]
    assert all(set(steps) == {s} for s, steps in enumerate(record.row_steps, start=1))
