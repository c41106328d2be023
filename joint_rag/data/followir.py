"""FollowIR / MTEB instruction-retrieval folders: a corpus and instruction pairs with judgements.

The layout MTEB's instruction tasks read from a local folder (``AbsTaskInstructionRetrieval``;
FollowIR's Robust04, News21 and Core17 narratives are published in it)::

    corpus.jsonl              {"_id", "title", "text"} per line
    queries.jsonl             {"_id", "text", "instruction_og", "instruction_changed"} per line
    qrels_og/{split}.tsv      judgements under the original instruction (BEIR or TREC lines)
    qrels_changed/{split}.tsv judgements under the changed instruction
    top_ranked.jsonl          optional: {"qid", "pid"} per line (``pid`` one id or a list); each
                              query ranks only these passages (FollowIR is a reranking task)

``read_followir`` turns it into a ``Corpus`` and one ``InstructionPair`` per query that has a
relevant passage under the original instruction: ``changed`` = relevant under the original and
not under the changed judgements (MTEB's qrel diff), the judgements kept for nDCG@10 on each
side. ``jrag follow --followir FOLDER`` evaluates an export on it.
"""

from __future__ import annotations

from pathlib import Path

from joint_rag.data.formats import BeirSource, read_qrels_grades
from joint_rag.data.reading import DataError, get_field, iter_jsonl, require_file
from joint_rag.data.types import Corpus, InstructionPair


def newly_irrelevant(relevant_og: dict[str, float], relevant_new: dict[str, float]) -> tuple[str, ...]:
    """Passages relevant (grade > 0) under the original judgements and not under the changed
    ones: FollowIR's ``changed`` set (MTEB's qrel diff), in the original judgements' order."""
    return tuple(pid for pid, g in relevant_og.items() if g > 0 and relevant_new.get(pid, 0.0) <= 0)


def _queries(path: Path) -> dict[str, tuple[str, str, str]]:
    queries: dict[str, tuple[str, str, str]] = {}
    lines: dict[str, int] = {}
    for lineno, rec in iter_jsonl(path):
        where = f"{path}:{lineno}"
        qid = str(get_field(rec, ("_id", "id"), where))
        if qid in queries:
            raise DataError(f"{where}: duplicate query id {qid!r} (first on line {lines[qid]})")
        lines[qid] = lineno
        queries[qid] = (
            get_field(rec, "text", where),
            get_field(rec, "instruction_og", where),
            get_field(rec, ("instruction_changed", "instruction_new"), where),
        )
    if not queries:
        raise DataError(f"{path}: no queries in the file")
    return queries


def _top_ranked(path: Path, queries: dict, corpus: Corpus) -> dict[str, list[str]]:
    ranked: dict[str, list[str]] = {}
    for lineno, rec in iter_jsonl(path):
        where = f"{path}:{lineno}"
        qid = str(get_field(rec, "qid", where))
        if qid not in queries:
            raise DataError(f"{where}: query id {qid!r} is not in queries.jsonl")
        pids = get_field(rec, "pid", where, (str, int, list))
        for pid in pids if isinstance(pids, list) else [pids]:
            if isinstance(pid, bool) or not isinstance(pid, (str, int)):
                raise DataError(f"{where}: field 'pid' must be a passage id or a list of them")
            if str(pid) not in corpus:
                raise DataError(f"{where}: passage id {str(pid)!r} is not in corpus.jsonl")
            row = ranked.setdefault(qid, [])
            if str(pid) not in row:
                row.append(str(pid))
    return ranked


def read_followir(folder: str | Path, split: str = "test") -> tuple[Corpus, list[InstructionPair]]:
    """The corpus and the instruction pairs of a FollowIR / MTEB instruction folder (see the
    module docstring); errors name the file, line and field.

    Args:
        folder: the dataset folder.
        split: the qrels file name under ``qrels_og/`` and ``qrels_changed/`` (without ``.tsv``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"{folder}: folder not found; expected a FollowIR / MTEB instruction folder with corpus.jsonl, "
            "queries.jsonl, qrels_og/ and qrels_changed/"
        )
    corpus = BeirSource(folder).read_corpus()  # an empty one is refused by name
    queries = _queries(
        require_file(folder / "queries.jsonl", "queries with _id, text, instruction_og, instruction_changed")
    )
    qrels = {
        side: read_qrels_grades(
            require_file(
                folder / f"qrels_{side}" / f"{split}.tsv", f"the {side} judgements (BEIR or TREC qrels)"
            ),
            corpus,
            queries,
        )
        for side in ("og", "changed")
    }
    top = folder / "top_ranked.jsonl"
    candidates = _top_ranked(top, queries, corpus) if top.is_file() else {}
    pairs = []
    for qid, (text, og, new) in queries.items():
        relevant_og = qrels["og"].get(qid, {})
        if not any(g > 0 for g in relevant_og.values()):
            continue  # nothing relevant under the original: no p-MRR, no nDCG
        relevant_new = qrels["changed"].get(qid, {})
        pairs.append(
            InstructionPair(
                query_id=qid,
                query=text,
                instruction_og=og,
                instruction_new=new,
                changed=newly_irrelevant(relevant_og, relevant_new),
                relevant_og=dict(relevant_og),
                relevant_new=dict(relevant_new),
                candidates=tuple(candidates[qid]) if qid in candidates else None,
            )
        )
    if not pairs:
        raise DataError(f"{folder / 'qrels_og' / (split + '.tsv')}: no query has a relevant passage")
    if candidates:
        missing = [p.query_id for p in pairs if p.candidates is None]
        if missing:
            raise DataError(
                f"{top}: query {missing[0]!r} has no top_ranked passages (every query needs them)"
            )
    return corpus, pairs
