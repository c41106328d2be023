"""Instruction pairs over a real corpus: instructions that exclude or require a term of the gold
passages (for SciFact, the MS MARCO sample, any BEIR folder).

A query's original judgements are its qrels (``Example.relevance``). A term is a word of a gold
passage that the query does not contain, a content word (letters only, at least 4 of them, not a
stop word) that is rare in the corpus (in at most ``max_df`` of the passages, at least 2), so
the instruction names an aspect that tells passages apart rather than one every passage has.

- ``exclude``: "Documents that mention '{term}' are not relevant." The gold passages containing
  the term are ``changed``; they are the only ones judged differently (a single-gold query
  keeps no relevant passage under it: nDCG under the changed instruction is then undefined).
- ``require``: "Only documents that mention '{term}' are relevant." for queries with at least two
  gold passages where some lack a term another has: the ones lacking it are ``changed``.

The original instruction is empty (the plain query), as in a FollowIR pair whose narrative
changes. Ranks and judgements read the passage text only (titles included in neither). Terms
are matched as whole words, case-insensitive. ``write_instruction_pairs`` writes them as the
JSONL ``joint_rag.instructions.read_instruction_pairs`` reads; ``jrag pairs`` is the command.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from joint_rag.atomic import write_jsonl
from joint_rag.data.types import Corpus, Example, InstructionPair

KINDS = ("exclude", "require", "both")
_WORD = re.compile(r"[a-z]+")
_STOP_TEXT = (
    "about above after again against also among and another any are because been before "
    "being below between both but can could did does doing down during each either else "
    "even ever every few for from further had has have having here how however into its "
    "itself just least less many may might more most much must near neither nor not now "
    "off once only other our ours out over own same several shall she should since some "
    "such than that the their theirs them then there these they this those though through "
    "thus too under until upon very was were what when where whether which while who whom "
    "whose why will with within without would yet you your using used use based show shows "
    "shown study studies result results found patients "
)
STOP_WORDS = frozenset(_STOP_TEXT.split())


def words(text: str) -> set[str]:
    """The lower-cased alphabetic words of ``text``."""
    return set(_WORD.findall(text.lower()))


def _content(word: str) -> bool:
    return len(word) >= 4 and word not in STOP_WORDS


def exclude_instruction(term: str) -> str:
    return f"Documents that mention '{term}' are not relevant."


def require_instruction(term: str) -> str:
    return f"Only documents that mention '{term}' are relevant."


def term_instruction_pairs(
    corpus: Corpus,
    examples: Sequence[Example],
    kind: str = "both",
    seed: int = 0,
    max_df: float = 0.02,
    n: int | None = None,
) -> list[InstructionPair]:
    """At most one pair per example (see the module docstring), ids ``{example_id}:{kind}``.

    Args:
        corpus: the passages.
        examples: queries with gold passages (``Example.relevance``: grades, or 1 each).
        kind: "exclude", "require", or "both" (require where it applies, else exclude).
        seed: which qualifying term is chosen.
        max_df: a term may occur in at most this fraction of the passages.
        n: keep at most this many pairs (random by ``seed``).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not 0 < max_df <= 1:
        raise ValueError(f"max_df must be in (0, 1], got {max_df}")
    rng = random.Random(f"term-instructions-{seed}")
    index = {p.passage_id: i for i, p in enumerate(corpus)}
    vocab = [words(p.text) for p in corpus]
    df = Counter(w for ws in vocab for w in ws)
    limit = max(2, int(max_df * len(corpus)))
    rare = lambda w: _content(w) and 2 <= df[w] <= limit  # noqa: E731
    pairs = []
    for ex in examples:
        relevance = {pid: g for pid, g in ex.relevance.items() if pid in index}
        gold = [pid for pid, g in relevance.items() if g > 0]
        if not gold:
            continue
        asked = words(ex.query)
        terms = {pid: sorted(w for w in vocab[index[pid]] if rare(w) and w not in asked) for pid in gold}
        pair = None
        if kind in ("require", "both") and len(gold) >= 2:
            shared = sorted({w for pid in gold for w in terms[pid]})
            splitting = [w for w in shared if any(w not in vocab[index[pid]] for pid in gold)]
            if splitting:
                term = rng.choice(splitting)
                changed = tuple(pid for pid in gold if term not in vocab[index[pid]])
                pair = ("require", require_instruction(term), changed)
        if pair is None and kind in ("exclude", "both"):
            target = rng.choice(gold)
            if terms[target]:
                term = rng.choice(terms[target])
                changed = tuple(pid for pid in gold if term in vocab[index[pid]])
                pair = ("exclude", exclude_instruction(term), changed)
        if pair is None:
            continue
        name, instruction, changed = pair
        pairs.append(
            InstructionPair(
                query_id=f"{ex.example_id}:{name}",
                query=ex.query,
                instruction_og="",
                instruction_new=instruction,
                changed=changed,
                relevant_og=dict(relevance),
                relevant_new={pid: (0.0 if pid in changed else g) for pid, g in relevance.items()},
            )
        )
    if n is not None and len(pairs) > n:
        keep = set(rng.sample(range(len(pairs)), n))
        pairs = [p for i, p in enumerate(pairs) if i in keep]
    return pairs


def pair_record(pair: InstructionPair) -> dict:
    """The JSONL object of one pair (``read_instruction_pairs``' fields; unset ones left out)."""
    rec = {
        "query_id": pair.query_id,
        "query": pair.query,
        "instruction_og": pair.instruction_og,
        "instruction_new": pair.instruction_new,
        "changed": list(pair.changed),
    }
    if pair.query_new is not None:
        rec["query_new"] = pair.query_new
    if pair.relevant_og is not None:
        rec["relevant_og"], rec["relevant_new"] = dict(pair.relevant_og), dict(pair.relevant_new or {})
    if pair.candidates is not None:
        rec["candidates"] = list(pair.candidates)
    return rec


def write_instruction_pairs(path: str | Path, pairs: Sequence[InstructionPair]) -> Path:
    """Write ``pairs`` as JSONL, atomically (a temporary file, then a rename)."""
    return write_jsonl(path, (pair_record(p) for p in pairs))
