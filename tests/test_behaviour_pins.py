"""Behaviour pinned before the architecture refactor (issue 12): the smoke fit's validation
metrics and an export's top-5 passages, scores and greedy answers, with a fixed seed. The
values were measured on the pre-refactor code (commit 43c76c4), whose index backend was faiss.

Re-pinned in issue 14 (exact resume): the training batches now come from torchdata's
``StatefulDataLoader``, which draws its shuffle seed when the loader is built instead of at
the epoch's start, so the two training steps see other examples. The values were measured on
that code, per backend: the ``exact`` backend (the kernel dispatch) breaks near-ties between the
tiny random model's training candidates (scores agree to 1e-4) in another order than faiss, so
the two backends train on other candidates and are pinned apart. Both hold to 1e-6.

The exact backend's near-ties also break by the CPU's vector ISA (MKL rounds the scores
differently with AVX-512 than with AVX2), so its training path differs between an AVX2 machine
(the 2-core AMD EPYC that pinned it first) and an AVX-512 one (the 2-core Xeon of session 13,
with AMX), and it is pinned per ``torch.backends.cpu.get_cpu_capability()``. On an ISA with no
pin the exact-backend tests skip and say so; the faiss backend's pins hold on both machines."""

from __future__ import annotations

import pytest
from smoke_fit import fit_smoke

#: ``trainer.validate`` after two steps of experiments/smoke.yaml (12 entities, seed 0), per backend
PINNED_METRICS = {
    "faiss": {
        "val/recall@1": 0.0,
        "val/recall@5": 0.625,
        "val/mrr@10": 0.20000000298023224,
        "val/ndcg@10": 0.3028022050857544,
        "val/em": 0.0,
        "val/f1": 0.0,
    },
    "exact@AVX2": {
        "val/recall@1": 0.0,
        "val/recall@5": 0.375,
        "val/mrr@10": 0.1473214328289032,
        "val/ndcg@10": 0.2865038216114044,
        "val/em": 0.0,
        "val/f1": 0.0,
    },
    "exact@AVX512": {
        "val/recall@1": 0.0,
        "val/recall@5": 0.75,
        "val/mrr@10": 0.21875,
        "val/ndcg@10": 0.34900376200675964,
        "val/em": 0.0,
        "val/f1": 0.0,
    },
}
PINNED_QUERIES = [
    "Which colour does Gosol Nasegi like best?",
    "Which instrument does Gosol Nasegi play?",
    "What animal does Gosol Nasegi have as a pet?",
]
#: ``JointRAG.retrieve(PINNED_QUERIES, k=5)`` on the export of that module
PINNED_TOP5 = {
    "faiss": [
        [
            ("org-0", 0.8924558758735657),
            ("person-7", 0.8923074007034302),
            ("person-10", 0.8922736644744873),
            ("org-1", 0.8922564387321472),
            ("person-1", 0.8921860456466675),
        ],
        [
            ("org-0", 0.8923741579055786),
            ("person-7", 0.8922256827354431),
            ("person-10", 0.8921918869018555),
            ("org-1", 0.8921747207641602),
            ("person-1", 0.8921040892601013),
        ],
        [
            ("org-0", 0.8927258849143982),
            ("person-7", 0.892578125),
            ("person-10", 0.8925437927246094),
            ("org-1", 0.8925272226333618),
            ("person-1", 0.8924564123153687),
        ],
    ],
    "exact@AVX2": [
        [
            ("person-11", 0.9225233197212219),
            ("person-10", 0.9224534630775452),
            ("person-9", 0.922410249710083),
            ("person-1", 0.9224005341529846),
            ("person-2", 0.9223718643188477),
        ],
        [
            ("person-11", 0.9225549697875977),
            ("person-10", 0.9224848747253418),
            ("person-9", 0.9224418997764587),
            ("person-1", 0.9224317669868469),
            ("person-2", 0.9224035739898682),
        ],
        [
            ("person-11", 0.9226106405258179),
            ("person-10", 0.9225414395332336),
            ("person-9", 0.9224978089332581),
            ("person-1", 0.9224883913993835),
            ("person-2", 0.922459602355957),
        ],
    ],
    "exact@AVX512": [
        [
            ("person-2", 0.9217228293418884),
            ("person-10", 0.921623170375824),
            ("person-1", 0.9216172695159912),
            ("person-6", 0.9216097593307495),
            ("person-5", 0.9215999245643616),
        ],
        [
            ("person-2", 0.9217177033424377),
            ("person-10", 0.9216180443763733),
            ("person-1", 0.9216119050979614),
            ("person-6", 0.9216045141220093),
            ("person-5", 0.921594500541687),
        ],
        [
            ("person-2", 0.9217802286148071),
            ("person-10", 0.9216804504394531),
            ("person-1", 0.9216744303703308),
            ("person-6", 0.9216672778129578),
            ("person-5", 0.9216572642326355),
        ],
    ],
}
PINNED_ANSWERS = ["::::", "::::", "::::"]


TOLERANCE = 1e-6


def pin_key(backend: str) -> str:
    """The pins' key: the faiss backend everywhere, the exact one per CPU ISA (skip without a pin)."""
    import torch

    if backend == "faiss":
        return backend
    key = f"exact@{torch.backends.cpu.get_cpu_capability()}"
    if key not in PINNED_METRICS:
        pytest.skip(f"no exact-backend pin for this CPU's ISA ({key}); pinned: AVX2, AVX512")
    return key


@pytest.fixture(scope="module", params=["faiss", "exact"])
def smoke_run(request, tmp_path_factory):
    key = pin_key(request.param)
    root = tmp_path_factory.mktemp(f"pins-{request.param}")
    cli, _ = fit_smoke(root / "run", f"--model.index_backend={request.param}")
    return cli, root, key


def test_smoke_fit_validation_metrics_are_pinned(smoke_run):
    cli, _, backend = smoke_run
    results = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    got = {k: float(v) for k, v in results.items() if k in PINNED_METRICS[backend]}
    assert got.keys() == PINNED_METRICS[backend].keys()
    for key, value in PINNED_METRICS[backend].items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


def test_export_top5_scores_and_answers_are_pinned(smoke_run):
    from joint_rag import JointRAG
    from joint_rag.export import export_module

    cli, root, backend = smoke_run
    assert [ex.query for ex in cli.datamodule.data.val[:3]] == PINNED_QUERIES
    out = export_module(cli.model, root / "export", cli.datamodule.corpus)
    rag = JointRAG.from_pretrained(out)
    top5 = rag.retrieve(PINNED_QUERIES, k=5)
    for got, want in zip(top5, PINNED_TOP5[backend]):
        assert [pid for pid, _ in got] == [pid for pid, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=TOLERANCE)
    assert [r["answer"] for r in rag.answer(PINNED_QUERIES)] == PINNED_ANSWERS
