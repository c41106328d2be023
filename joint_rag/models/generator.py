"""Generator: a causal LM that reads the selected passages as memory (or as text) and answers.

Prompt (chat template when the tokenizer has one, plain text otherwise)::

    Passages:
    [1] <M memory slots>
    ...
    [K] <M memory slots>
    Question: {instruction} {query}

The input embeddings at the K*M slot positions are replaced by the selected memory
(B, K, M, H); in text mode the slots hold the passage text instead. The loss is the NLL of
the answer tokens only. Answers are decoded greedily with Hugging Face's ``generate`` from
the spliced prompt embeddings.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import GenerationConfig

from joint_rag.models.backbones import DECODER_LORA_TARGETS, add_lora, load_backbone
from joint_rag.models.saving import build_saved, init_args, save_backbone, save_config

CONFIG_NAME = "generator"  # generator.json: the constructor arguments

MARKER = "\u0000MEM\u0000"


def _logits_kwarg(model: nn.Module) -> str | None:
    """The forward argument that limits which positions get vocabulary logits: ``logits_to_keep``
    (transformers >= 4.50, an int or a 1-D tensor of positions), ``num_logits_to_keep`` (4.45-4.49,
    an int only), or None when the model takes neither."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return name
    return None


@dataclass
class GeneratorOutput:
    nll: Tensor  # (B,) mean NLL per answer token
    token_logprobs: Tensor  # (B, T) log p of each answer token (0 where masked)
    token_mask: Tensor  # (B, T) bool


