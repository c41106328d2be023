"""Readers for public QA/retrieval formats into `RAGData` (a `Corpus` plus split `Example`s).

Each reader is a small config class (choose it from YAML with `class_path`/`init_args`) whose
`load()` returns `RAGData`. Every problem in the input raises one `DataError` naming the file
and the line, record or field; malformed rows are never skipped silently.

- `SquadSource`: SQuAD v1.1/v2.0 JSON (also XQuAD); a passage per paragraph, group = article
  (`squad.py`).
- `BeirSource`: a BEIR folder (corpus.jsonl, queries.jsonl, qrels/{split}.tsv) (`beir.py`).
- `HotpotQASource`: HotpotQA, original list layout or Hugging Face columnar layout (JSON/JSONL)
  (`hotpotqa.py`).

The split options they share live in `file_sources.py`. This module keeps the names configs
and exports use (`class_path: joint_rag.data.formats.BeirSource`).
"""

from joint_rag.data.beir import BeirSource, read_qrels_grades
from joint_rag.data.hotpotqa import HotpotQASource
from joint_rag.data.squad import SquadSource
from joint_rag.data.types import DataError

__all__ = ["BeirSource", "DataError", "HotpotQASource", "SquadSource", "read_qrels_grades"]
