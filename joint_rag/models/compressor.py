"""Compressor: a passage (L tokens) + M learned memory tokens -> backbone -> memory vectors.

For an encoder backbone the memory tokens sit right after the first ([CLS]) token; for a
decoder backbone they are appended after the (left-padded) text so they see all of it. The
hidden states at the memory positions go through a projector into the generator's embedding
space: ``memory`` (n, M, H). The retrieval vectors are either that memory (``retrieval=
"memory"``) or the mean-pooled token states (``retrieval="mean_pool"``, sentence-transformers
style, so an off-the-shelf retriever such as all-MiniLM-L6-v2 works at step 0).

The query encoder is the same class (``Compressor.copy_for_queries``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from joint_rag.models.backbones import Backbone, load_backbone


@dataclass
class CompressorOutput:
    memory: Tensor | None  # (n, M, H) in the generator's embedding space (None if not asked for)
    retrieval: Tensor  # (n, R, D) retrieval vectors


class Compressor(nn.Module):
    """Backbone + M memory tokens + projector.

    Args:
        backbone: preset name, Hugging Face name or local path (see models/backbones.py).
        num_memory_tokens: M.
        max_length: passage tokens kept (L), truncating longer passages.
        output_dim: generator hidden size H; None means the training module sets it from the
            generator (``build_projector``).
        projector_layers: 1 (linear) or 2 (linear-GELU-linear).
        retrieval: "memory" or "mean_pool" (see module docstring).
        lora_rank: if > 0, wrap the backbone with LoRA adapters of this rank (peft) and freeze
            its other weights.
        freeze_backbone: keep backbone weights fixed (memory tokens and projector still train).
    """

    def __init__(
        self,
        backbone: str = "tiny-bert",
        num_memory_tokens: int = 4,
        max_length: int = 128,
        output_dim: int | None = None,
        projector_layers: int = 2,
        retrieval: str = "memory",
        lora_rank: int = 0,
        freeze_backbone: bool = False,
    ) -> None:
        super().__init__()
        if num_memory_tokens < 1:
            raise ValueError(f"compressor.num_memory_tokens must be >= 1, got {num_memory_tokens}")
        if retrieval not in ("memory", "mean_pool"):
            raise ValueError(f"compressor.retrieval must be 'memory' or 'mean_pool', got {retrieval!r}")
        if projector_layers not in (1, 2):
            raise ValueError(f"compressor.projector_layers must be 1 or 2, got {projector_layers}")
        self.backbone_spec = backbone
        bb: Backbone = load_backbone(backbone, "encoder")
        self.backbone = bb.model
        self.tokenizer = bb.tokenizer
        self.is_decoder = bb.is_decoder
        self.hidden = bb.hidden_size
        self.num_memory_tokens = num_memory_tokens
        self.max_length = max_length
        self.retrieval_mode = retrieval
        self.projector_layers = projector_layers
        self.lora_rank = lora_rank
        emb = self.backbone.get_input_embeddings().weight
        init = emb[torch.randint(0, emb.shape[0], (num_memory_tokens,))].detach().clone()
        self.memory_tokens = nn.Parameter(init)  # (M, H_b)
        self.projector: nn.Module | None = None
        self.output_dim = output_dim
        if output_dim is not None:
            self.build_projector(output_dim)
        if lora_rank > 0:
            self._add_lora(lora_rank)
        if freeze_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)

    def _add_lora(self, rank: int) -> None:
        from peft import LoraConfig, get_peft_model

        targets = (
            ["query", "key", "value"] if not self.is_decoder else ["q_proj", "k_proj", "v_proj", "o_proj"]
        )
        cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, lora_dropout=0.0)
        self.backbone = get_peft_model(self.backbone, cfg)

    def build_projector(self, output_dim: int) -> None:
        """Create the projector into a generator embedding space of size ``output_dim``."""
        if self.projector is not None and self.output_dim == output_dim:
            return
        self.output_dim = output_dim
        if self.projector_layers == 1:
            self.projector = nn.Linear(self.hidden, output_dim)
        else:
            self.projector = nn.Sequential(
                nn.Linear(self.hidden, output_dim), nn.GELU(), nn.Linear(output_dim, output_dim)
            )

    def copy_for_queries(self) -> Compressor:
        """A query encoder initialised from this compressor (same architecture, own weights)."""
        return copy.deepcopy(self)

    def tokenize(self, texts: list[str], device: torch.device | None = None) -> dict[str, Tensor]:
        self.tokenizer.padding_side = "left" if self.is_decoder else "right"
        enc = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        if device is not None:
            enc = {k: v.to(device) for k, v in enc.items()}
        return enc

    def forward(self, texts: list[str], need_memory: bool = True) -> CompressorOutput:
        """Encode n texts.

        With ``retrieval="mean_pool"`` the retrieval vector comes from a plain pass over the
        text alone (no memory tokens), so it is exactly the backbone's sentence embedding (an
        off-the-shelf retriever at step 0); the memory comes from a second pass with the memory
        tokens, skipped when ``need_memory`` is False (queries, text-mode generators).

        Returns:
            CompressorOutput with memory (n, M, H) (or None), retrieval (n, R, D).
        """
        device = self.memory_tokens.device
        enc = self.tokenize(texts, device)
        ids, mask = enc["input_ids"], enc["attention_mask"]  # (n, L)
        n, M = ids.shape[0], self.num_memory_tokens
        retrieval = None
        if self.retrieval_mode == "mean_pool":
            kwargs = {"position_ids": (mask.cumsum(-1) - 1).clamp(min=0)} if self.is_decoder else {}
            plain = self.backbone(
                input_ids=ids, attention_mask=mask, **kwargs
            ).last_hidden_state  # (n, L, H_b)
            m = mask.unsqueeze(-1).to(plain.dtype)  # (n, L, 1)
            retrieval = ((plain * m).sum(1) / m.sum(1).clamp(min=1.0)).unsqueeze(1)  # (n, 1, H_b)
            if not need_memory:
                return CompressorOutput(None, retrieval)
        if self.projector is None:
            raise RuntimeError("compressor has no projector: call build_projector(generator_hidden) first")
        tok = self.backbone.get_input_embeddings()(ids)  # (n, L, H_b)
        mem = self.memory_tokens.unsqueeze(0).expand(n, -1, -1).to(tok.dtype)  # (n, M, H_b)
        ones = mask.new_ones(n, M)
        if self.is_decoder:
            embeds = torch.cat([tok, mem], dim=1)  # (n, L+M, H_b)
            full_mask = torch.cat([mask, ones], dim=1)
            position_ids = (full_mask.cumsum(-1) - 1).clamp(min=0)
            out = self.backbone(inputs_embeds=embeds, attention_mask=full_mask, position_ids=position_ids)
            hidden = out.last_hidden_state  # (n, L+M, H_b)
            mem_h = hidden[:, -M:]  # (n, M, H_b)
        else:
            embeds = torch.cat([tok[:, :1], mem, tok[:, 1:]], dim=1)  # (n, 1+M+L-1, H_b)
            full_mask = torch.cat([mask[:, :1], ones, mask[:, 1:]], dim=1)
            out = self.backbone(inputs_embeds=embeds, attention_mask=full_mask)
            hidden = out.last_hidden_state  # (n, L+M, H_b)
            mem_h = hidden[:, 1 : 1 + M]  # (n, M, H_b)
        memory = self.projector(mem_h.contiguous())  # (n, M, H)
        return CompressorOutput(memory, memory if retrieval is None else retrieval)
