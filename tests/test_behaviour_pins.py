"""Behaviour pinned before the architecture refactor (issue 12): the smoke fit's validation
metrics and an export's top-5 passages, scores and greedy answers, with a fixed seed. The
values were measured on the pre-refactor code (commit 43c76c4), whose index backend was faiss.

With ``index_backend: faiss`` they hold to 1e-6. The new default backend (``exact``: the kernel
dispatch) breaks near-ties between the tiny random model's training candidates (their scores
agree to 1e-4) in another order, so the two training steps differ slightly: the metrics, the
top-5 ids and the answers still hold, the scores move by at most 1.6e-6 (measured)."""

from __future__ import annotations

import pytest
from smoke_fit import fit_smoke

#: ``trainer.validate`` after two steps of experiments/smoke.yaml (12 entities, seed 0)
PINNED_METRICS = {
    "val/recall@1": 0.0,
    "val/recall@5": 0.375,
    "val/mrr@10": 0.16249999403953552,
    "val/ndcg@10": 0.34876924753189087,
    "val/em": 0.0,
    "val/f1": 0.0,
}
PINNED_QUERIES = [
    "Which colour does Gosol Nasegi like best?",
    "Which instrument does Gosol Nasegi play?",
    "What animal does Gosol Nasegi have as a pet?",
]
#: ``JointRAG.retrieve(PINNED_QUERIES, k=5)`` on the export of that module
PINNED_TOP5 = [
    [
        ("person-2", 0.9185867309570312),
        ("person-4", 0.9185199737548828),
        ("person-3", 0.9184106588363647),
        ("person-1", 0.9184011220932007),
        ("person-5", 0.9183894991874695),
    ],
    [
        ("person-2", 0.9185789823532104),
        ("person-4", 0.9185125827789307),
        ("person-3", 0.9184029698371887),
        ("person-1", 0.9183933138847351),
        ("person-5", 0.9183820486068726),
    ],
    [
        ("person-2", 0.9185969829559326),
        ("person-4", 0.9185313582420349),
        ("person-3", 0.9184213280677795),
        ("person-1", 0.9184116721153259),
        ("person-5", 0.9184012413024902),
    ],
]
PINNED_ANSWERS = ["::::", "::::", "::::"]


TOLERANCE = {"faiss": 1e-6, "exact": 5e-6}


@pytest.fixture(scope="module", params=["faiss", "exact"])
def smoke_run(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"pins-{request.param}")
    cli, _ = fit_smoke(root / "run", f"--model.index_backend={request.param}")
    return cli, root, request.param


def test_smoke_fit_validation_metrics_are_pinned(smoke_run):
    cli, _, _ = smoke_run
    results = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    got = {k: float(v) for k, v in results.items() if k in PINNED_METRICS}
    assert got.keys() == PINNED_METRICS.keys()
    for key, value in PINNED_METRICS.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


def test_export_top5_scores_and_answers_are_pinned(smoke_run):
    from joint_rag import JointRAG
    from joint_rag.export import export_module

    cli, root, backend = smoke_run
    assert [ex.query for ex in cli.datamodule.data.val[:3]] == PINNED_QUERIES
    out = export_module(cli.model, root / "export", cli.datamodule.corpus)
    rag = JointRAG.from_pretrained(out)
    top5 = rag.retrieve(PINNED_QUERIES, k=5)
    for got, want in zip(top5, PINNED_TOP5):
        assert [pid for pid, _ in got] == [pid for pid, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=TOLERANCE[backend])
    assert [r["answer"] for r in rag.answer(PINNED_QUERIES)] == PINNED_ANSWERS
