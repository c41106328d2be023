"""Frozen parts run in eval mode (no dropout noise) and trainable parts in train mode, also
after index builds and candidate searches, and in a real Lightning fit."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn

from joint_rag.data.collate import collate_examples
from joint_rag.system import eval_mode
from joint_rag.training.modes import train_trainable_parts


def modes(module: nn.Module) -> set[bool]:
    return {m.training for m in module.modules()}


def test_rule_follows_trainable_parameters():
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)))
    for p in net[2].parameters():
        p.requires_grad_(False)
    net.eval()
    train_trainable_parts(net)
    assert net.training and net[0].training and net[1].training  # dropout follows its parent
    assert modes(net[2]) == {False}, "a frozen block and its dropout must be in eval mode"


def test_eval_mode_restores_each_submodule():
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    net.train()
    net[1].eval()  # mixed modes, as with a frozen backbone inside a trainable wrapper
    with eval_mode(net):
        assert modes(net) == {False}
    assert net.training and net[0].training and not net[1].training


def test_frozen_retriever_stays_in_eval_mode_through_index_and_candidates(tiny_module):
    module, data = tiny_module(freeze_passage_encoder=True, freeze_query_encoder=True)
    module.train()
    backbones = [module.system.compressor.backbone, module.system.query_encoder.backbone]
    assert all(modes(b) == {False} for b in backbones)
    assert module.system.compressor.projector.training and module.system.generator.training
    module.build_index(show_progress=False)
    module.training_candidates(collate_examples(data.train[:3]))
    assert all(modes(b) == {False} for b in backbones), (
        "index build or search put a frozen part in train mode"
    )
    assert module.system.compressor.projector.training and module.system.generator.training


def test_trainable_retriever_trains_with_dropout_on(tiny_module):
    module, data = tiny_module()
    module.eval()  # as Hugging Face parts arrive
    module.train()
    module.build_index(show_progress=False)
    assert modes(module.system.compressor.backbone) == {True}
    assert modes(module.system.query_encoder.backbone) == {True}
    module.eval()
    assert modes(module) == {False}


class _RecordModes(pl.Callback):
    def __init__(self):
        self.seen: list[tuple[set[bool], set[bool], bool]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append(
            (
                modes(pl_module.system.query_encoder.backbone),
                modes(pl_module.system.compressor.backbone),
                pl_module.system.generator.training,
            )
        )


def test_modes_in_a_lightning_fit(tiny_module, tmp_path):
    from joint_rag.data.synthetic import SyntheticSource
    from joint_rag.training import IndexRefresh
    from joint_rag.training.datamodule import RAGDataModule

    torch.manual_seed(0)
    module, _ = tiny_module(freeze_passage_encoder=True, freeze_query_encoder=True)
    # as from_pretrained leaves them: backbones in eval mode inside wrappers in train mode
    for part in (
        module.system.compressor.backbone,
        module.system.query_encoder.backbone,
        module.system.generator,
    ):
        part.eval()
    record = _RecordModes()
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[IndexRefresh(every_n_steps=1, show_progress=False), record],
        default_root_dir=tmp_path,
    )
    dm = RAGDataModule(source=SyntheticSource(num_entities=12, seed=0), batch_size=2)
    trainer.fit(module, datamodule=dm)
    assert len(record.seen) == 2
    for query, passage, generator in record.seen:
        assert query == {False} and passage == {False}, "frozen retriever must not run with dropout"
        assert generator
