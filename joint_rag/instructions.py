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

FollowIR also reports retrieval quality on each side: nDCG@10 of the original ranking against
the judgements under the original instruction (``relevant_og``, its ``qrels_og``) and of the
changed ranking against those under the changed one (``relevant_new``, ``qrels_changed``); both
are reported when the pairs carry judgements (linear gains, log2 discounts, the ideal ranking
over every judged passage: trec_eval's ``ndcg_cut_10``).

Sources of pairs: a JSONL file (``read_instruction_pairs``; one object per line with ``query``
(or ``query_og`` and ``query_new``), ``instruction_og``, ``instruction_new``, ``changed`` or the
judgements ``relevant_og`` / ``relevant_new``, optional ``query_id`` and ``candidates``), a
FollowIR / MTEB instruction folder (``joint_rag.data.followir``), or the built-in fictional
knowledge base (``synthetic_instruction_pairs``). ``evaluate_instruction_following`` runs any
retriever that ranks the corpus for (queries, instructions), e.g. ``JointRAG``.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from joint_rag.data.followir import newly_irrelevant
from joint_rag.data.knowledge_base import KnowledgeBase
from joint_rag.data.reading import DataError, get_field, iter_jsonl
from joint_rag.data.synthetic_instructions import town_instruction_pairs
from joint_rag.data.types import InstructionPair

__all__ = [
    "InstructionPair",
    "evaluate_instruction_following",
    "family_p_mrr",
    "judged_ndcg",
    "newly_irrelevant",
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


def judged_ndcg(ranked: Sequence[str], grades: dict[str, float], k: int = 10) -> float:
    """nDCG@k of a ranking against graded judgements (trec_eval's ``ndcg_cut``: gain = grade,
    discount 1 / log2(rank + 1), the ideal ranking over every judged passage with grade > 0;
    grades <= 0 count 0). nan when nothing is relevant."""
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:k]
    if not ideal:
        return math.nan
    dcg = sum(max(grades.get(pid, 0.0), 0.0) / math.log2(i + 2) for i, pid in enumerate(ranked[:k]))
    return dcg / sum(g / math.log2(i + 2) for i, g in enumerate(ideal))


def _instruction(text: str | None) -> str | None:
    return text if text and text.strip() else None


def _restricted(ranked: list[str], candidates: tuple[str, ...] | None) -> list[str]:
    """The ranking over ``candidates`` only (a reranking task), candidates the ranking missed
    appended in their given order."""
    if candidates is None:
        return ranked
    allowed = set(candidates)
    kept = [pid for pid in ranked if pid in allowed]
    seen = set(kept)
    return kept + [pid for pid in candidates if pid not in seen]


def _mean(values: list[float]) -> float:
    scored = [v for v in values if not math.isnan(v)]
    return statistics.fmean(scored) if scored else math.nan


def evaluate_instruction_following(rank: Ranker, pairs: Sequence[InstructionPair], ndcg_at: int = 10) -> dict:
    """p-MRR of a retriever over instruction pairs, and nDCG@k under each instruction.

    Args:
        rank: ``rank(queries, instructions)`` -> one ranking (passage ids, best first) per query,
            over the whole corpus; called twice (original, then changed side). An empty
            instruction reaches it as None.
        pairs: the instruction pairs. A pair's ``candidates`` restrict its rankings to them.
        ndcg_at: k of the nDCG figures.

    Returns:
        ``p_mrr`` (mean over queries with changed passages), ``per_query`` (query_id -> p-MRR),
        ``queries``, ``changed_passages``, ``moved_down`` / ``moved_up`` / ``unchanged`` passage
        counts; ``ndcg@k_og`` / ``ndcg@k_new`` (means over the pairs judged on that side with a
        relevant passage; nan when none is) and ``ndcg_queries_og`` / ``ndcg_queries_new``;
        ``records``: one dict per pair (query_id, family, p_mrr, ndcg@k_og, ndcg@k_new, changed,
        moved_down, moved_up, unchanged; nan where undefined); ``per_family``: family -> mean
        p-MRR and query count, for pairs that name a family.
    """
    if not pairs:
        raise ValueError("no instruction pairs to evaluate")
    og = rank([p.query for p in pairs], [_instruction(p.instruction_og) for p in pairs])
    new = rank([p.query_new or p.query for p in pairs], [_instruction(p.instruction_new) for p in pairs])
    per_query, records, down, up, same = {}, [], 0, 0, 0
    og_key, new_key = f"ndcg@{ndcg_at}_og", f"ndcg@{ndcg_at}_new"
    for pair, og_ranked, new_ranked in zip(pairs, og, new):
        og_ranked, new_ranked = (
            _restricted(og_ranked, pair.candidates),
            _restricted(new_ranked, pair.candidates),
        )
        per_query[pair.query_id] = query_p_mrr(og_ranked, new_ranked, pair.changed)
        og_r, new_r = _rank_of(og_ranked), _rank_of(new_ranked)
        moves = [0, 0, 0]
        for pid in pair.changed:
            a, b = og_r.get(pid, len(og_ranked) + 1), new_r.get(pid, len(new_ranked) + 1)
            moves[0 if b > a else 1 if b < a else 2] += 1
        down, up, same = down + moves[0], up + moves[1], same + moves[2]
        nan = math.nan
        records.append(
            {
                "query_id": pair.query_id,
                "family": pair.family,
                "p_mrr": per_query[pair.query_id],
                og_key: nan
                if pair.relevant_og is None
                else judged_ndcg(og_ranked, pair.relevant_og, ndcg_at),
                new_key: nan
                if pair.relevant_new is None
                else judged_ndcg(new_ranked, pair.relevant_new, ndcg_at),
                "changed": len(pair.changed),
                "moved_down": moves[0],
                "moved_up": moves[1],
                "unchanged": moves[2],
            }
        )
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
        og_key: _mean([r[og_key] for r in records]),
        new_key: _mean([r[new_key] for r in records]),
        "ndcg_queries_og": sum(not math.isnan(r[og_key]) for r in records),
        "ndcg_queries_new": sum(not math.isnan(r[new_key]) for r in records),
        "per_family": {
            family: {"p_mrr": _mean(scores), "queries": sum(not math.isnan(s) for s in scores)}
            for family in dict.fromkeys(r["family"] for r in records if r["family"] is not None)
            for scores in [[r["p_mrr"] for r in records if r["family"] == family]]
        },
        "records": records,
    }


