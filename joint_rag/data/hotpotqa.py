"""`HotpotQASource`: HotpotQA, original list layout or Hugging Face columnar layout (JSON/JSONL)."""

from __future__ import annotations

import json
from pathlib import Path

from joint_rag.data.file_sources import FileSource, dedupe
from joint_rag.data.reading import get_field, iter_jsonl, json_problem, read_text, require_file
from joint_rag.data.types import Corpus, DataError, Example, Passage, check_examples


def _read_records(path: Path) -> list[tuple[str, dict]]:
    """(location, record) pairs from a JSON list or a JSONL file (Hugging Face `to_json`)."""
    if path.suffix != ".jsonl":
        text = read_text(path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            if e.msg != "Extra data" or not text.lstrip().startswith("{"):
                raise DataError(f"{path}:{e.lineno}: malformed JSON ({json_problem(e)})") from None
        else:
            if isinstance(data, dict) and isinstance(data.get("question"), list):  # one dict of columns
                n = len(data["question"])
                data = [
                    {k: v[i] for k, v in data.items() if isinstance(v, list) and len(v) == n}
                    for i in range(n)
                ]
            if not isinstance(data, list):
                raise DataError(
                    f"{path}: expected a JSON list of HotpotQA records, got {type(data).__name__}"
                )
            return [(f"{path}: record {i}", rec) for i, rec in enumerate(data)]
    return [(f"{path}:{lineno}", rec) for lineno, rec in iter_jsonl(path)]


def _hotpot_context(rec: dict, where: str) -> list[tuple[str, list[str]]]:
    """(title, sentences) pairs from either HotpotQA layout."""
    ctx = get_field(rec, "context", where, (list, dict))
    if isinstance(ctx, dict):  # Hugging Face: {title: [...], sentences: [[...], ...]}
        titles = get_field(ctx, "title", f"{where}: context", list)
        sents = get_field(ctx, "sentences", f"{where}: context", list)
        if len(titles) != len(sents):
            raise DataError(
                f"{where}: field 'context' has {len(titles)} titles but {len(sents)} sentence lists"
            )
        pairs = list(zip(titles, sents))
    else:  # original: [[title, [sentences...]], ...]
        pairs = []
        for i, item in enumerate(ctx):
            if not (isinstance(item, list) and len(item) == 2):
                raise DataError(f"{where}: field 'context[{i}]' should be [title, [sentences...]]")
            pairs.append((item[0], item[1]))
    for i, (title, sentences) in enumerate(pairs):
        if not (
            isinstance(title, str)
            and isinstance(sentences, list)
            and all(isinstance(x, str) for x in sentences)
        ):
            raise DataError(
                f"{where}: field 'context' entry {i} should be a title and a list of sentence strings"
            )
    return pairs


def _hotpot_support(rec: dict, where: str) -> list[str]:
    """Supporting-fact titles, in order, from either layout."""
    sf = get_field(rec, "supporting_facts", where, (list, dict))
    if isinstance(sf, dict):
        titles = get_field(sf, "title", f"{where}: supporting_facts", list)
    else:
        titles = []
        for i, item in enumerate(sf):
            if not (isinstance(item, list) and item and isinstance(item[0], str)):
                raise DataError(f"{where}: field 'supporting_facts[{i}]' should be [title, sentence index]")
            titles.append(item[0])
    return dedupe([str(t) for t in titles])


class HotpotQASource(FileSource):
    """HotpotQA (distractor setting) in its original list layout or the Hugging Face layout.

    Each context paragraph becomes a passage (deduplicated by title and text; its id is the
    title, suffixed ` (2)`, ` (3)`... when one title has different texts); its group is the
    title. Each example's `candidate_ids` are its context paragraphs and its gold passages are
    those of its supporting-fact titles. Note: two-title questions chain groups together, so
    on large files a few big components can make the split fractions approximate.

    Args:
        path: a JSON list of records, or a JSONL file with one record per line. Records are
            `{_id|id, question, answer, supporting_facts, context}` in either layout.
        val_fraction: fraction of questions for validation (group-disjoint).
        test_fraction: fraction of questions for test (group-disjoint).
        seed: split and subsampling seed.
        max_examples: keep at most this many examples per split (random by seed); None keeps all.
        split_by: "group" (default), "order" or "ids" (`SplitSource` says how each divides).
        train_ids: example ids for train, a list or a file of one id per line (`SplitSource`).
        val_ids: example ids for validation (as `train_ids`).
        test_ids: example ids for test (as `train_ids`).
        evaluate_all: every example in val and in test, train empty (`SplitSource`).
    """

    def read(self) -> tuple[Corpus, list[Example]]:
        """The corpus and all examples, unsplit (`meta["where"]`: the file and line or record)."""
        path = require_file(self.path, "a HotpotQA JSON list or JSONL file")
        passages: list[Passage] = []
        by_content: dict[tuple[str, str], str] = {}
        per_title: dict[str, int] = {}
        examples: list[Example] = []
        for where, rec in _read_records(path):
            qid = get_field(rec, ("_id", "id"), where)
            cands: list[str] = []
            title_to_pid: dict[str, str] = {}
            for title, sentences in _hotpot_context(rec, where):
                text = " ".join(s.strip() for s in sentences if s.strip())
                pid = by_content.get((title, text))
                if pid is None:
                    per_title[title] = per_title.get(title, 0) + 1
                    pid = title if per_title[title] == 1 else f"{title} ({per_title[title]})"
                    by_content[(title, text)] = pid
                    passages.append(Passage(pid, title, text, group=title))
                cands.append(pid)
                title_to_pid.setdefault(title, pid)
            gold = []
            for title in _hotpot_support(rec, where):
                if title not in title_to_pid:
                    raise DataError(
                        f"{where}: field 'supporting_facts' names title {title!r}, which is not in 'context'"
                    )
                gold.append(title_to_pid[title])
            meta = {k: rec[k] for k in ("type", "level") if k in rec}
            meta["where"] = where
            examples.append(
                Example(
                    query=get_field(rec, "question", where),
                    answers=[get_field(rec, "answer", where)],
                    gold_passage_ids=gold,
                    candidate_ids=dedupe(cands),
                    example_id=qid,
                    hops=max(1, len(gold)),
                    meta=meta,
                )
            )
        corpus = Corpus(passages, source=str(path))
        check_examples(examples, corpus, str(path))
        return corpus, examples
