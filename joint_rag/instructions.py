"""Instruction following in retrieval: FollowIR-style instruction pairs and p-MRR.

A pair holds one query under two instructions: the original one and a changed one that makes
some passages, relevant under the original, no longer relevant (``changed``). A retriever that
follows instructions ranks those passages lower under the changed instruction. p-MRR (Weller et
al., FollowIR, 2024; the MTEB implementation) scores each changed passage from its rank under
the original instruction (``og``) and under the changed one (``new``), both 1-based:

    p = (1 / og) / (1 / new) - 1    if og >= new   (it moved up or stayed: <= 0)
    p = 1 - (1 / new) / (1 / og)    otherwise      (it moved down: > 0)

then averages over a query's changed passages and over queries. It lies in (-1, 1); 0 means the
instruction changed nothing, +1 a perfect demotion. Rankings cover the whole corpus (a passage
missing from a ranking counts as ranked just after that ranking's last entry).

Sources of pairs: a JSONL file (``read_instruction_pairs``; one object per line with ``query``,
``instruction_og``, ``instruction_new``, ``changed`` and an optional ``query_id``), or the
built-in fictional knowledge base (``synthetic_instruction_pairs``). ``evaluate_instruction_following``
runs any retriever that ranks the corpus for (queries, instructions), e.g. ``JointRAG``.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from joint_rag.data.knowledge_base import KnowledgeBase
from joint_rag.data.reading import DataError, get_field, iter_jsonl
from joint_rag.data.synthetic_instructions import town_instruction_pairs
from joint_rag.data.types import InstructionPair

__all__ = [
    "InstructionPair",
    "evaluate_instruction_following",
    "p_mrr_change",
    "query_p_mrr",
    "read_instruction_pairs",
    "synthetic_instruction_pairs",
]

Ranker = Callable[[list[str], list[str | None]], list[list[str]]]


def p_mrr_change(og_rank: int, new_rank: int) -> float:
    """p-MRR of one changed passage from its 1-based ranks under the original and the changed
    instruction: negative when it moved up (or stayed), positive when it moved down."""
    if og_rank < 1 or new_rank < 1:
        raise ValueError(f"ranks are 1-based, got og_rank={og_rank}, new_rank={new_rank}")
    if og_rank >= new_rank:
        return (1.0 / og_rank) / (1.0 / new_rank) - 1.0
    return 1.0 - (1.0 / new_rank) / (1.0 / og_rank)


def _rank_of(ranked: Sequence[str]) -> dict[str, int]:
    """passage id -> 1-based rank (its first occurrence)."""
    ranks: dict[str, int] = {}
    for rank, pid in enumerate(ranked, start=1):
        ranks.setdefault(pid, rank)
    return ranks


def query_p_mrr(og_ranked: Sequence[str], new_ranked: Sequence[str], changed: Sequence[str]) -> float:
    """Mean p-MRR over one query's changed passages (nan when ``changed`` is empty). A passage
    missing from a ranking counts as ranked just after that ranking's last entry."""
    if not changed:
        return math.nan
    og, new = _rank_of(og_ranked), _rank_of(new_ranked)
    og_last, new_last = len(og_ranked) + 1, len(new_ranked) + 1
    return statistics.fmean(p_mrr_change(og.get(pid, og_last), new.get(pid, new_last)) for pid in changed)


def evaluate_instruction_following(rank: Ranker, pairs: Sequence[InstructionPair]) -> dict:
    """p-MRR of a retriever over instruction pairs.

    Args:
        rank: ``rank(queries, instructions)`` -> one ranking (passage ids, best first) per query,
            over the whole corpus; called twice (original, then changed instructions).
        pairs: the instruction pairs.

    Returns:
        ``p_mrr`` (mean over queries), ``per_query`` (query_id -> p-MRR), ``queries``,
        ``changed_passages``, and ``moved_down`` / ``moved_up`` / ``unchanged`` passage counts.
    """
    if not pairs:
        raise ValueError("no instruction pairs to evaluate")
    queries = [p.query for p in pairs]
    og = rank(queries, [p.instruction_og for p in pairs])
    new = rank(queries, [p.instruction_new for p in pairs])
    per_query, down, up, same = {}, 0, 0, 0
    for pair, og_ranked, new_ranked in zip(pairs, og, new):
        per_query[pair.query_id] = query_p_mrr(og_ranked, new_ranked, pair.changed)
        og_r, new_r = _rank_of(og_ranked), _rank_of(new_ranked)
        for pid in pair.changed:
            a, b = og_r.get(pid, len(og_ranked) + 1), new_r.get(pid, len(new_ranked) + 1)
            down, up, same = down + (b > a), up + (b < a), same + (b == a)
    scored = [v for v in per_query.values() if not math.isnan(v)]
    if not scored:
        raise ValueError("no pair has changed passages: p-MRR is undefined")
    return {
        "p_mrr": statistics.fmean(scored),
        "per_query": per_query,
        "queries": len(scored),
        "changed_passages": down + up + same,
        "moved_down": down,
        "moved_up": up,
        "unchanged": same,
    }


def read_instruction_pairs(path: str | Path) -> list[InstructionPair]:
    """Instruction pairs from a JSONL file; errors name the file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (instruction pairs, one JSON object per line)")
    pairs = []
    for lineno, rec in iter_jsonl(path):
        where = f"{path}:{lineno}"
        changed = get_field(rec, "changed", where, list)
        if not changed or not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in changed):
            raise DataError(f"{where}: field 'changed' must be a non-empty list of passage ids")
        pairs.append(
            InstructionPair(
                query_id=get_field(rec, "query_id", where, optional=True) or f"q{lineno}",
                query=get_field(rec, "query", where),
                instruction_og=get_field(rec, "instruction_og", where),
                instruction_new=get_field(rec, "instruction_new", where),
                changed=tuple(str(c) for c in changed),
            )
        )
    if not pairs:
        raise DataError(f"{path}: no instruction pairs in the file")
    return pairs


def synthetic_instruction_pairs(
    kb: KnowledgeBase, n: int | None = None, seed: int = 0
) -> list[InstructionPair]:
    """Instruction pairs over every town of the fictional knowledge base (see
    ``joint_rag.data.synthetic_instructions.town_instruction_pairs``); at most ``n`` (random by ``seed``)."""
    rng = random.Random(seed)
    pairs = town_instruction_pairs(kb, sorted({p.hometown for p in kb.people}), rng)
    if n is not None and len(pairs) > n:
        pairs = rng.sample(pairs, n)
    return pairs