def _is_id(value) -> bool:
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def _id_list(rec: dict, name: str, where: str) -> tuple[str, ...] | None:
    value = get_field(rec, name, where, list, optional=True)
    if value is None:
        return None
    if not all(_is_id(v) for v in value):
        raise DataError(f"{where}: field {name!r} must be a list of passage ids")
    return tuple(str(v) for v in value)


def _judgements(rec: dict, name: str, where: str) -> dict[str, float] | None:
    """A list of relevant ids (grade 1 each) or an object id -> grade."""
    value = get_field(rec, name, where, (list, dict), optional=True)
    if value is None:
        return None
    if isinstance(value, list):
        if not all(_is_id(v) for v in value):
            raise DataError(f"{where}: field {name!r} must be a list of passage ids or an object id -> grade")
        return {str(v): 1.0 for v in value}
    bad = [
        k for k, g in value.items() if isinstance(g, bool) or not isinstance(g, (int, float)) or math.isnan(g)
    ]
    if bad:
        raise DataError(f"{where}: field {name!r}: the grade of {bad[0]!r} is not a number")
    return {str(k): float(g) for k, g in value.items()}


def family_p_mrr(result: dict, seen: Sequence[str]) -> dict[str, float]:
    """``p_mrr/{family}`` per family, and ``p_mrr_seen`` / ``p_mrr_unseen`` (mean over the
    queries of the families in / not in ``seen``), from ``evaluate_instruction_following``'s
    result: the means of ``pair_records`` over the pairs; empty when its pairs name no family.
    Undefined means are left out."""
    values: dict[str, list[float]] = {}
    for rec in pair_records(result, seen):
        for key, value in rec.items():
            if key.startswith("p_mrr/") or key in ("p_mrr_seen", "p_mrr_unseen"):
                values.setdefault(key, []).append(value)
    return {key: statistics.fmean(v) for key, v in values.items()}


