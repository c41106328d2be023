"""`BeirSource`: a BEIR folder (corpus.jsonl, queries.jsonl, qrels/{split}.tsv), and the qrels
reader (BEIR's three tab-separated columns or TREC's four, graded) that FollowIR's layout shares."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from joint_rag.data.file_sources import SplitSource, dedupe, limited
from joint_rag.data.reading import get_field, iter_jsonl, read_lines, require_file
from joint_rag.data.splits import limit
from joint_rag.data.types import Corpus, DataError, Example, Passage, RAGData


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


QRELS_FORMATS = {
    "beir": "BEIR (query id<TAB>passage id<TAB>score)",
    "trec": "TREC (query id, iteration, passage id, relevance; whitespace-separated)",
}


def _qrels_header(line: str) -> bool:
    """A first line whose score column is not a number (BEIR's `query-id corpus-id score`)."""
    tabs, words = line.split("\t"), line.split()
    return not (len(tabs) >= 3 and _is_number(tabs[2].strip())) and not (
        len(words) == 4 and _is_number(words[3])
    )


def _qrels_format(line: str) -> str:
    """ "trec" for a 4-column line whose last column is a number, else "beir"."""
    words = line.split()
    tabs = line.split("\t")
    return "trec" if len(words) == 4 and len(tabs) != 3 and _is_number(words[3]) else "beir"


def read_qrels_grades(path: Path, corpus: Corpus, queries) -> dict[str, dict[str, float]]:
    """Graded judgements of a qrels file, BEIR (header, then ``query-id<TAB>corpus-id<TAB>score``)
    or TREC (``qid iter docid rel``): query id -> passage id -> grade, queries in order of first
    appearance. Every query id must be in ``queries`` and every passage id in ``corpus``; errors
    name the file and line."""
    grades: dict[str, dict[str, float]] = {}
    judged_on: dict[tuple[str, str], int] = {}
    fmt: str | None = None
    first = 0
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        if fmt is None:
            if lineno == 1 and _qrels_header(line):
                continue  # the header line, whatever its column names
            fmt, first = _qrels_format(line), lineno
        if fmt == "trec":
            cols = line.split()
            if len(cols) != 4:
                raise DataError(
                    f"{path}:{lineno}: expected 4 whitespace-separated columns (query id, iteration, "
                    f"passage id, relevance), got {len(cols)}; line {first} made this a "
                    f"{QRELS_FORMATS['trec']} file: do not mix formats"
                )
            qid, pid, score_text = cols[0], cols[2], cols[3]
        else:
            cols = line.split("\t")
            if len(cols) < 3:
                raise DataError(
                    f"{path}:{lineno}: expected 3 tab-separated columns (query id, passage id, score), "
                    f"got {len(cols)} (formats read: {QRELS_FORMATS['beir']} or {QRELS_FORMATS['trec']})"
                )
            qid, pid, score_text = cols[0].strip(), cols[1].strip(), cols[2].strip()
        try:
            score = float(score_text)
        except ValueError:
            raise DataError(
                f"{path}:{lineno}: score {score_text!r} is not a number "
                f"(read as {QRELS_FORMATS[fmt]}, from line {first})"
            ) from None
        if qid not in queries:
            raise DataError(f"{path}:{lineno}: query id {qid!r} is not in queries.jsonl")
        if pid not in corpus:
            raise DataError(f"{path}:{lineno}: passage id {pid!r} is not in corpus.jsonl")
        judged = grades.setdefault(qid, {})
        if pid in judged and judged[pid] != score:
            raise DataError(
                f"{path}:{lineno}: query {qid!r} and passage {pid!r} are judged {score_text} here "
                f"but {judged[pid]:g} on line {judged_on[qid, pid]}; keep one judgement"
            )
        judged.setdefault(pid, score)
        judged_on.setdefault((qid, pid), lineno)
    return grades


class BeirSource(SplitSource):
    """A BEIR dataset folder: `corpus.jsonl`, `queries.jsonl`, `qrels/{split}.tsv`.

    Qrels files are BEIR (a header, then `query-id<TAB>corpus-id<TAB>score`, read by position
    whatever the header says) or TREC (`qid iter docid rel`, whitespace-separated, no header);
    the format is detected from the first judgement line and every line must follow it. Grades
    are kept (`Example.grades`, explicit 0 judgements included: judged, not relevant) and the
    passages with grade > 0 (grade >= 1 for integer grades) are the gold passages; nDCG uses the
    grades. A query whose judgements are all 0 has nothing to learn or evaluate and is left out.
    Records name their id `_id` (or `id`). Answers come from the query's `metadata.answers`
    when present (MS MARCO), else `answers=[]` (retrieval only). A query's optional
    `instruction` field is its `Example.instruction` (what counts as relevant; prepended to the
    query by the retriever). Every passage's group is its own id.

    If `qrels/{train_split}.tsv` exists, train comes from it and the eval split's queries are
    divided by group into val (`val_fraction` of them) and test (the rest; `val_fraction=0`
    keeps the whole eval split as test, for comparison with published figures). Otherwise the
    eval split's queries are divided by group into train/val/test by the two fractions.
    `split_by: order` divides them in file order instead; `evaluate_all` puts the whole eval
    split in val and in test (train from `qrels/{train_split}.tsv` if it exists, else empty):
    the switch for a folder with test qrels only. With id lists, the examples are the eval
    split's queries and those of the train split that are not also eval queries.

    Args:
        path: the dataset folder.
        train_split: name of the training qrels file (without `.tsv`).
        eval_split: name of the evaluation qrels file (without `.tsv`).
        val_fraction: fraction of the divided queries that go to validation.
        test_fraction: fraction of queries for test when there is no train split (ignored
            otherwise: then test is the eval split less val).
        seed: split and subsampling seed.
        max_examples: keep at most this many examples per split (random by seed); None keeps all.
        disjoint_train: drop training queries whose gold passages are gold for a val/test
            query (the official BEIR splits share some passages, e.g. 181 in SciFact).
        split_by: "group" (default), "order" or "ids" (`SplitSource` says how each divides).
        train_ids: example ids for train, a list or a file of one id per line (`SplitSource`).
        val_ids: example ids for validation (as `train_ids`).
        test_ids: example ids for test (as `train_ids`).
        evaluate_all: every example in val and in test, train empty (`SplitSource`).
        max_train: keep this many training examples (after `disjoint_train`; random by `seed`,
            the same N for every training seed): the count of distinct real examples in a data
            study (compare `SynthesizedSource(max_train=)`). None keeps all.
    """

    def __init__(
        self,
        path: str | Path,
        train_split: str = "train",
        eval_split: str = "test",
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        seed: int = 0,
        max_examples: int | None = None,
        disjoint_train: bool = False,
        split_by: str = "group",
        train_ids: str | list[str] | None = None,
        val_ids: str | list[str] | None = None,
        test_ids: str | list[str] | None = None,
        evaluate_all: bool = False,
        max_train: int | None = None,
    ) -> None:
        if max_train is not None and max_train < 1:
            raise ValueError(f"BeirSource: max_train must be a positive count or null, got {max_train}")
        self.path = Path(path)
        self.max_train = max_train
        self.train_split = train_split
        self.eval_split = eval_split
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.max_examples = max_examples
        self.disjoint_train = disjoint_train
        self._init_split(split_by, train_ids, val_ids, test_ids, evaluate_all)

    def read_corpus(self) -> Corpus:
        """All passages of `corpus.jsonl`."""
        path = require_file(
            self.path / "corpus.jsonl", "a BEIR corpus.jsonl with {_id, title, text} per line"
        )
        passages: list[Passage] = []
        seen: dict[str, int] = {}
        for lineno, rec in iter_jsonl(path):
            pid = get_field(rec, ("_id", "id"), f"{path}:{lineno}")
            if pid in seen:
                raise DataError(
                    f"{path}:{lineno}: duplicate passage id {pid!r} (first on line {seen[pid]}); "
                    "give every passage its own id"
                )
            seen[pid] = lineno
            title = get_field(rec, "title", f"{path}:{lineno}", optional=True) or ""
            passages.append(Passage(pid, title, get_field(rec, "text", f"{path}:{lineno}")))
        return Corpus(passages, source=str(path))

    def read_queries(self) -> dict[str, tuple[str, list[str], dict]]:
        """Query id -> (text, answers, metadata) from `queries.jsonl` (`where` in the metadata)."""
        path = require_file(self.path / "queries.jsonl", "a BEIR queries.jsonl with {_id, text} per line")
        queries: dict[str, tuple[str, list[str], dict]] = {}
        lines: dict[str, int] = {}
        for lineno, rec in iter_jsonl(path):
            where = f"{path}:{lineno}"
            qid = get_field(rec, ("_id", "id"), where)
            if qid in queries:
                raise DataError(
                    f"{where}: duplicate query id {qid!r} (first on line {lines[qid]}); "
                    "give every query its own id"
                )
            meta = get_field(rec, "metadata", where, dict, optional=True) or {}
            answers = get_field(meta, "answers", f"{where}: metadata", list, optional=True) or []
            if not all(isinstance(a, str) for a in answers):
                raise DataError(f"{where}: field 'metadata.answers' should be a list of strings")
            text = get_field(rec, "text", where)
            instruction = get_field(rec, "instruction", where, optional=True)
            if instruction is not None:  # what counts as relevant for this query (Example.instruction)
                meta = {**meta, "instruction": instruction}
            queries[qid], lines[qid] = (text, dedupe(answers), {**meta, "where": where}), lineno
        return queries

    def read_qrels(self, split: str, corpus: Corpus, queries: dict) -> list[Example]:
        """Examples of one qrels split (BEIR or TREC lines), in order of first appearance of each query."""
        path = require_file(
            self.path / "qrels" / f"{split}.tsv",
            "a BEIR qrels file (header, then query-id<TAB>corpus-id<TAB>score) or TREC qrels "
            "(query-id iteration corpus-id relevance)",
        )
        grades = read_qrels_grades(path, corpus, queries)
        examples = []
        for qid, judged in grades.items():
            gold = [pid for pid, grade in judged.items() if grade > 0]
            if not gold:
                continue  # only non-relevant judgements: nothing to learn or evaluate
            text, answers, meta = queries[qid]
            extra = {k: v for k, v in meta.items() if k not in ("answers", "instruction")}
            examples.append(
                Example(
                    text,
                    list(answers),
                    gold,
                    instruction=meta.get("instruction"),
                    example_id=qid,
                    meta={"split": split, **extra},
                    grades=dict(judged),
                )
            )
        if not examples:
            raise DataError(
                f"{path}: no query has a judgement with score > 0; a qrels file needs at least one "
                "relevant passage"
            )
        return examples

    def load(self) -> RAGData:
        """Read the folder and split it (see the class docstring)."""
        data = self._load_splits()
        if self.max_train is None:
            return data
        if self.max_train > len(data.train):
            raise DataError(
                f"{self.path}: max_train = {self.max_train} but the folder gives {len(data.train)} training "
                "queries" + (" after disjoint_train" if self.disjoint_train else "")
            )
        return dataclasses.replace(data, train=limit(data.train, self.max_train, self.seed))

    def _load_splits(self) -> RAGData:
        if not self.path.is_dir():
            raise DataError(
                f"{self.path}: folder not found; expected a BEIR folder with corpus.jsonl, queries.jsonl, qrels/"
            )
        corpus, queries = self.read_corpus(), self.read_queries()
        evals = self.read_qrels(self.eval_split, corpus, queries)
        train = None
        if (self.path / "qrels" / f"{self.train_split}.tsv").is_file():
            train = self.read_qrels(self.train_split, corpus, queries)
        n, s, source = self.max_examples, self.seed, str(self.path)
        if self.split_by == "ids":
            eval_ids = {ex.example_id for ex in evals}
            pool = evals + [ex for ex in train or [] if ex.example_id not in eval_ids]
            return limited(corpus, *self._divide(pool, corpus, 0.0, 0.0, s, source), n, s)
        if train is None:
            tr, va, te = self._divide(evals, corpus, self.val_fraction, self.test_fraction, s, source)
            return limited(corpus, tr, va, te, n, s)
        # val_fraction of the eval queries (whole groups) to val, the rest to test
        if self.evaluate_all:
            val, test = list(evals), list(evals)
        else:
            test, val, _ = self._divide(evals, corpus, self.val_fraction, 0.0, s, source)
        if self.disjoint_train:
            held = {corpus[corpus.index_of(p)].group_key for ex in evals for p in ex.gold_passage_ids}
            train = [
                ex
                for ex in train
                if not any(corpus[corpus.index_of(p)].group_key in held for p in ex.gold_passage_ids)
            ]
        return limited(corpus, train, val, test, n, s)
