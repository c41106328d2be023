"""Readers for public QA/retrieval formats into `RAGData` (a `Corpus` plus split `Example`s).

Each reader is a small config class (choose it from YAML with `class_path`/`init_args`) whose
`load()` returns `RAGData`. Every problem in the input raises one `DataError` naming the file
and the line, record or field; malformed rows are never skipped silently.

- `SquadSource`: SQuAD v1.1/v2.0 JSON (also XQuAD); a passage per paragraph, group = article.
- `BeirSource`: a BEIR folder (corpus.jsonl, queries.jsonl, qrels/{split}.tsv).
- `HotpotQASource`: HotpotQA, original list layout or Hugging Face columnar layout (JSON/JSONL).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from joint_rag.data.splits import limit, split_by_group
from joint_rag.data.types import Corpus, DataError, DataSource, Example, Passage, RAGData, check_examples

# ----------------------------------------------------------------------------- file helpers


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected {what}")
    return path


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line of a JSONL file."""
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}:{lineno}: malformed JSON line ({e.msg} at column {e.colno})"
                ) from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def get_field(
    rec: Any, name: str, where: str, kind: type | tuple[type, ...] = str, optional: bool = False
) -> Any:
    """`rec[name]` checked for type; DataError naming `where` and the field otherwise."""
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if name not in rec or rec[name] is None:
        if optional:
            return None
        raise DataError(f"{where}: missing field {name!r}")
    value = rec[name]
    if kind is str and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # numeric ids are common in BEIR files
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise DataError(f"{where}: field {name!r} should be {expected}, got {type(value).__name__}")
    return value


def _dedupe(xs: list[str]) -> list[str]:
    return list(dict.fromkeys(xs))


def _split(
    examples: list[Example], corpus: Corpus, val: float, test: float, seed: int, max_examples: int | None
) -> RAGData:
    train, va, te = split_by_group(examples, corpus, val, test, seed)
    return RAGData(
        corpus, limit(train, max_examples, seed), limit(va, max_examples, seed), limit(te, max_examples, seed)
    )


# ----------------------------------------------------------------------------- SQuAD


