"""Modules save and load themselves: folder = HF backbone + tokenizer, <name>.json whose keys are
the constructor arguments, <name>.safetensors for the weights outside the backbone."""

from __future__ import annotations

import inspect
import json

import pytest
import torch

from joint_rag.errors import ExportFormatError
from joint_rag.models import Compressor, Generator, TopKSelector

TEXTS = ["Veloria was founded in 1820.", "Gosol plays the oboe on weekends."]


def _spread_lora(module: torch.nn.Module) -> None:
    """Make LoRA adapters matter (LoRA B starts at zero)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)


def _args(cls) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"retrieval": "memory"},
        {"retrieval": "mean_pool", "projector_layers": 1},
        {"memory": "extractive", "extract_tokens": 4, "extract_max_tokens": 16},
        {"lora_rank": 2},
    ],
    ids=["memory", "mean_pool", "extractive", "lora"],
)
def test_compressor_round_trip(tmp_path, kwargs):
    torch.manual_seed(0)
    generator = Generator("tiny-llama")
    comp = Compressor(
        "tiny-bert", num_memory_tokens=2, max_length=32, output_dim=generator.hidden_size, **kwargs
    )
    comp.attach_generator(generator)
    _spread_lora(comp)
    comp.save_pretrained(tmp_path / "c")
    config = json.loads((tmp_path / "c" / "compressor.json").read_text())
    assert set(config) == _args(Compressor)  # config keys are the constructor arguments
    assert config["backbone"] == "." and config["lora_rank"] == 0  # adapters merged
    loaded = Compressor.from_pretrained(tmp_path / "c")
    loaded.attach_generator(generator)
    comp.eval(), loaded.eval()
    with torch.no_grad():
        a, b = comp(TEXTS), loaded(TEXTS)
    assert torch.allclose(a.retrieval, b.retrieval, atol=1e-5)
    assert torch.allclose(a.memory, b.memory, atol=1e-5)


def test_compressor_without_projector_and_its_errors(tmp_path):
    comp = Compressor("tiny-bert", num_memory_tokens=2, max_length=32, output_dim=32)
    comp.save_pretrained(tmp_path / "c", projector=False)
    loaded = Compressor.from_pretrained(tmp_path / "c")
    assert loaded.projector is None and loaded.output_dim is None
    config = tmp_path / "c" / "compressor.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "output_dim": 32}))
    with pytest.raises(ExportFormatError, match="projector weights do not match compressor.json"):
        Compressor.from_pretrained(tmp_path / "c")
    with pytest.raises(ExportFormatError, match="compressor.json: missing"):
        Compressor.from_pretrained(tmp_path / "nothing")


def test_generator_round_trip(tmp_path):
    torch.manual_seed(0)
    gen = Generator("tiny-llama", mode="text", train_mode="lora", lora_rank=2, max_new_tokens=4)
    _spread_lora(gen)
    gen.save_pretrained(tmp_path / "g")
    config = json.loads((tmp_path / "g" / "generator.json").read_text())
    assert set(config) == _args(Generator)
    assert config["train_mode"] == "frozen" and config["mode"] == "text" and config["max_new_tokens"] == 4
    loaded = Generator.from_pretrained(tmp_path / "g")
    passages = [["alpha beta"], ["gamma"]]
    with torch.no_grad():
        a = gen(["q1", "q2"], ["a", "b"], passages=passages).token_logprobs
        b = loaded(["q1", "q2"], ["a", "b"], passages=passages).token_logprobs
    assert torch.allclose(a, b, atol=1e-4)
    assert loaded.generate(["q1", "q2"], passages=passages) == gen.eval().generate(
        ["q1", "q2"], passages=passages
    )


def test_selector_keeps_its_arguments():
    sel = TopKSelector(k=3, temperature=0.5, gumbel=True)
    assert set(sel.init_args) == _args(TopKSelector)
    assert TopKSelector(**sel.init_args).init_args == sel.init_args
