"""Compressor: a passage (L tokens) + M learned memory tokens -> backbone -> memory vectors.

For an encoder backbone the memory tokens sit right after the first ([CLS]) token; for a
decoder backbone they are appended after the (left-padded) text so they see all of it. The
hidden states at the memory positions go through a projector into the generator's embedding
space: ``memory`` (n, M, H). The retrieval vectors are either that memory (``retrieval=
"memory"``) or the mean-pooled token states (``retrieval="mean_pool"``, sentence-transformers
style, so an off-the-shelf retriever such as all-MiniLM-L6-v2 works at step 0), or the state of
the last text token (``retrieval="last_token"``, the pooling of decoder embedders such as
E5-Mistral and Promptriever; with a decoder backbone, the token that has seen the whole text).

``memory="extractive"`` replaces the generator-side memory by M generator-token embeddings
picked from the passage: a linear scorer over the backbone's token states (each generator token
scored through the backbone token that holds its first character) ranks the passage's generator
tokens, a straight-through top-M keeps M of them in passage order, and the memory is their rows
of the generator's own (frozen) input embedding table. The selection is hard in the forward pass
(the generator reads real token embeddings, a telegraphic passage) and differentiable in the
backward pass (sequential-softmax relaxation, as for passage selection), so the answer loss
trains the scorer and the backbone. The learned memory tokens then serve retrieval only
(``retrieval="memory"``). Needs ``attach_generator`` (the training module and
``JointRAG.from_pretrained`` call it).

``memory_readout="pool"`` reads the memory without memory tokens in the input: M learned
queries attend over the token states of the plain pass (poly-encoder codes, Humeau et al. 2019),
slot m = softmax_l(q_m . h_l) h_l over the text's tokens. The queries start small (std 1e-3), so
every slot starts as nearly the mean-pooled vector (which already separates passages, whereas a
memory token's state starts nearly the same for every passage) and the slots part as the
queries learn (``pool_init_std`` sets their starting scale: larger starts the slots apart). One
backbone pass serves the memory and a mean-pooled retrieval vector. The queries are stored as
``memory_tokens`` (same shape) and train at the new parts' learning rate. ``retrieval="pool"``
retrieves with the M pooled slots themselves, unprojected (n, M, H_b): a multi-vector retriever
in the backbone's own space (MaxSim or flattened cosine over the slots; one slot at the default
scale starts as the mean-pooled vector).

The query encoder is the same class (``Compressor.copy_for_queries``).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from joint_rag.errors import ExportFormatError
from joint_rag.models.backbones import (
    DECODER_LORA_TARGETS,
    ENCODER_LORA_TARGETS,
    Backbone,
    add_lora,
    load_backbone,
)
from joint_rag.models.saving import (
    REEXPORT,
    build_saved,
    init_args,
    load_state,
    read_tensors,
    save_backbone,
    save_config,
    state_with_prefix,
)

CONFIG_NAME = "compressor"  # compressor.json (constructor arguments), compressor.safetensors


class SlotBias(nn.Module):
    """A learned offset per memory slot, added to the projector's output (n, M, H).
    ``Compressor.center_projector`` sets it to minus the mean output over sample passages."""

    def __init__(self, slots: int, dim: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(slots, dim))  # (M, H)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias.to(x.dtype)


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
        center_projector: end the projector with a learned offset per memory slot that
            training starts at minus the mean projected memory of sample passages
            (``center_projector()``; the training module calls it before the first index), so
            the memory vectors start centred instead of sharing one direction (the memory
            token's state is nearly the same for every passage, and cosine on such vectors
            ranks by noise). Retrieval from memory only.
        retrieval: "memory", "mean_pool", "last_token" or "pool" (see module docstring).
        lora_rank: if > 0, wrap the backbone with LoRA adapters of this rank (peft) and freeze
            its other weights.
        freeze_backbone: keep backbone weights fixed (memory tokens and projector still train).
        memory: "tokens" (projected memory-token states, CLaRa) or "extractive" (M' selected
            generator-token embeddings, see module docstring).
        extract_tokens: M', generator tokens kept per passage (``memory="extractive"``).
        extract_max_tokens: generator tokens of the passage considered for selection.
        extract_temperature: temperature of the selection's backward relaxation.
        memory_readout: "tokens" (M memory tokens in the input, their output states; CLaRa) or
            "pool" (M learned queries attending over the text's token states, starting as
            the mean-pooled vector; see module docstring).
        pool_init_std: the pooling queries' initial scale (``memory_readout="pool"``): 1e-3
            gives near-uniform attention (every slot the mean-pooled vector); about 0.3 on
            MiniLM starts the slots on different few tokens (parted slots).
        normalize_retrieval: L2-normalise each retrieval vector, so MaxSim sums cosines
            (ColBERT) instead of raw dot products, whose scale grows with the backbone's state
            norms (about 50 per pair for MiniLM's 384-d states); a no-op for cosine similarities.
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
        memory: str = "tokens",
        extract_tokens: int = 32,
        extract_max_tokens: int = 96,
        extract_temperature: float = 1.0,
        center_projector: bool = False,
        memory_readout: str = "tokens",
        pool_init_std: float = 1e-3,
        normalize_retrieval: bool = False,
    ) -> None:
        super().__init__()
        self.init_args = init_args(Compressor, locals())
        if memory not in ("tokens", "extractive"):
            raise ValueError(f"compressor.memory must be 'tokens' or 'extractive', got {memory!r}")
        if memory == "extractive" and not 1 <= extract_tokens <= extract_max_tokens:
            raise ValueError(
                f"compressor.extract_tokens must be between 1 and extract_max_tokens={extract_max_tokens}, "
                f"got {extract_tokens}"
            )
        if num_memory_tokens < 1:
            raise ValueError(f"compressor.num_memory_tokens must be >= 1, got {num_memory_tokens}")
        if retrieval == "pool" and memory_readout != "pool":
            raise ValueError(
                'compressor.retrieval "pool" reads the pooled slots: it needs memory_readout: pool'
            )
        if retrieval not in ("memory", "mean_pool", "last_token", "pool"):
            raise ValueError(
                f"compressor.retrieval must be 'memory', 'mean_pool', 'last_token' or 'pool', got {retrieval!r}"
            )
        if memory_readout not in ("tokens", "pool"):
            raise ValueError(f"compressor.memory_readout must be 'tokens' or 'pool', got {memory_readout!r}")
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
        self.center = center_projector
        self.lora_rank = lora_rank
        self.memory_readout = memory_readout
        self.pool_init_std = pool_init_std
        self.normalize_retrieval = normalize_retrieval
        emb = self.backbone.get_input_embeddings().weight
        if memory_readout == "pool":  # pooling queries: near-uniform attention = mean pooling
            init = torch.randn(num_memory_tokens, emb.shape[1], dtype=emb.dtype) * pool_init_std
        else:
            init = emb[torch.randint(0, emb.shape[0], (num_memory_tokens,))].detach().clone()
        self.memory_tokens = nn.Parameter(init)  # (M, H_b)
        self.memory_mode = memory
        self.extract_tokens = extract_tokens
        self.extract_max_tokens = extract_max_tokens
        self.extract_temperature = extract_temperature
        self.scorer = nn.Linear(self.hidden, 1) if memory == "extractive" else None
        self._generator_parts: tuple | None = None  # (tokenizer, input embedding), not submodules
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
        targets = DECODER_LORA_TARGETS if self.is_decoder else ENCODER_LORA_TARGETS
        self.backbone = add_lora(self.backbone, rank, targets)

    def build_projector(self, output_dim: int) -> None:
        """Create the projector into a generator embedding space of size ``output_dim``."""
        if self.projector is not None and self.output_dim == output_dim:
            return
        self.output_dim = output_dim
        if self.projector_layers == 1:
            layers = [nn.Linear(self.hidden, output_dim)]
        else:
            layers = [nn.Linear(self.hidden, output_dim), nn.GELU(), nn.Linear(output_dim, output_dim)]
        if self.center:
            self.projector = nn.Sequential(*layers, SlotBias(self.num_memory_tokens, output_dim))
        else:
            self.projector = layers[0] if len(layers) == 1 else nn.Sequential(*layers)

    @torch.no_grad()
    def center_projector(self, texts: Sequence[str], batch_size: int = 32) -> Tensor:
        """Set the projector's slot offsets to minus the mean projected memory of ``texts``
        (so their memory vectors average to 0 per slot). Returns the mean pairwise cosine of
        the texts' flattened memory vectors before and after, (2,)."""
        if not self.center or self.projector is None:
            raise RuntimeError("center_projector needs compressor.center_projector: true and a projector")
        if not texts:
            raise ValueError("center_projector: no passages to centre on")
        offset = self.projector[-1]
        training = self.training
        self.eval()
        try:
            offset.bias.zero_()
            outs = []
            for i in range(0, len(texts), batch_size):
                enc = self.tokenize(list(texts[i : i + batch_size]), self.memory_tokens.device)
                mem_h, _ = self._memory_states(enc["input_ids"], enc["attention_mask"])
                outs.append(self.projector(mem_h.contiguous()))
            outs = torch.cat(outs)  # (n, M, H)
        finally:
            self.train(training)
        offset.bias.copy_(-outs.float().mean(0))
        spread = []
        for x in (outs, outs + offset.bias):
            v = nn.functional.normalize(x.flatten(1).float(), dim=-1)  # (n, M*H)
            n = v.shape[0]
            spread.append(((v @ v.T).sum() - n) / max(n * (n - 1), 1))
        return torch.stack(spread)

    @property
    def memory_slots(self) -> int:
        """Memory vectors per passage that the generator reads (M, or M' when extractive)."""
        return self.extract_tokens if self.memory_mode == "extractive" else self.num_memory_tokens

    def attach_generator(self, generator: nn.Module) -> None:
        """Give an extractive compressor the generator's tokenizer and input embedding table
        (held by reference, not registered: they stay the generator's parameters)."""
        self._generator_parts = (generator.tokenizer, generator.model.get_input_embeddings())

    def _extract(self, texts: list[str], states: Tensor) -> Tensor:
        """Extractive memory: (n, M', H) generator-token embeddings chosen by the scorer.

        Args:
            texts: n passages.
            states: (n, L, H_b) backbone states of the passage tokens (aligned with ``enc``).
        """
        if self._generator_parts is None:
            raise RuntimeError("extractive compressor: call attach_generator(generator) first")
        from joint_rag.models.selection import straight_through_topk

        gen_tok, gen_emb = self._generator_parts
        device = states.device
        n, Lg, Mx = len(texts), self.extract_max_tokens, self.extract_tokens
        gen = gen_tok(
            texts, add_special_tokens=False, truncation=True, max_length=Lg, return_offsets_mapping=True
        )
        bb = self.tokenizer(texts, truncation=True, max_length=self.max_length, return_offsets_mapping=True)
        pad = gen_tok.pad_token_id if gen_tok.pad_token_id is not None else 0
        gen_ids = torch.full((n, Lg), pad, dtype=torch.long)
        align = torch.zeros((n, Lg), dtype=torch.long)  # backbone token of each generator token
        valid = torch.zeros((n, Lg), dtype=torch.bool)
        for b, text in enumerate(texts):
            spans = [(s, e) for s, e in bb["offset_mapping"][b] if e > s]  # real backbone tokens
            idx = [i for i, (s, e) in enumerate(bb["offset_mapping"][b]) if e > s]
            if not spans:
                continue
            starts = torch.tensor([s for s, _ in spans])
            shift = states.shape[1] - len(bb["input_ids"][b]) if self.is_decoder else 0  # left padding
            covered = spans[-1][1]
            for j, (s, e) in enumerate(gen["offset_mapping"][b]):
                while s < e and text[s].isspace():
                    s += 1
                if s >= covered or e <= s:
                    continue
                gen_ids[b, j] = gen["input_ids"][b][j]
                align[b, j] = shift + idx[max(0, int(torch.searchsorted(starts, s, right=True)) - 1)]
                valid[b, j] = True
        gen_ids, align, valid = gen_ids.to(device), align.to(device), valid.to(device)
        h = states.gather(1, align.unsqueeze(-1).expand(-1, -1, states.shape[-1]))  # (n, Lg, H_b)
        scores = self.scorer(h).squeeze(-1).float()  # (n, Lg)
        # padding is never preferred over a real token; beyond the passage it fills the slots
        scores = scores.masked_fill(~valid, -1e4)
        weights, indices = straight_through_topk(scores, Mx, self.extract_temperature)  # (n, M', Lg)
        order = indices.argsort(dim=1)  # passage order
        weights = weights.gather(1, order.unsqueeze(-1).expand(-1, -1, Lg))  # (n, M', Lg)
        table = gen_emb(gen_ids).detach()  # (n, Lg, H): the generator's own token embeddings
        return torch.einsum("nml,nlh->nmh", weights.to(table.dtype), table)  # (n, M', H)

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, folder: str | Path, projector: bool = True) -> Path:
        """Write the backbone (HF format, LoRA merged) and tokenizer, ``compressor.json`` (the
        constructor arguments) and ``compressor.safetensors`` (memory tokens, projector, scorer).

        Args:
            folder: created if missing.
            projector: save the projector (False for a query encoder that uses the passages'
                projector, or none).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_backbone(self.backbone, self.tokenizer, folder)
        tensors = {"memory_tokens": self.memory_tokens}
        parts = {"projector": self.projector if projector else None, "scorer": self.scorer}
        for prefix, part in parts.items():
            for name, t in part.state_dict().items() if part is not None else ():
                tensors[f"{prefix}.{name}"] = t
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
            folder / f"{CONFIG_NAME}.safetensors",
        )
        config = {**self.init_args, "backbone": ".", "lora_rank": 0}  # adapters are merged
        config["output_dim"] = self.output_dim if projector and self.projector is not None else None
        save_config(folder, CONFIG_NAME, config)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> Compressor:
        """A Compressor saved by :meth:`save_pretrained` (ExportFormatError naming the file)."""
        folder = Path(folder)
        comp = build_saved(cls, folder, CONFIG_NAME)
        path = folder / f"{CONFIG_NAME}.safetensors"
        tensors = read_tensors(path)
        memory_tokens = tensors.get("memory_tokens")
        if memory_tokens is None or memory_tokens.shape != comp.memory_tokens.shape:
            got = None if memory_tokens is None else tuple(memory_tokens.shape)
            raise ExportFormatError(
                f"{path}: memory_tokens {got} != (num_memory_tokens, hidden) = "
                f"{tuple(comp.memory_tokens.shape)}; {REEXPORT}"
            )
        comp.memory_tokens.data = memory_tokens.to(comp.memory_tokens.dtype)  # (M, H_b)
        for prefix in ("projector", "scorer"):
            part, state = getattr(comp, prefix), state_with_prefix(tensors, prefix)
            if (part is None) != (not state):
                raise ExportFormatError(
                    f"{path}: {prefix} weights do not match {CONFIG_NAME}.json; {REEXPORT}"
                )
            if part is not None:
                load_state(part, state, path, prefix)
        return comp

    def copy_for_queries(self) -> Compressor:
        """A query encoder initialised from this compressor (same architecture, own weights;
        the attached generator parts are shared, not copied)."""
        parts, self._generator_parts = self._generator_parts, None
        try:
            new = copy.deepcopy(self)
        finally:
            self._generator_parts = parts
        new._generator_parts = parts
        return new

    def count_truncated(self, texts: Sequence[str], batch_size: int = 1024) -> int:
        """How many of ``texts`` are longer than ``max_length`` tokens (``tokenize`` cuts them)."""
        self.tokenizer.padding_side = "left" if self.is_decoder else "right"
        count = 0
        for start in range(0, len(texts), batch_size):
            # one token past the limit is enough to tell a cut text (and bounds the work)
            ids = self.tokenizer(
                list(texts[start : start + batch_size]), truncation=True, max_length=self.max_length + 1
            )["input_ids"]
            count += sum(len(row) > self.max_length for row in ids)
        return count

    def warn_truncated(self, texts: Sequence[str], source: str) -> int:
        """Warn once per corpus how many of its ``texts`` are cut at ``max_length``.

        A corpus is known by ``source`` (its file, ``Corpus.source``) and its size: the count
        is computed once per corpus and remembered; a later call for the same corpus returns it
        without tokenizing or warning again.

        Returns:
            The number of texts longer than ``max_length`` tokens.
        """
        checked = self.__dict__.setdefault("_truncation_checked", {})
        key = (source, len(texts))
        if key not in checked:
            checked[key] = count = self.count_truncated(texts)
            if count:
                warnings.warn(
                    f"{source}: {count} of {len(texts)} passages are longer than compressor max_length="
                    f"{self.max_length} tokens and are truncated at max_length; raise "
                    "model.compressor.init_args.max_length to keep them whole",
                    UserWarning,
                    stacklevel=2,
                )
        return checked[key]

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
        tokens, skipped when ``need_memory`` is False (queries, text-mode generators). With
        ``memory_readout="pool"`` one plain pass serves both.

        Returns:
            CompressorOutput with memory (n, M, H) (or None), retrieval (n, R, D).
        """
        device = self.memory_tokens.device
        enc = self.tokenize(texts, device)
        ids, mask = enc["input_ids"], enc["attention_mask"]  # (n, L)
        n = ids.shape[0]
        retrieval = None
        plain = None
        if self.retrieval_mode in ("mean_pool", "last_token") or self.memory_readout == "pool":
            plain = self._plain_states(ids, mask)  # (n, L, H_b)
            if self.retrieval_mode == "mean_pool":
                m = mask.unsqueeze(-1).to(plain.dtype)  # (n, L, 1)
                retrieval = ((plain * m).sum(1) / m.sum(1).clamp(min=1.0)).unsqueeze(1)  # (n, 1, H_b)
            elif self.retrieval_mode == "last_token":  # the last attended position, either padding side
                last = mask.shape[1] - 1 - mask.flip(-1).argmax(-1)  # (n,)
                retrieval = plain[torch.arange(n, device=plain.device), last].unsqueeze(1)  # (n, 1, H_b)
            elif self.retrieval_mode == "pool":  # the M pooled slots themselves, unprojected
                retrieval = self._pool_states(plain, mask)  # (n, M, H_b)
            if not need_memory and retrieval is not None:
                return CompressorOutput(None, self._finish(retrieval))
        if self.projector is None:
            raise RuntimeError("compressor has no projector: call build_projector(generator_hidden) first")
        if plain is not None and self.memory_readout == "pool":
            mem_h = retrieval if self.retrieval_mode == "pool" else self._pool_states(plain, mask)
            text_h = plain
        else:
            mem_h, text_h = self._memory_states(ids, mask)
        memory = self.projector(mem_h.contiguous())  # (n, M, H)
        if retrieval is None:
            retrieval = memory
        if self.memory_mode == "extractive":
            if not need_memory:
                return CompressorOutput(None, self._finish(retrieval))
            memory = self._extract(texts, text_h)  # (n, M', H)
        return CompressorOutput(memory, self._finish(retrieval))

    def _finish(self, retrieval: Tensor) -> Tensor:
        """The retrieval vectors as returned: unit length per vector with ``normalize_retrieval``."""
        return nn.functional.normalize(retrieval, dim=-1) if self.normalize_retrieval else retrieval

    def _plain_states(self, ids: Tensor, mask: Tensor) -> Tensor:
        """The backbone over the text alone (no memory tokens): token states (n, L, H_b)."""
        kwargs = {"position_ids": (mask.cumsum(-1) - 1).clamp(min=0)} if self.is_decoder else {}
        return self.backbone(input_ids=ids, attention_mask=mask, **kwargs).last_hidden_state

    def _pool_states(self, states: Tensor, mask: Tensor) -> Tensor:
        """``memory_readout="pool"``: (n, M, H_b) attention pooling of the text's token states
        (n, L, H_b) by the M learned queries, padding masked out."""
        q = self.memory_tokens.to(states.dtype)  # (M, H_b)
        logits = torch.einsum("nlh,mh->nml", states, q).float()  # (n, M, L)
        logits = logits.masked_fill(~mask.bool().unsqueeze(1), float("-inf"))
        weights = logits.softmax(-1).to(states.dtype)  # (n, M, L)
        return torch.einsum("nml,nlh->nmh", weights, states)

    def _memory_states(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The M memory states (n, M, H_b) and the text's token states (n, L, H_b): the
        backbone over the text with the M memory tokens, or (``memory_readout="pool"``) over
        the text alone, pooled by the learned queries."""
        if self.memory_readout == "pool":
            plain = self._plain_states(ids, mask)
            return self._pool_states(plain, mask), plain
        n, M = ids.shape[0], self.num_memory_tokens
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
            text_h = hidden[:, :-M]  # (n, L, H_b)
        else:
            embeds = torch.cat([tok[:, :1], mem, tok[:, 1:]], dim=1)  # (n, 1+M+L-1, H_b)
            full_mask = torch.cat([mask[:, :1], ones, mask[:, 1:]], dim=1)
            out = self.backbone(inputs_embeds=embeds, attention_mask=full_mask)
            hidden = out.last_hidden_state  # (n, L+M, H_b)
            mem_h = hidden[:, 1 : 1 + M]  # (n, M, H_b)
            text_h = torch.cat([hidden[:, :1], hidden[:, 1 + M :]], dim=1)  # (n, L, H_b)
        return mem_h, text_h