class Generator(nn.Module):
    """A Hugging Face causal LM with memory splicing.

    Args:
        backbone: preset name, Hugging Face name or local path.
        mode: "memory" (read compressed memory) or "text" (read raw passage text; baselines).
        train_mode: "full", "lora" or "frozen".
        lora_rank: LoRA rank when train_mode is "lora".
        max_passage_tokens: text mode: tokens kept per passage.
        max_answer_tokens: answer tokens kept for the loss.
        max_new_tokens: default generation length.
        system_prompt: system message for chat templates ("" to omit where the template allows).
        use_chat_template: use the tokenizer's chat template if it has one.
    """

    def __init__(
        self,
        backbone: str = "tiny-llama",
        mode: str = "memory",
        train_mode: str = "full",
        lora_rank: int = 8,
        max_passage_tokens: int = 96,
        max_answer_tokens: int = 16,
        max_new_tokens: int = 12,
        system_prompt: str = "Answer the question with a few words, using the passages.",
        use_chat_template: bool = True,
    ) -> None:
        super().__init__()
        self.init_args = init_args(Generator, locals())
        if mode not in ("memory", "text"):
            raise ValueError(f"generator.mode must be 'memory' or 'text', got {mode!r}")
        if train_mode not in ("full", "lora", "frozen"):
            raise ValueError(f"generator.train_mode must be 'full', 'lora' or 'frozen', got {train_mode!r}")
        bb = load_backbone(backbone, "causal_lm")
        # generate() passes a complete greedy GenerationConfig, but transformers (5.x) still fills
        # every field it leaves unset from the model's own generation_config.json: a checkpoint's
        # repetition penalty or min_new_tokens would change the answers, its sampling defaults would
        # log warnings. The generator only decodes greedily, so it drops the checkpoint's defaults.
        bb.model.generation_config = GenerationConfig()
        self.backbone_spec = backbone
        self.model = bb.model
        self.tokenizer = bb.tokenizer
        self.mode = mode
        self.train_mode = train_mode
        self.max_passage_tokens = max_passage_tokens
        self.max_answer_tokens = max_answer_tokens
        self.max_new_tokens = max_new_tokens
        self.system_prompt = system_prompt
        self.use_chat_template = (
            use_chat_template and getattr(self.tokenizer, "chat_template", None) is not None
        )
        if train_mode == "frozen":
            for p in self.model.parameters():
                p.requires_grad_(False)
        elif train_mode == "lora":
            self.model = add_lora(self.model, lora_rank, DECODER_LORA_TARGETS)

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the causal LM (HF format, LoRA merged) and tokenizer, and ``generator.json`` (the
        constructor arguments; the merged model loads frozen, without adapters)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_backbone(self.model, self.tokenizer, folder)
        save_config(
            folder, CONFIG_NAME, {**self.init_args, "backbone": ".", "train_mode": "frozen", "lora_rank": 0}
        )
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> Generator:
        """A Generator saved by :meth:`save_pretrained` (ExportFormatError naming the folder)."""
        return build_saved(cls, Path(folder), CONFIG_NAME)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    # ------------------------------------------------------------------ prompts
    def render_prompt(self, query: str, slots: list[str], instruction: str | None = None) -> str:
        """The prompt text with each passage slot's content (MARKER in memory mode)."""
        lines = ["Passages:"] + [f"[{i + 1}] {s}" for i, s in enumerate(slots)]
        question = f"{instruction.strip()} {query}" if instruction else query
        content = "\n".join(lines) + f"\nQuestion: {question}"
        if self.use_chat_template:
            messages = [{"role": "user", "content": content}]
            if self.system_prompt:
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return content + "\nAnswer:"

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def prompt_ids(
        self, query: str, num_slots: int, num_memory: int, instruction: str | None, passages: list[str] | None
    ) -> tuple[list[int], list[int]]:
        """Token ids of one prompt and the positions of its K*M memory slots (empty in text mode)."""
        if passages is not None:
            slots = []
            for p in passages:
                ids = self._encode(p)[: self.max_passage_tokens]
                slots.append(self.tokenizer.decode(ids))
            return self._encode(self.render_prompt(query, slots, instruction)), []
        pieces = self.render_prompt(query, [MARKER] * num_slots, instruction).split(MARKER)
        ids: list[int] = []
        positions: list[int] = []
        pad = self.tokenizer.pad_token_id or 0
        for i, piece in enumerate(pieces):
            ids += self._encode(piece)
            if i < len(pieces) - 1:
                positions += list(range(len(ids), len(ids) + num_memory))
                ids += [pad] * num_memory
        return ids, positions

    def answer_ids(self, answer: str) -> list[int]:
        prefix = "" if self.use_chat_template else " "
        return self._encode(prefix + answer)[: self.max_answer_tokens - 1] + [self.eos_id]

    def _embed(self, ids: Tensor, positions: list[list[int]], memory: Tensor | None) -> Tensor:
        embeds = self.model.get_input_embeddings()(ids)  # (B, S, H)
        if memory is not None:
            B = memory.shape[0]
            flat = memory.flatten(1, 2).to(embeds.dtype)  # (B, K*M, H)
            b_idx = torch.arange(B, device=ids.device).repeat_interleave(flat.shape[1])
            p_idx = torch.tensor([p for row in positions for p in row], device=ids.device)
            embeds = embeds.index_put((b_idx, p_idx), flat.flatten(0, 1))
        return embeds

    def _check(self, B: int, memory: Tensor | None, passages: list[list[str]] | None) -> tuple[int, int]:
        if self.mode == "memory":
            if memory is None:
                raise ValueError("generator in memory mode needs memory (B, K, M, H)")
            if memory.shape[0] != B or memory.shape[-1] != self.hidden_size:
                raise ValueError(
                    f"memory shape {tuple(memory.shape)} does not match B={B}, H={self.hidden_size}"
                )
            return memory.shape[1], memory.shape[2]
        if passages is None or len(passages) != B:
            raise ValueError("generator in text mode needs one passage list per query")
        return len(passages[0]), 0

    # ------------------------------------------------------------------ training
    def forward(
        self,
        queries: list[str],
        answers: list[str],
        memory: Tensor | None = None,
        passages: list[list[str]] | None = None,
        instructions: list[str | None] | None = None,
    ) -> GeneratorOutput:
        """Teacher-forced answer NLL.

        Args:
            queries: B questions.
            answers: B target answers.
            memory: (B, K, M, H) selected memory (memory mode).
            passages: B lists of K passage texts (text mode).
            instructions: optional B instructions.

        Returns:
            GeneratorOutput with nll (B,), token_logprobs (B, T), token_mask (B, T).
        """
        B = len(queries)
        K, M = self._check(B, memory, passages)
        instructions = instructions or [None] * B
        device = self.model.get_input_embeddings().weight.device
        seqs, positions, starts, lens = [], [], [], []
        for b in range(B):
            p_ids, pos = self.prompt_ids(
                queries[b], K, M, instructions[b], None if self.mode == "memory" else passages[b]
            )
            a_ids = self.answer_ids(answers[b])
            seqs.append(p_ids + a_ids)
            positions.append(pos)
            starts.append(len(p_ids))
            lens.append(len(a_ids))
        S, T = max(len(s) for s in seqs), max(lens)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((B, S), pad, dtype=torch.long, device=device)
        attn = torch.zeros((B, S), dtype=torch.long, device=device)
        for b, s in enumerate(seqs):
            ids[b, : len(s)] = torch.tensor(s, device=device)
            attn[b, : len(s)] = 1
        embeds = self._embed(ids, positions, memory if self.mode == "memory" else None)
        # answer token t sits at starts[b] + t and is predicted from position starts[b] + t - 1
        t_idx = torch.arange(T, device=device)
        start = torch.tensor(starts, device=device).unsqueeze(1)  # (B, 1)
        mask = t_idx.unsqueeze(0) < torch.tensor(lens, device=device).unsqueeze(1)  # (B, T)
        tgt_pos = (start + t_idx).clamp(max=S - 1)  # (B, T)
        targets = ids.gather(1, tgt_pos)  # (B, T)
        pred_pos = tgt_pos - 1  # (B, T)
        if _logits_kwarg(self.model) == "logits_to_keep":
            # vocabulary logits only at the U <= S positions some row predicts an answer token from
            # (the lm_head and its backward skip the prompt; the model applies its own logit
            # scaling or softcapping to what it keeps)
            keep = torch.unique(pred_pos)  # (U,) sorted
            logits = self.model(
                inputs_embeds=embeds, attention_mask=attn, logits_to_keep=keep
            ).logits  # (B, U, V)
            pred_pos = torch.searchsorted(keep, pred_pos)  # (B, T) columns of logits
        else:
            logits = self.model(inputs_embeds=embeds, attention_mask=attn).logits  # (B, S, V)
        pred = logits.gather(1, pred_pos.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))  # (B, T, V)
        logp = torch.log_softmax(pred.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T)
        logp = logp * mask
        nll = -logp.sum(1) / mask.sum(1).clamp(min=1)  # (B,)
        return GeneratorOutput(nll=nll, token_logprobs=logp, token_mask=mask)

    # ------------------------------------------------------------------ inference
    def prompt_inputs(
        self,
        queries: list[str],
        memory: Tensor | None,
        passages: list[list[str]] | None,
        instructions: list[str | None] | None,
    ) -> tuple[Tensor, Tensor]:
        """Left-padded prompt embeddings (B, S, H), memory spliced in, and their attention mask (B, S)."""
        B = len(queries)
        K, M = self._check(B, memory, passages)
        instructions = instructions or [None] * B
        device = self.model.get_input_embeddings().weight.device
        prompts, positions = [], []
        for b in range(B):
            p_ids, pos = self.prompt_ids(
                queries[b], K, M, instructions[b], None if self.mode == "memory" else passages[b]
            )
            prompts.append(p_ids)
            positions.append(pos)
        S = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((B, S), pad, dtype=torch.long, device=device)
        attn = torch.zeros((B, S), dtype=torch.long, device=device)
        for b, p in enumerate(prompts):  # left padding
            ids[b, S - len(p) :] = torch.tensor(p, device=device)
            attn[b, S - len(p) :] = 1
            positions[b] = [S - len(p) + q for q in positions[b]]
        return self._embed(ids, positions, memory if self.mode == "memory" else None), attn

    def greedy_config(self, max_new_tokens: int) -> GenerationConfig:
        """Greedy decoding of at most ``max_new_tokens`` tokens that stops at EOS; no penalties or
        other logits processors."""
        return GenerationConfig(
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            eos_token_id=self.eos_id,
            pad_token_id=self.tokenizer.pad_token_id or 0,
        )

    @torch.no_grad()
    def generate(
        self,
        queries: list[str],
        memory: Tensor | None = None,
        passages: list[list[str]] | None = None,
        instructions: list[str | None] | None = None,
        max_new_tokens: int | None = None,
    ) -> list[str]:
        """Greedy answers for B queries (memory (B, K, M, H) or K passage texts each).

        Decodes with Hugging Face's ``generate`` from the left-padded prompt embeddings (KV cache,
        position ids from the attention mask) under an explicit greedy ``GenerationConfig``
        (``greedy_config``; the checkpoint's own generation defaults are dropped at load). Each
        answer is its row's tokens up to the first EOS, decoded without special tokens and stripped.
        """
        embeds, attn = self.prompt_inputs(queries, memory, passages, instructions)
        gen = self.model.generate(
            inputs_embeds=embeds,
            attention_mask=attn,
            generation_config=self.greedy_config(max_new_tokens or self.max_new_tokens),
        )  # (B, <= max_new_tokens): only the new tokens, since no input_ids are given
        answers = []
        for row in gen.tolist():
            if self.eos_id in row:
                row = row[: row.index(self.eos_id)]
            answers.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return answers
