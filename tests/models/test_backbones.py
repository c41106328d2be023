"""Backbone presets and clear errors."""

from __future__ import annotations

import pytest

from joint_rag.models.backbones import BackboneError, load_backbone


def test_tiny_presets_build_offline():
    enc = load_backbone("tiny-bert", "encoder")
    dec = load_backbone("tiny-llama", "causal_lm")
    assert enc.hidden_size == 32 and not enc.is_decoder
    assert dec.is_decoder
    ids = dec.tokenizer("Hello wörld").input_ids
    assert dec.tokenizer.decode(ids) == "Hello wörld"


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(BackboneError, match="unknown backbone 'no-such-model'.*tiny-bert"):
        load_backbone("no-such-model", "encoder")


def test_tiny_bert_is_not_a_generator():
    with pytest.raises(BackboneError, match="encoder"):
        load_backbone("tiny-bert", "causal_lm")


def test_k_larger_than_c_is_rejected():
    from joint_rag.models import Compressor, Generator, TopKSelector
    from joint_rag.training import JointRAGModule

    with pytest.raises(ValueError, match="K must be <= C"):
        JointRAGModule(
            Compressor("tiny-bert"), Generator("tiny-llama"), selector=TopKSelector(k=5), num_candidates=3
        )
