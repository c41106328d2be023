"""LIMIT-small through the ordinary BEIR reader (ids with spaces, empty titles), and off-the-shelf
MiniLM reproducing the reference recall@2/10/20 measured with the plain transformers encoder."""

from __future__ import annotations

from pathlib import Path

import pytest

from joint_rag.data.formats import BeirSource

REPO = Path(__file__).resolve().parents[2]
LIMIT = REPO.parent / "shared" / "data" / "limit-small"
needs_limit = pytest.mark.skipif(not LIMIT.is_dir(), reason=f"LIMIT-small ({LIMIT}) is absent")


@needs_limit
def test_limit_small_reads_as_beir():
    data = BeirSource(LIMIT, evaluate_all=True).load()
    assert len(data.corpus) == 46 and len(data.val) == 1000 and data.train == []
    assert all(len(ex.gold_passage_ids) == 2 for ex in data.val)
    assert " " in data.corpus.ids[0] and data.corpus[0].title == ""


@needs_limit
@pytest.mark.slow  # about 35 s: MiniLM over 46 documents and 1000 queries
def test_off_the_shelf_minilm_reproduces_the_reference_recall(tmp_path):
    from joint_rag.config import make_cli

    configs = [
        REPO / "experiments" / "quickstart.yaml",
        REPO / "experiments" / "ablations" / "base" / "limit.yaml",
    ]
    flags = [f"--trainer.default_root_dir={tmp_path}"]
    cli = make_cli([arg for c in configs for arg in ("-c", str(c))] + flags, run=False)
    metrics = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    # reference (plain transformers encoder): 0.162 / 0.481 / 0.695
    assert metrics["val/recall@2"] == pytest.approx(0.162, abs=0.001)
    assert metrics["val/recall@10"] == pytest.approx(0.481, abs=0.001)
    assert metrics["val/recall@20"] == pytest.approx(0.695, abs=0.001)
