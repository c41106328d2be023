"""Answer and retrieval metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.functional.retrieval import retrieval_normalized_dcg

from joint_rag.training.metrics import (
    AnswerMetrics,
    RetrievalMetrics,
    exact_match,
    f1_score,
    normalize_answer,
)

# ----------------------------------------------------------------------------- answers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Cat!", "cat"),
        ("  An   apple, a day. ", "apple day"),
        ("theater of the absurd", "theater of absurd"),  # articles only as whole words
        ("A.B.C", "abc"),
        ("Tab\tand\nnewline", "tab and newline"),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_exact_match() -> None:
    assert exact_match("The Cat!", ["cat"]) == 1.0
    assert exact_match("The Cat!", "cat") == 1.0
    assert exact_match("cats", ["cat"]) == 0.0
    assert exact_match("dog", ["cat", "a dog."]) == 1.0  # max over answers
    with pytest.raises(ValueError, match="no gold answers"):
        exact_match("x", [])


def test_f1_score_hand_values() -> None:
    # pred [quick, brown, fox] vs gold [quick, fox, jumps]: 2 common, P = R = 2/3 -> F1 = 2/3
    assert f1_score("the quick brown fox", "quick fox jumps") == pytest.approx(2 / 3)
    # max over answers: vs "brown fox": P = 2/3, R = 1 -> F1 = 0.8; vs "dog": 0
    assert f1_score("the quick brown fox", ["dog", "brown fox"]) == pytest.approx(0.8)
    # repeated tokens are counted with multiplicity: [x, x, y] & [x, y, y] = {x, y} -> 2/3
    assert f1_score("x x y", "x y y") == pytest.approx(2 / 3)
    assert f1_score("cat", "dog") == 0.0
    # empty after normalisation (SQuAD v2 rule): 1 if both empty, else 0
    assert f1_score("", [""]) == 1.0
    assert f1_score("the", "a") == 1.0
    assert f1_score("cat", "") == 0.0


def test_answer_metrics_accumulates_and_resets() -> None:
    metric = AnswerMetrics()
    # em: 1, 0 ; f1: 1, max(vs "brown fox": 2 common, P=2/3, R=1 -> 0.8 ; vs "fox": 0.5) = 0.8
    metric.update(["The Cat!", "brown fox jumps"], [["cat"], ["the brown fox", "fox"]])
    out = metric.compute()
    assert out["em"].item() == pytest.approx(0.5)
    assert out["f1"].item() == pytest.approx(0.9)
    metric.update(["paris"], ["London"])  # em 0, f1 0
    out = metric.compute()
    assert out["em"].item() == pytest.approx(1 / 3)
    assert out["f1"].item() == pytest.approx((1 + 0.8 + 0) / 3)

    metric.reset()
    assert metric.count.item() == 0
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(metric.compute()["em"].item())  # no answers is not a score of 0

    batch = metric(["Paris"], [["paris", "Paris, France"]])  # forward: this batch's values
    assert batch["em"].item() == 1.0 and batch["f1"].item() == 1.0


def test_answer_metrics_errors() -> None:
    metric = AnswerMetrics()
    with pytest.raises(ValueError, match="2 predictions but 1 answers"):
        metric.update(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="list of strings"):
        metric.update("a", ["a"])


# ----------------------------------------------------------------------------- retrieval

LOG3, LOG5 = 1 / math.log2(3), 1 / math.log2(5)  # 0.63093, 0.43068

# q1: one gold at rank 3 ; q2: 2 of 3 gold at ranks 2 and 4 ; q3: gold at rank 1 ; q4: no gold
RANKED = [["a", "b", "c", "d", "e", "f"], ["x", "g1", "y", "g2"], ["g"], ["a", "b"]]
GOLD = [{"c"}, {"g1", "g2", "g3"}, ["g"], set()]
# nDCG@10 q1 = (1/log2 4) / 1 = 0.5
# nDCG@10 q2 = (1/log2 3 + 1/log2 5) / (1 + 1/log2 3 + 1/log2 4) = 1.06161 / 2.13093 = 0.498189
NDCG_Q2 = (LOG3 + LOG5) / (1 + LOG3 + 0.5)
EXPECTED = {
    "recall@1": (0 + 0 + 1) / 3,
    "recall@5": (1 + 2 / 3 + 1) / 3,  # 8/9
    "mrr@10": (1 / 3 + 1 / 2 + 1) / 3,  # 11/18
    "ndcg@10": (0.5 + NDCG_Q2 + 1) / 3,  # 0.666063
}


def _as_floats(out: dict[str, torch.Tensor]) -> dict[str, float]:
    return {name: value.item() for name, value in out.items()}


def _one(ranked: list, gold, **cutoffs) -> dict[str, float]:
    """The metric values of a single query."""
    metric = RetrievalMetrics(**cutoffs)
    metric.update([ranked], [gold])
    return _as_floats(metric.compute())


def test_single_query_values() -> None:
    q1 = _one(RANKED[0], GOLD[0], recall_ks=(1, 3), mrr_k=2)
    assert q1["recall@1"] == 0.0
    assert q1["recall@3"] == 1.0
    assert q1["mrr@2"] == 0.0  # first gold beyond the cut-off
    assert q1["ndcg@10"] == pytest.approx(0.5)
    q2 = _one(RANKED[1], GOLD[1])
    assert q2["recall@5"] == pytest.approx(2 / 3)
    assert q2["mrr@10"] == 0.5
    assert abs(NDCG_Q2 - 0.4981893) < 1e-7
    assert q2["ndcg@10"] == pytest.approx(NDCG_Q2)


def test_query_without_gold_is_skipped() -> None:
    metric = RetrievalMetrics(recall_ks=(1,))
    metric.update([["a"]], [set()])
    metric.update([["a"]], [{"a": 0, "b": -1}])  # grade <= 0 only: no gold passage either
    assert metric.count.item() == 0
    assert all(math.isnan(v) for v in _as_floats(metric.compute()).values())  # nothing counted: NaN
    metric.update([["a"], ["b"]], [set(), {"a"}])
    assert metric.count.item() == 1


def test_repeated_id_counts_once_and_keeps_its_position() -> None:
    assert _one(["g", "g", "h"], {"g"})["ndcg@10"] == 1.0  # a repeated id counts once
    # g g c with gold {g, c}: the repeat occupies rank 2, so c is at rank 3 (not 2)
    # DCG = 1 + 1/log2(4) = 1.5 ; IDCG = 1 + 1/log2(3) = 1.63093 -> nDCG = 0.919721
    out = _one(["g", "g", "c"], {"g", "c"}, recall_ks=(1, 2, 3), mrr_k=3, all_gold_ks=(2, 3))
    assert out == pytest.approx(
        {
            "recall@1": 0.5,
            "recall@2": 0.5,
            "recall@3": 1.0,
            "mrr@3": 1.0,
            "ndcg@10": 1.5 / (1 + LOG3),
            "all_gold@2": 0.0,
            "all_gold@3": 1.0,
        }
    )
    assert out["ndcg@10"] == pytest.approx(0.9197208, abs=1e-6)
    # a repeated non-gold id also keeps its position: g at rank 3
    assert _one(["h", "h", "g"], {"g"}, recall_ks=(2, 3)) == pytest.approx(
        {"recall@2": 0.0, "recall@3": 1.0, "mrr@10": 1 / 3, "ndcg@10": 0.5}
    )


def test_gold_missing_from_the_ranking() -> None:
    # a short ranking without the gold passage: the gold never enters the top k (padding)
    assert _one(["a"], {"z"}, all_gold_ks=(5,)) == {
        "recall@1": 0.0,
        "recall@5": 0.0,
        "mrr@10": 0.0,
        "ndcg@10": 0.0,
        "all_gold@5": 0.0,
    }
    # gold {a, z}, z not ranked: z counts in the recall denominator and in the ideal DCG
    out = _one(["a", "b"], {"a", "z"}, all_gold_ks=(1, 5))
    assert out == pytest.approx(
        {
            "recall@1": 0.5,
            "recall@5": 0.5,
            "mrr@10": 1.0,
            "ndcg@10": 1 / (1 + LOG3),  # DCG = 1 ; IDCG = 1 + 1/log2(3)
            "all_gold@1": 0.0,
            "all_gold@5": 0.0,
        }
    )
    # an empty ranking
    assert _one([], {"a"}, all_gold_ks=(1,)) == {
        "recall@1": 0.0,
        "recall@5": 0.0,
        "mrr@10": 0.0,
        "ndcg@10": 0.0,
        "all_gold@1": 0.0,
    }


def test_graded_ndcg_hand_and_torchmetrics() -> None:
    ranked = ["a", "b", "c"]
    grades = {"a": 1, "b": 0, "c": 3, "d": 2}
    out = _one(ranked, grades, recall_ks=(3,), ndcg_k=3)
    # DCG@3 = 1/log2(2) + 0/log2(3) + 3/log2(4) = 1 + 0 + 1.5 = 2.5
    # IDCG@3 = 3/log2(2) + 2/log2(3) + 1/log2(4) = 3 + 1.26186 + 0.5 = 4.76186 -> nDCG = 0.525005
    assert out["ndcg@3"] == pytest.approx(2.5 / (3 + 2 * LOG3 + 0.5))
    assert out["ndcg@3"] == pytest.approx(0.5250050, abs=1e-7)
    # torchmetrics' nDCG on the same ranking (d ranked last, outside the cut-off)
    preds = torch.tensor([4.0, 3.0, 2.0, 1.0])
    target = torch.tensor([1, 0, 3, 2])
    reference = retrieval_normalized_dcg(preds, target, top_k=3).item()
    assert out["ndcg@3"] == pytest.approx(reference, abs=1e-6)
    # grade <= 0 is not relevant: recall counts a, c, d only
    assert out["recall@3"] == pytest.approx(2 / 3)


def test_all_gold_hand_values() -> None:
    # two gold passages at ranks 1 and 3: one in the top 1 or 2 -> 0, both in the top 3 -> 1
    out = _one(["g1", "x", "g2"], {"g1", "g2"}, all_gold_ks=(1, 2, 3))
    assert [out["all_gold@1"], out["all_gold@2"], out["all_gold@3"]] == [0.0, 0.0, 1.0]
    assert out["recall@1"] == 0.5  # while recall@1 is partial credit
    # a single gold passage: all_gold@k == recall@k
    out = _one(RANKED[0], GOLD[0], recall_ks=(1, 3, 5), all_gold_ks=(1, 3, 5))
    for k in (1, 3, 5):
        assert out[f"all_gold@{k}"] == out[f"recall@{k}"]
    assert [out["all_gold@1"], out["all_gold@3"]] == [0.0, 1.0]
    # grade 0 is not gold, so it need not be in the top k
    assert _one(["a"], {"a": 2, "b": 0}, all_gold_ks=(1,))["all_gold@1"] == 1.0
    # mean over queries: q1 1 (c at rank 3), q2 0 (g3 not ranked), q3 1, q4 skipped -> 2/3
    metric = RetrievalMetrics(all_gold_ks=(5, 1))
    metric.update(RANKED, GOLD)
    out = _as_floats(metric.compute())
    assert list(out) == ["recall@1", "recall@5", "mrr@10", "ndcg@10", "all_gold@5", "all_gold@1"]
    assert out["all_gold@5"] == pytest.approx(2 / 3)
    assert out["all_gold@1"] == pytest.approx(1 / 3)  # only q3


def test_all_gold_on_random_cases_matches_the_definition() -> None:
    for seed in sorted(PINNED):
        ranked, gold = _random_cases(seed)
        metric = RetrievalMetrics(recall_ks=(1, 3), all_gold_ks=(1, 3, 10))
        metric.update(ranked, gold)
        out = _as_floats(metric.compute())
        relevant = [{pid for pid in g if not isinstance(g, dict) or g[pid] > 0} for g in gold]
        counted = [(r, g) for r, g in zip(ranked, relevant) if g]
        assert metric.count.item() == len(counted)
        for k in (1, 3, 10):
            expected = sum(g <= set(r[:k]) for r, g in counted) / len(counted)
            assert out[f"all_gold@{k}"] == pytest.approx(expected)
        singles = [(r, g) for r, g in counted if len(g) == 1]
        assert singles  # the single-gold queries alone: all_gold@k == recall@k
        single = RetrievalMetrics(recall_ks=(1, 3), all_gold_ks=(1, 3))
        single.update([r for r, _ in singles], [g for _, g in singles])
        out = _as_floats(single.compute())
        assert out["all_gold@1"] == out["recall@1"] and out["all_gold@3"] == out["recall@3"]


def test_retrieval_metrics_update_after_inference_mode() -> None:
    metric = RetrievalMetrics()
    with torch.inference_mode():  # as in a validate() run: the states become inference tensors
        metric.update(RANKED[:2], GOLD[:2])
    metric.update(RANKED[2:], GOLD[2:])
    assert _as_floats(metric.compute()) == pytest.approx(EXPECTED)


def test_retrieval_metrics_hand_values_and_merging() -> None:
    metric = RetrievalMetrics()
    metric.update(RANKED, GOLD)
    once = _as_floats(metric.compute())
    assert list(once) == ["recall@1", "recall@5", "mrr@10", "ndcg@10"]
    assert once == pytest.approx(EXPECTED)
    assert metric.count.item() == 3  # the query without gold is skipped

    metric.reset()
    assert metric.count.item() == 0
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(metric.compute()["recall@1"].item())  # no queries: NaN, not 0
    metric.update(RANKED[:1], GOLD[:1])
    metric.update(RANKED[1:3], GOLD[1:3])
    metric.update(RANKED[3:], GOLD[3:])
    assert _as_floats(metric.compute()) == pytest.approx(EXPECTED)

    metric.reset()
    batch = _as_floats(metric(RANKED[:1], GOLD[:1]))  # forward returns this batch's values
    assert batch == pytest.approx({"recall@1": 0.0, "recall@5": 1.0, "mrr@10": 1 / 3, "ndcg@10": 0.5})
    metric(RANKED[1:], GOLD[1:])
    assert _as_floats(metric.compute()) == pytest.approx(EXPECTED)


def test_retrieval_metrics_rows_tensor_and_custom_ks() -> None:
    metric = RetrievalMetrics(recall_ks=(1, 2), mrr_k=2, ndcg_k=3)
    rows = torch.tensor([[2, 0, 1], [5, 4, 3]])  # (B, k) index rows
    metric.update(rows, [{1}, {5, 4}])
    # q1: gold row 1 at rank 3 -> recall@1 0, recall@2 0, mrr@2 0, ndcg@3 = 0.5
    # q2: both gold at ranks 1-2 -> recall@1 1/2, recall@2 1, mrr@2 1, ndcg@3 1
    out = _as_floats(metric.compute())
    assert out == pytest.approx({"recall@1": 0.25, "recall@2": 0.5, "mrr@2": 0.5, "ndcg@3": 0.75})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"recall_ks": (0, 5)}, r"cut-offs must be ints >= 1, got recall_ks=\(0, 5\)"),
        ({"recall_ks": (1, 2.5)}, "cut-offs must be ints >= 1, got recall_ks"),
        ({"recall_ks": ()}, "recall_ks must be non-empty"),
        ({"recall_ks": 5}, "recall_ks must be a sequence of cut-offs"),
        ({"recall_ks": "15"}, "recall_ks must be a sequence of cut-offs"),
        ({"mrr_k": 0}, "cut-offs must be ints >= 1, got mrr_k=0"),
        ({"ndcg_k": 1.5}, "cut-offs must be ints >= 1, got ndcg_k=1.5"),
        ({"ndcg_k": None}, "cut-offs must be ints >= 1, got ndcg_k=None"),
        ({"all_gold_ks": (3, -1)}, "cut-offs must be ints >= 1, got all_gold_ks"),
        ({"all_gold_ks": ("3",)}, "cut-offs must be ints >= 1, got all_gold_ks"),
        ({"all_gold_ks": 3}, "all_gold_ks must be a sequence of cut-offs"),
    ],
)
def test_retrieval_metrics_argument_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RetrievalMetrics(**kwargs)


def test_retrieval_metrics_all_gold_ks_may_be_empty() -> None:
    metric = RetrievalMetrics(recall_ks=[2], all_gold_ks=[])
    metric.update([["a", "b"]], [{"b"}])
    assert _as_floats(metric.compute()) == pytest.approx({"recall@2": 1.0, "mrr@10": 0.5, "ndcg@10": LOG3})


def test_retrieval_metrics_errors() -> None:
    metric = RetrievalMetrics()
    with pytest.raises(ValueError, match="2 rankings but 1 gold"):
        metric.update([["a"], ["b"]], [{"a"}])
    with pytest.raises(ValueError, match=r"\(B, k\)"):
        metric.update(torch.tensor([1, 2]), [{1}, {2}])
    with pytest.raises(TypeError, match="string"):
        metric.update([["a"]], ["a"])


# ----------------------------------------------------------------------------- pinned values
def _random_cases(seed: int) -> tuple[list[list[str]], list]:
    """40 queries: rankings of 0-14 ids (repeats possible), gold sets of 0-4 ids, 40% graded
    (grade 0 = not relevant)."""
    import random

    rng = random.Random(seed)
    ranked, gold = [], []
    for _ in range(40):
        ranked.append([f"p{rng.randrange(20)}" for _ in range(rng.randint(0, 14))])
        g = rng.sample(range(20), rng.randint(0, 4))
        if rng.random() < 0.4:
            gold.append({f"p{i}": rng.choice([0, 1, 2, 3]) for i in g})
        else:
            gold.append([f"p{i}" for i in g])
    return ranked, gold


#: values of the hand-written implementation (commit 43c76c4) on ``_random_cases(seed)``
PINNED = {
    0: {"recall@1": 0.065476194024086, "recall@3": 0.125, "recall@5": 0.2291666716337204,
        "recall@10": 0.3392857015132904, "mrr@10": 0.24771825969219208, "ndcg@5": 0.16729652881622314},
    1: {"recall@1": 0.0517241396009922, "recall@3": 0.21264368295669556, "recall@5": 0.2385057508945465,
        "recall@10": 0.2844827473163605, "mrr@10": 0.2995210587978363, "ndcg@5": 0.20289230346679688},
    2: {"recall@1": 0.0364583320915699, "recall@3": 0.1328125, "recall@5": 0.1979166716337204,
        "recall@10": 0.2552083432674408, "mrr@10": 0.2575520873069763, "ndcg@5": 0.1723211705684662},
    3: {"recall@1": 0.008064515888690948, "recall@3": 0.11559139937162399, "recall@5": 0.12365591526031494,
        "recall@10": 0.25, "mrr@10": 0.16221198439598083, "ndcg@5": 0.0983852967619896},
}  # fmt: skip


@pytest.mark.parametrize("seed", sorted(PINNED))
def test_retrieval_metrics_keep_the_pinned_values(seed: int) -> None:
    ranked, gold = _random_cases(seed)
    m = RetrievalMetrics(recall_ks=(1, 3, 5, 10), mrr_k=10, ndcg_k=5)
    m.update(ranked[:20], gold[:20])
    m.update(ranked[20:], gold[20:])
    got = {k: float(v) for k, v in m.compute().items()}
    assert got == pytest.approx(PINNED[seed], abs=1e-6)