class _FileSource(DataSource):
    """Options shared by single-file sources that split their questions by group."""

    def __init__(
        self,
        path: str | Path,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        seed: int = 0,
        max_examples: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.max_examples = max_examples


class SquadSource(_FileSource):
    """SQuAD-format JSON (SQuAD v1.1, v2.0, XQuAD): one passage per paragraph.

    Passage ids are `{title}#{paragraph index}`, the group is the article title, and the
    splits are article-disjoint. Unanswerable SQuAD v2.0 questions keep `answers=[]`.

    Args:
        path: the JSON file (`data[].title`, `data[].paragraphs[].context`,
            `data[].paragraphs[].qas[].{id, question, answers[].text}`).
        val_fraction: fraction of questions (whole articles) for validation.
        test_fraction: fraction of questions (whole articles) for test.
        seed: split and subsampling seed.
        max_examples: keep at most this many examples per split (random by seed); None keeps all.
    """

    def read(self) -> tuple[Corpus, list[Example]]:
        """The corpus and all examples, unsplit."""
        path = _require_file(self.path, "a SQuAD-format JSON file with a top-level 'data' list")
        articles = get_field(_read_json(path), "data", f"{path}: top level", list)
        passages: list[Passage] = []
        examples: list[Example] = []
        for a, article in enumerate(articles):
            where = f"{path}: data[{a}]"
            title = get_field(article, "title", where)
            for p, para in enumerate(get_field(article, "paragraphs", where, list)):
                pwhere = f"{where}.paragraphs[{p}]"
                pid = f"{title}#{p}"
                passages.append(Passage(pid, title, get_field(para, "context", pwhere), group=title))
                for q, qa in enumerate(get_field(para, "qas", pwhere, list)):
                    qwhere = f"{pwhere}.qas[{q}]"
                    answers = get_field(qa, "answers", qwhere, list)
                    texts = [
                        get_field(ans, "text", f"{qwhere}.answers[{i}]") for i, ans in enumerate(answers)
                    ]
                    examples.append(
                        Example(
                            query=get_field(qa, "question", qwhere),
                            answers=_dedupe(texts),
                            gold_passage_ids=[pid],
                            example_id=get_field(qa, "id", qwhere),
                        )
                    )
        return Corpus(passages, source=str(path)), examples

    def load(self) -> RAGData:
        """Read the file and split it by article."""
        corpus, examples = self.read()
        return _split(examples, corpus, self.val_fraction, self.test_fraction, self.seed, self.max_examples)


# ----------------------------------------------------------------------------- BEIR


class BeirSource(DataSource):
    """A BEIR dataset folder: `corpus.jsonl`, `queries.jsonl`, `qrels/{split}.tsv`.

    Qrels columns are read by position (query id, passage id, score) whatever the header says,
    and rows with score > 0 are the gold passages. Answers come from the query's
    `metadata.answers` when present (MS MARCO), else `answers=[]` (retrieval only). Every
    passage's group is its own id.

    If `qrels/{train_split}.tsv` exists, train comes from it and the eval split's queries are
    divided by group into val (`val_fraction` of them) and test (the rest; `val_fraction=0`
    keeps the whole eval split as test, for comparison with published figures). Otherwise the
    eval split's queries are divided by group into train/val/test by the two fractions.

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
    ) -> None:
        self.path = Path(path)
        self.train_split = train_split
        self.eval_split = eval_split
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.max_examples = max_examples
        self.disjoint_train = disjoint_train

    def read_corpus(self) -> Corpus:
        """All passages of `corpus.jsonl`."""
        path = _require_file(
            self.path / "corpus.jsonl", "a BEIR corpus.jsonl with {_id, title, text} per line"
        )
        passages: list[Passage] = []
        seen: dict[str, int] = {}
        for lineno, rec in iter_jsonl(path):
            pid = get_field(rec, "_id", f"{path}:{lineno}")
            if pid in seen:
                raise DataError(f"{path}:{lineno}: duplicate passage id {pid!r} (first on line {seen[pid]})")
            seen[pid] = lineno
            title = get_field(rec, "title", f"{path}:{lineno}", optional=True) or ""
            passages.append(Passage(pid, title, get_field(rec, "text", f"{path}:{lineno}")))
        return Corpus(passages, source=str(path))

    def read_queries(self) -> dict[str, tuple[str, list[str], dict]]:
        """Query id -> (text, answers, metadata) from `queries.jsonl`."""
        path = _require_file(self.path / "queries.jsonl", "a BEIR queries.jsonl with {_id, text} per line")
        queries: dict[str, tuple[str, list[str], dict]] = {}
        lines: dict[str, int] = {}
        for lineno, rec in iter_jsonl(path):
            where = f"{path}:{lineno}"
            qid = get_field(rec, "_id", where)
            if qid in queries:
                raise DataError(f"{where}: duplicate query id {qid!r} (first on line {lines[qid]})")
            meta = get_field(rec, "metadata", where, dict, optional=True) or {}
            answers = get_field(meta, "answers", f"{where}: metadata", list, optional=True) or []
            if not all(isinstance(a, str) for a in answers):
                raise DataError(f"{where}: field 'metadata.answers' should be a list of strings")
            queries[qid], lines[qid] = (get_field(rec, "text", where), _dedupe(answers), meta), lineno
        return queries

    def read_qrels(self, split: str, corpus: Corpus, queries: dict) -> list[Example]:
        """Examples of one qrels split, in order of first appearance of each query."""
        path = _require_file(
            self.path / "qrels" / f"{split}.tsv",
            "a BEIR qrels file: header, then query-id<TAB>corpus-id<TAB>score",
        )
        gold: dict[str, list[str]] = {}
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            cols = line.rstrip("\r\n").split("\t")
            if not line.strip():
                continue
            if len(cols) < 3:
                raise DataError(
                    f"{path}:{lineno}: expected 3 tab-separated columns (query id, passage id, score), got {len(cols)}"
                )
            qid, pid, score_text = cols[0].strip(), cols[1].strip(), cols[2].strip()
            try:
                score = float(score_text)
            except ValueError:
                if lineno == 1:
                    continue  # the header line, whatever its column names
                raise DataError(f"{path}:{lineno}: score {score_text!r} is not a number") from None
            if qid not in queries:
                raise DataError(f"{path}:{lineno}: query id {qid!r} is not in queries.jsonl")
            if pid not in corpus:
                raise DataError(f"{path}:{lineno}: passage id {pid!r} is not in corpus.jsonl")
            gold.setdefault(qid, [])
            if score > 0 and pid not in gold[qid]:
                gold[qid].append(pid)
        examples = []
        for qid, pids in gold.items():
            if not pids:
                continue  # only non-relevant judgements: nothing to learn or evaluate
            text, answers, meta = queries[qid]
            extra = {k: v for k, v in meta.items() if k != "answers"}
            examples.append(
                Example(text, list(answers), pids, example_id=qid, meta={"split": split, **extra})
            )
        return examples

    def load(self) -> RAGData:
        """Read the folder and split it (see the class docstring)."""
        if not self.path.is_dir():
            raise DataError(
                f"{self.path}: folder not found; expected a BEIR folder with corpus.jsonl, queries.jsonl, qrels/"
            )
        corpus, queries = self.read_corpus(), self.read_queries()
        evals = self.read_qrels(self.eval_split, corpus, queries)
        if not (self.path / "qrels" / f"{self.train_split}.tsv").is_file():
            return _split(evals, corpus, self.val_fraction, self.test_fraction, self.seed, self.max_examples)
        train = self.read_qrels(self.train_split, corpus, queries)
        # val_fraction of the eval queries (whole groups) to val, the rest to test
        test, val, _ = split_by_group(evals, corpus, self.val_fraction, 0.0, self.seed)
        if self.disjoint_train:
            held = {corpus[corpus.index_of(p)].group_key for ex in evals for p in ex.gold_passage_ids}
            train = [
                ex
                for ex in train
                if not any(corpus[corpus.index_of(p)].group_key in held for p in ex.gold_passage_ids)
            ]
        n, s = self.max_examples, self.seed
        return RAGData(corpus, limit(train, n, s), limit(val, n, s), limit(test, n, s))


# ----------------------------------------------------------------------------- HotpotQA


def _read_records(path: Path) -> list[tuple[str, dict]]:
    """(location, record) pairs from a JSON list or a JSONL file (Hugging Face `to_json`)."""
    if path.suffix != ".jsonl":
        text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            if e.msg != "Extra data" or not text.lstrip().startswith("{"):
                raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
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
    return _dedupe([str(t) for t in titles])


class HotpotQASource(_FileSource):
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
    """

    def read(self) -> tuple[Corpus, list[Example]]:
        """The corpus and all examples, unsplit."""
        path = _require_file(self.path, "a HotpotQA JSON list or JSONL file")
        passages: list[Passage] = []
        by_content: dict[tuple[str, str], str] = {}
        per_title: dict[str, int] = {}
        examples: list[Example] = []
        for where, rec in _read_records(path):
            qid = get_field(rec, "_id", where, optional=True) or get_field(rec, "id", where)
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
            examples.append(
                Example(
                    query=get_field(rec, "question", where),
                    answers=[get_field(rec, "answer", where)],
                    gold_passage_ids=gold,
                    candidate_ids=_dedupe(cands),
                    example_id=qid,
                    hops=max(1, len(gold)),
                    meta=meta,
                )
            )
        corpus = Corpus(passages, source=str(path))
        check_examples(examples, corpus, str(path))
        return corpus, examples

    def load(self) -> RAGData:
        """Read the file and split it by supporting-fact titles."""
        corpus, examples = self.read()
        return _split(examples, corpus, self.val_fraction, self.test_fraction, self.seed, self.max_examples)