def pair_records(result: dict, seen: Sequence[str]) -> list[dict]:
    """One record per instruction pair of ``evaluate_instruction_following``'s result, named
    like the run's metrics so that their mean over the pairs is the metric: ``p_mrr``,
    ``p_mrr/{family}``, ``p_mrr_seen`` or ``p_mrr_unseen`` (when ``seen`` names the trained
    families), ``instruction_ndcg@K_og`` / ``_new`` where judged; id ``pair:{query_id}``.
    Undefined values are left out."""
    out = []
    for r in result["records"]:
        rec: dict = {"id": f"pair:{r['query_id']}"}
        if not math.isnan(r["p_mrr"]):
            rec["p_mrr"] = r["p_mrr"]
            if r["family"] is not None:
                rec[f"p_mrr/{r['family']}"] = r["p_mrr"]
                if seen:
                    rec["p_mrr_seen" if r["family"] in seen else "p_mrr_unseen"] = r["p_mrr"]
        for key, value in r.items():
            if key.startswith("ndcg@") and not math.isnan(value):
                rec[f"instruction_{key}"] = value
        out.append(rec)
    return out


def read_instruction_pairs(path: str | Path) -> list[InstructionPair]:
    """Instruction pairs from a JSONL file; errors name the file, line and field.

    Per line: ``query`` (or ``query_og``; with ``query_new`` for pairs of two full queries, the
    instructions may then be empty), ``instruction_og``, ``instruction_new`` (or
    ``instruction_changed``), and ``changed`` (passage ids) or the judgements ``relevant_og`` and
    ``relevant_new`` (lists of ids or objects id -> grade; ``changed`` is then the passages
    relevant only under the original). Optional: ``query_id``, ``candidates`` (rank only these).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (instruction pairs, one JSON object per line)")
    pairs, seen = [], {}
    for lineno, rec in iter_jsonl(path):
        where = f"{path}:{lineno}"
        query = get_field(rec, ("query", "query_og"), where)
        query_new = get_field(rec, "query_new", where, optional=True)
        instruction_og = get_field(rec, "instruction_og", where, optional=query_new is not None) or ""
        instruction_new = (
            get_field(rec, ("instruction_new", "instruction_changed"), where, optional=query_new is not None)
            or ""
        )
        relevant_og, relevant_new = (
            _judgements(rec, "relevant_og", where),
            _judgements(rec, "relevant_new", where),
        )
        if (relevant_og is None) != (relevant_new is None):
            raise DataError(f"{where}: give both 'relevant_og' and 'relevant_new' or neither")
        changed = _id_list(rec, "changed", where)
        if changed is None and relevant_og is not None:
            changed = newly_irrelevant(relevant_og, relevant_new)
        if not changed:
            raise DataError(
                f"{where}: field 'changed' must be a non-empty list of passage ids (or give 'relevant_og' "
                "and 'relevant_new' where some passage is relevant only under the original)"
            )
        if relevant_og is not None:
            stray = [pid for pid in changed if relevant_og.get(pid, 0.0) <= 0]
            if stray:
                raise DataError(f"{where}: changed passage {stray[0]!r} is not relevant in 'relevant_og'")
        query_id = str(get_field(rec, "query_id", where, optional=True) or f"q{lineno}")
        if query_id in seen:
            raise DataError(f"{where}: duplicate query_id {query_id!r} (first on line {seen[query_id]})")
        seen[query_id] = lineno
        candidates = _id_list(rec, "candidates", where)
        if candidates is not None:
            missing = [pid for pid in changed if pid not in set(candidates)]
            if missing:
                raise DataError(f"{where}: changed passage {missing[0]!r} is not among 'candidates'")
        pairs.append(
            InstructionPair(
                query_id=query_id,
                query=query,
                instruction_og=instruction_og,
                instruction_new=instruction_new,
                changed=changed,
                query_new=query_new,
                relevant_og=relevant_og,
                relevant_new=relevant_new,
                candidates=candidates,
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
