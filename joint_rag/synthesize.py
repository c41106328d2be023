"""Synthetic retrieval training data from a short description of the target domain.

After "Synthetic data generation from a domain description" (arXiv 2307.02740) and the
query-generation line before it (InPars, Promptagator): a causal LM, the shipped
SmolLM2-135M-Instruct by default (or any local Hugging Face causal LM), writes per item

1. a passage about the domain (only without ``corpus``; otherwise a passage is drawn from it),
2. a search query that the passage answers,
3. optionally an instruction: one sentence saying what a relevant document must contain,
   written from a detail of the passage, so the passage is the instruction's positive.

Each record of the output JSONL (``write_synthesized``) holds ``query_id``, ``query``,
``instruction`` (or null), ``positive_ids`` and, for generated passages, ``passage`` ({"_id",
"text"}). ``joint_rag.data.synthesized.SynthesizedSource`` trains on such a file and evaluates on
a BEIR folder's real queries. Passages are sampled (temperature ``temperature``, seeded per item);
queries and instructions are greedy (no 3-gram repeated). Outputs are cut at the first line break and cleaned of a
leading "Query:"-style label and quotes; empty or repeated queries are dropped and counted.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from joint_rag.atomic import write_jsonl
from joint_rag.data.types import Corpus
from joint_rag.models.backbones import load_backbone
from joint_rag.progress import progress_bar

_LABEL = re.compile(r"^\s*(query|question|search query|instruction|passage|document)\s*[:\-]\s*", re.I)


def clean(text: str) -> str:
    """The first non-empty line, without a leading label ("Query: ...") or enclosing quotes."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = _LABEL.sub("", line).strip()
    return line.strip("\"'“”").strip()


def passage_prompt(description: str) -> str:
    return f"Write a short factual passage (two or three sentences) for this domain: {description}"


def _cut(passage: str, limit: int = 1200) -> str:
    """A long passage cut at a word boundary near ``limit`` characters (prompts stay short)."""
    return passage if len(passage) <= limit else passage[:limit].rsplit(" ", 1)[0] + " ..."


def query_prompt(description: str, passage: str) -> str:
    return (
        f"Domain: {description}\nDocument: {_cut(passage)}\n"
        "Write one search query that a user in this domain would type and that this document answers. "
        "Reply with the query only."
    )


def instruction_prompt(description: str, query: str, passage: str) -> str:
    return (
        f"Domain: {description}\nQuery: {query}\nDocument: {_cut(passage)}\n"
        "Write one sentence that tells a search engine what a relevant document for this query must "
        "contain, naming a specific detail of this document. Reply with the sentence only."
    )


@dataclass
class Synthesis:
    """The records written, and how many items were dropped and why."""

    records: list[dict] = field(default_factory=list)
    dropped_empty: int = 0
    dropped_repeated: int = 0


class PromptLM:
    """A causal LM answering chat prompts (its chat template when it has one)."""

    def __init__(self, backbone: str = "smollm2-135m", device: str = "cpu") -> None:
        bb = load_backbone(backbone, "causal_lm")
        self.model, self.tokenizer = bb.model.to(device).eval(), bb.tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = device

    def _render(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": prompt}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return prompt + "\n"

    @torch.no_grad()
    def __call__(
        self, prompts: Sequence[str], max_new_tokens: int, temperature: float = 0.0, seeds: Sequence[int] = ()
    ) -> list[str]:
        """One completion per prompt: greedy, or sampled at ``temperature`` (one seeded draw per
        prompt, so an item's text does not depend on the batch it ran in)."""
        outs = []
        if temperature > 0:  # seeded one by one
            for prompt, seed in zip(prompts, seeds or range(len(prompts))):
                torch.manual_seed(seed)
                outs += self._generate(
                    [prompt], max_new_tokens, dict(do_sample=True, temperature=temperature, top_p=0.95)
                )
            return outs
        # no 3-gram twice: small models otherwise loop ("cancer, endometrial cancer, ...")
        return self._generate(prompts, max_new_tokens, dict(do_sample=False, no_repeat_ngram_size=3))

    def _generate(self, prompts: Sequence[str], max_new_tokens: int, sampling: dict) -> list[str]:
        enc = self.tokenizer(
            [self._render(p) for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.device)
        gen = self.model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            **sampling,
        )
        new = gen[:, enc["input_ids"].shape[1] :]
        return [self.tokenizer.decode(row, skip_special_tokens=True) for row in new]


def synthesize(
    description: str,
    n: int,
    lm: PromptLM,
    corpus: Corpus | None = None,
    instructions: bool = True,
    seed: int = 0,
    batch_size: int = 8,
    max_new_tokens: int = 48,
    temperature: float = 0.8,
    show_progress: bool = True,
) -> Synthesis:
    """``n`` items (see the module docstring); fewer records when some are dropped.

    Args:
        description: a few sentences describing the target domain.
        n: items to generate.
        lm: the generating model (``PromptLM``).
        corpus: draw the passages from it (distinct ones, random by ``seed``); None: generate them.
        instructions: also write an instruction per item.
        seed: passage draw and sampling seed.
        batch_size: prompts per generation call.
        max_new_tokens: tokens per query or instruction (passages get 3x).
        temperature: sampling temperature of generated passages.
        show_progress: a progress bar over the items.
    """
    if not description.strip():
        raise ValueError("the domain description is empty; describe the target domain in a sentence or two")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if corpus is not None and n > len(corpus):
        raise ValueError(f"n = {n} items but the corpus has {len(corpus)} passages; lower n")
    rng = random.Random(f"synthesize-{seed}")
    drawn = rng.sample(range(len(corpus)), n) if corpus is not None else []
    out, seen = Synthesis(), set()
    with progress_bar("synthesizing", n, enabled=show_progress) as advance:
        for start in range(0, n, batch_size):
            items = list(range(start, min(n, start + batch_size)))
            if corpus is not None:
                ids = [corpus[drawn[i]].passage_id for i in items]
                texts = [corpus[drawn[i]].text for i in items]
            else:
                ids = [f"syn-p{i}" for i in items]
                raw = lm(
                    [passage_prompt(description)] * len(items),
                    3 * max_new_tokens,
                    temperature,
                    [seed * 1_000_003 + i for i in items],
                )
                texts = [" ".join(t.split()) for t in raw]
            queries = [clean(q) for q in lm([query_prompt(description, t) for t in texts], max_new_tokens)]
            if instructions:
                prompts = [instruction_prompt(description, q, t) for q, t in zip(queries, texts)]
                found = [clean(s) for s in lm(prompts, max_new_tokens)]
            else:
                found = [None] * len(items)
            for i, pid, text, query, instruction in zip(items, ids, texts, queries, found):
                if not query or not text.strip() or (instructions and not instruction):
                    out.dropped_empty += 1
                    continue
                key = (query.lower(), (instruction or "").lower())
                if key in seen:
                    out.dropped_repeated += 1
                    continue
                seen.add(key)
                rec = {
                    "query_id": f"syn-{i}",
                    "query": query,
                    "instruction": instruction,
                    "positive_ids": [pid],
                }
                if corpus is None:
                    rec["passage"] = {"_id": pid, "text": text}
                out.records.append(rec)
            advance(len(items))
    return out


def write_synthesized(path: str | Path, records: Sequence[dict]) -> Path:
    """The records as JSONL, atomically (a temporary file, then a rename)."""
    return write_jsonl(path, records)
