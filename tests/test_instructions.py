"""Instruction following: p-MRR (FollowIR / MTEB definition), instruction pairs, `jrag follow`."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
from followir_fixture import write_followir
from smoke_fit import fit_smoke  # (tests/ is on sys.path under pytest)

from joint_rag.cli import main
from joint_rag.data.formats import DataError
from joint_rag.data.knowledge_base import build_knowledge_base
from joint_rag.export import export_checkpoint
from joint_rag.instructions import (
    InstructionPair,
    evaluate_instruction_following,
    judged_ndcg,
    p_mrr_change,
    query_p_mrr,
    read_instruction_pairs,
    synthetic_instruction_pairs,
)


def test_p_mrr_change_follows_the_followir_definition():
    # MTEB's own test case: the changed passage goes from rank 4 to rank 1 -> -0.75
    assert p_mrr_change(4, 1) == pytest.approx(-0.75)
    assert p_mrr_change(1, 4) == pytest.approx(0.75)  # demoted: positive
    assert p_mrr_change(3, 3) == 0.0
    assert p_mrr_change(2, 3) == pytest.approx(1 - 2 / 3)
    assert p_mrr_change(3, 2) == pytest.approx(2 / 3 - 1)
    with pytest.raises(ValueError, match="1-based"):
        p_mrr_change(0, 2)


def test_query_p_mrr_averages_changed_passages_and_ranks_missing_ones_last():
    og = ["a", "b", "c", "d"]
    new = ["c", "d", "a", "b"]
    # a: 1 -> 3 (+2/3), b: 2 -> 4 (+1/2)
    assert query_p_mrr(og, new, ["a", "b"]) == pytest.approx((2 / 3 + 1 / 2) / 2)
    # "a" missing from the new ranking: ranked after its last entry (rank 4 here)
    assert query_p_mrr(og, ["b", "c", "d"], ["a"]) == pytest.approx(1 - 1 / 4)
    assert math.isnan(query_p_mrr(og, new, []))


def _pairs() -> list[InstructionPair]:
    return [
        InstructionPair("q1", "who?", "all", "only x", ("p1", "p2")),
        InstructionPair("q2", "where?", "all", "only y", ("p3",)),
    ]


CORPUS = [f"p{i}" for i in range(1, 7)]


def test_evaluation_rewards_demoting_the_changed_passages():
    pairs = _pairs()

    def follows(queries, instructions):  # changed passages go to the end under the new instruction
        out = []
        for pair, ins in zip(pairs, instructions):
            if ins == pair.instruction_new:
                out.append([p for p in CORPUS if p not in pair.changed] + list(pair.changed))
            else:
                out.append(list(CORPUS))
        return out

    def ignores(queries, instructions):
        return [list(CORPUS) for _ in queries]

    def inverts(queries, instructions):  # pulls the changed passages to the top instead
        out = []
        for pair, ins in zip(pairs, instructions):
            rest = [p for p in reversed(CORPUS) if p not in pair.changed]
            out.append(
                list(pair.changed) + rest if ins == pair.instruction_new else rest + list(pair.changed)
            )
        return out

    good = evaluate_instruction_following(follows, pairs)
    assert good["p_mrr"] > 0.5 and good["moved_down"] == 3 and good["moved_up"] == 0
    assert good["queries"] == 2 and set(good["per_query"]) == {"q1", "q2"}
    flat = evaluate_instruction_following(ignores, pairs)
    assert flat["p_mrr"] == 0.0 and flat["unchanged"] == 3
    bad = evaluate_instruction_following(inverts, pairs)
    assert bad["p_mrr"] < -0.5 and bad["moved_up"] == 3


def test_read_instruction_pairs_and_its_errors(tmp_path):
    good = tmp_path / "pairs.jsonl"
    rows = [
        {
            "query": "who?",
            "instruction_og": "a",
            "instruction_new": "b",
            "changed": ["p1", 7],
            "query_id": "x",
        },
        {"query": "where?", "instruction_og": "a", "instruction_new": "b", "changed": ["p2"]},
    ]
    good.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pairs = read_instruction_pairs(good)
    assert pairs[0] == InstructionPair("x", "who?", "a", "b", ("p1", "7"))
    assert pairs[1].query_id == "q2"

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({**rows[1], "instruction_new": None}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: missing field 'instruction_new'"):
        read_instruction_pairs(bad)
    bad.write_text(json.dumps({**rows[1], "changed": []}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'changed' must be a non-empty list"):
        read_instruction_pairs(bad)
    with pytest.raises(DataError, match="no such file"):
        read_instruction_pairs(tmp_path / "missing.jsonl")


def test_synthetic_pairs_are_consistent_with_the_knowledge_base():
    kb = build_knowledge_base(80, seed=3)
    pairs = synthetic_instruction_pairs(kb)
    assert len(pairs) >= 5
    people = {p.entity_id: p for p in kb.people}
    for pair in pairs:
        town = pair.query.removeprefix("Who was born in ").removesuffix("?")
        pet = next(p for p in kb.people if p.hometown == town and p.pet in pair.instruction_new).pet
        assert town in pair.instruction_og and town in pair.instruction_new
        born_there = {pid for pid, p in people.items() if p.hometown == town}
        assert set(pair.changed) == {pid for pid in born_there if people[pid].pet != pet}
        assert set(pair.changed) < born_there  # someone keeps the chosen pet
    assert len(synthetic_instruction_pairs(kb, n=3, seed=1)) == 3
    with pytest.raises(ValueError, match="do not all state the pet"):
        synthetic_instruction_pairs(build_knowledge_base(40, seed=0, passage_facts=["work"]))


def test_jrag_follow_on_an_export(tmp_path, capsys):
    _, ckpt = fit_smoke(tmp_path / "run")
    export = export_checkpoint(ckpt, tmp_path / "export")
    capsys.readouterr()  # the fit's own output ("run folder: ...")
    out = tmp_path / "follow.json"
    assert main(["follow", "--model", str(export), "--synthetic", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert -1 < result["p_mrr"] < 1 and result["queries"] >= 1
    assert result["moved_down"] + result["moved_up"] + result["unchanged"] == result["changed_passages"]
    assert "per_query" not in json.loads(capsys.readouterr().out)
    assert 0 <= result["ndcg@10_og"] <= 1 and 0 <= result["ndcg@10_new"] <= 1  # synthetic pairs are judged

    # a FollowIR folder brings its own corpus; per-query lines; undefined figures are null
    folder = write_followir(tmp_path / "followir")
    per_query = tmp_path / "per_query.jsonl"
    assert (
        main(["follow", "--model", str(export), "--followir", str(folder), "--per-query", str(per_query)])
        == 0
    )
    shown = json.loads(capsys.readouterr().out)
    assert shown["queries"] == 1 and shown["ndcg_queries_og"] == 2 and shown["pairs"].endswith("(test)")
    lo, hi = shown["ci95"]["ndcg@10_og"]
    assert (
        lo <= shown["ndcg@10_og"] <= hi and shown["ci95"]["p_mrr"][0] == shown["ci95"]["p_mrr"][1]
    )  # 1 query
    lines = [json.loads(line) for line in per_query.read_text().splitlines()]
    assert [r["query_id"] for r in lines] == ["q1", "q2"] and lines[1]["p_mrr"] is None
    assert lines[0]["changed"] == 2 and 0 <= lines[0]["ndcg@10_new"] <= 1

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        json.dumps({"query": "q", "instruction_og": "a", "instruction_new": "b", "changed": ["nope"]})
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["follow", "--model", str(export), "--pairs", str(pairs)])
    assert exit_info.value.code == 2
    assert "not in the export's corpus, e.g. 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the same pairs over the FollowIR folder's corpus
        main(["follow", "--model", str(export), "--pairs", str(pairs), "--corpus", str(folder)])
    assert "not in the corpus of " in capsys.readouterr().err
    (folder / "queries.jsonl").write_text("{broken\n")
    with pytest.raises(SystemExit):
        main(["follow", "--model", str(export), "--followir", str(folder)])
    assert "queries.jsonl:1: malformed JSON line" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["follow", "--model", str(tmp_path / "none"), "--synthetic"])
    assert "no such folder" in capsys.readouterr().err


def test_follow_refuses_a_non_synthetic_export_for_synthetic_pairs(tmp_path, capsys):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "config.yaml").write_text(
        "data:\n  source:\n    class_path: joint_rag.data.formats.SquadSource\n"
    )
    with pytest.raises(SystemExit):
        main(["follow", "--model", str(folder), "--synthetic"])
    assert "not the built-in SyntheticSource; use --pairs" in capsys.readouterr().err


def test_synthetic_source_holds_out_towns_for_instruction_pairs():
    from joint_rag.data.synthetic import SyntheticSource

    data = SyntheticSource(
        num_entities=200, seed=1, instruction_eval_towns=0.3, instruction_examples=40
    ).load()
    kb = SyntheticSource(num_entities=200, seed=1).build()
    people = {p.entity_id: p for p in kb.people}
    eval_towns = {
        pair.query.removeprefix("Who was born in ").removesuffix("?") for pair in data.instruction_pairs
    }
    examples = [ex for ex in data.train if ex.instruction]
    assert data.instruction_pairs and len(examples) == 40
    for ex in examples:
        town = ex.query.removeprefix("Who was born in ").removesuffix("?")
        assert town not in eval_towns, "instruction examples come from the other towns"
        pets = {people[g].pet for g in ex.gold_passage_ids}
        assert len(pets) == 1 and pets.pop() in ex.instruction
        assert all(people[g].hometown == town for g in ex.gold_passage_ids)
        born_there = [p for p in kb.people if p.hometown == town]
        assert len(ex.gold_passage_ids) < len(born_there), "someone born there is a hard negative"
    plain = SyntheticSource(num_entities=200, seed=1).load()
    assert not plain.instruction_pairs and not any(ex.instruction for ex in plain.train)
    with pytest.raises(ValueError, match="instruction_eval_towns"):
        SyntheticSource(instruction_eval_towns=1.0)


def test_validation_logs_p_mrr_with_instruction_pairs(tmp_path):
    from joint_rag.config import make_cli

    cli = make_cli(
        [
            "-c",
            str(Path(__file__).resolve().parents[1] / "experiments" / "smoke.yaml"),
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_steps=2",
            "--trainer.limit_val_batches=1",
            "--data.source.init_args.instruction_eval_towns=0.5",
            "--data.source.init_args.instruction_examples=4",
        ],
        run=False,
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    metrics = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    assert -1.0 < metrics["val/p_mrr"] < 1.0
    direct = cli.model.system.instruction_following(cli.datamodule.data.instruction_pairs)
    assert direct["p_mrr"] == pytest.approx(metrics["val/p_mrr"], abs=1e-6)
    assert direct["changed_passages"] > 0
    for side in ("og", "new"):  # the synthetic pairs are judged: nDCG@10 under each instruction
        assert metrics[f"val/instruction_ndcg@10_{side}"] == pytest.approx(
            direct[f"ndcg@10_{side}"], abs=1e-6
        )


def test_judged_ndcg_follows_trec_eval():
    grades = {"a": 2.0, "b": 1.0, "z": 0.0}
    assert judged_ndcg(["a", "b", "c"], grades) == pytest.approx(1.0)
    # b first, a second: (1 + 2/log2 3) / (2 + 1/log2 3)
    expected = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert judged_ndcg(["b", "a"], grades) == pytest.approx(expected)
    # the ideal ranking counts judged passages the ranking never returned
    assert judged_ndcg(["a"], grades) == pytest.approx(2 / (2 + 1 / math.log2(3)))
    assert judged_ndcg(["c", "a"], grades, k=1) == 0.0
    assert math.isnan(judged_ndcg(["a"], {"a": 0.0}))


def test_evaluation_reports_ndcg_on_each_side_query_rewrites_and_candidates():
    pairs = [
        InstructionPair(
            "q1",
            "who plays?",
            "",
            "",
            ("p1",),
            query_new="who plays in Porto?",
            relevant_og={"p1": 1.0, "p2": 1.0},
            relevant_new={"p2": 1.0},
        ),
        InstructionPair("q2", "where?", "all", "only y", ("p3",), candidates=("p3", "p4", "p6")),
    ]
    seen = []

    def rank(queries, instructions):
        seen.append((queries, instructions))
        if queries[0] == "who plays in Porto?":  # the changed side
            return [["p2", "p3", "p4", "p5", "p6", "p1"], ["p4", "p5", "p6", "p1", "p2", "p3"]]
        return [["p1", "p2", "p3", "p4", "p5", "p6"], ["p3", "p1", "p2", "p4", "p5", "p6"]]

    result = evaluate_instruction_following(rank, pairs)
    assert seen == [
        (["who plays?", "where?"], [None, "all"]),
        (["who plays in Porto?", "where?"], [None, "only y"]),
    ]
    assert result["ndcg@10_og"] == pytest.approx(1.0) and result["ndcg@10_new"] == pytest.approx(1.0)
    assert (result["ndcg_queries_og"], result["ndcg_queries_new"]) == (1, 1)
    q1, q2 = result["records"]
    assert q1["p_mrr"] == pytest.approx(1 - 1 / 6) and q1["moved_down"] == 1
    # q2 ranks only its candidates: p3 goes from 1st to 3rd of (p3, p4, p6)
    assert q2["p_mrr"] == pytest.approx(1 - 1 / 3) and math.isnan(q2["ndcg@10_og"])


def test_pairs_of_two_queries_and_judgements_from_jsonl(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [
        {
            "query_og": "who plays?",
            "query_new": "who plays in Porto?",
            "relevant_og": ["p1", "p2"],
            "relevant_new": ["p2"],
        },
        {
            "query": "q",
            "instruction_og": "a",
            "instruction_changed": "b",
            "relevant_og": {"p1": 2, "p3": 1},
            "relevant_new": {"p1": 0, "p3": 1},
            "candidates": ["p1", "p3"],
            "query_id": "graded",
        },
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, second = read_instruction_pairs(path)
    assert (first.query, first.query_new, first.instruction_og, first.instruction_new) == (
        "who plays?",
        "who plays in Porto?",
        "",
        "",
    )
    assert first.changed == ("p1",) and first.relevant_new == {"p2": 1.0}
    assert second.changed == ("p1",) and second.relevant_og == {"p1": 2.0, "p3": 1.0}
    assert second.instruction_new == "b" and second.candidates == ("p1", "p3")
    bad = [
        (
            {"query": "q", "instruction_og": "a", "instruction_new": "b", "relevant_og": ["p1"]},
            "give both 'relevant_og' and 'relevant_new'",
        ),
        (
            {
                "query": "q",
                "instruction_og": "a",
                "instruction_new": "b",
                "relevant_og": ["p1"],
                "relevant_new": ["p1"],
            },
            "field 'changed' must be a non-empty list",
        ),
        (
            {
                "query": "q",
                "instruction_og": "a",
                "instruction_new": "b",
                "changed": ["p9"],
                "relevant_og": ["p1"],
                "relevant_new": [],
            },
            "changed passage 'p9' is not relevant in 'relevant_og'",
        ),
        (
            {
                "query": "q",
                "instruction_og": "a",
                "instruction_new": "b",
                "changed": ["p1"],
                "candidates": ["p2"],
            },
            "changed passage 'p1' is not among 'candidates'",
        ),
        (
            {
                "query": "q",
                "instruction_og": "a",
                "instruction_new": "b",
                "relevant_og": {"p1": "high"},
                "relevant_new": {},
            },
            "field 'relevant_og': the grade of 'p1' is not a number",
        ),
        ({"query": "q", "instruction_og": "a", "changed": ["p1"]}, "missing field 'instruction_new'"),
    ]
    for rec, pattern in bad:
        path.write_text(json.dumps(rec) + "\n")
        with pytest.raises(
            DataError, match=r"pairs\.jsonl:1: " + pattern.replace("(", r"\(").replace(")", r"\)")
        ):
            read_instruction_pairs(path)
    path.write_text("".join(json.dumps({**rows[1], "query_id": "same"}) + "\n" for _ in range(2)))
    with pytest.raises(DataError, match=r"pairs\.jsonl:2: duplicate query_id 'same' \(first on line 1\)"):
        read_instruction_pairs(path)


def test_instruction_families_filter_the_stated_fact():
    from joint_rag.data.synthetic_instructions import (
        FAMILIES,
        town_instruction_examples,
        town_instruction_pairs,
    )

    kb = build_knowledge_base(120, seed=1)
    people = {p.entity_id: p for p in kb.people}
    towns = sorted({p.hometown for p in kb.people})
    pairs = town_instruction_pairs(kb, towns, __import__("random").Random(0), list(FAMILIES))
    assert {p.family for p in pairs} == set(FAMILIES)
    orgs = {o.entity_id: o.name for o in kb.organisations}
    for pair in pairs:
        kept = {pid for pid, g in pair.relevant_new.items() if g > 0}
        assert kept and set(pair.changed) and kept | set(pair.changed) == set(pair.relevant_og)
        text = pair.instruction_new
        for pid in pair.relevant_og:
            p = people[pid]
            holds = {
                "pet": f" {p.pet} as a pet" in text,
                "employer": orgs[p.employer] in text,
                "instrument": text.endswith(f"plays the {p.instrument} is relevant."),
                "profession": f"works as {'an' if p.profession[0] in 'aeiou' else 'a'} {p.profession} "
                in text,
                "birth_years": f"between {p.birth_year // 10 * 10} and" in text,
                "not_instrument": f"does not play the {p.instrument} " not in text,
            }[pair.family]
            assert holds == (pid in kept), (pair.query_id, pid)
    examples = town_instruction_examples(kb, towns, ["birth_years", "not_instrument"])
    assert {ex.meta["family"] for ex in examples} == {"birth_years", "not_instrument"}
    assert len({ex.example_id for ex in examples}) == len(examples)
    with pytest.raises(ValueError, match="unknown instruction families"):
        town_instruction_pairs(kb, towns, __import__("random").Random(0), ["colour"])
    with pytest.raises(ValueError, match="instruction family 'employer' needs it"):
        town_instruction_examples(
            build_knowledge_base(40, seed=0, passage_facts=["pet"]), towns, ["employer"]
        )


def test_exposures_fix_how_often_instruction_examples_are_seen():
    from joint_rag.data.synthetic import SyntheticSource

    def source(n, exposures, **kw):
        return SyntheticSource(
            num_entities=300, seed=0, instruction_eval_towns=0.3, instruction_examples=n,
            instruction_exposures=exposures, instruction_families=["pet", "employer"],
            instruction_eval_families=["pet", "birth_years"], **kw,
        ).load()  # fmt: skip

    plain = SyntheticSource(num_entities=300, seed=0).load()
    for n in (1, 16, 64):
        data = source(n, 128)
        added = data.train[len(plain.train) :]
        assert len(added) == 128 and len({ex.example_id for ex in added}) == n
        counts = __import__("collections").Counter(ex.example_id for ex in added)
        assert max(counts.values()) - min(counts.values()) <= 1  # cycled evenly
        assert {ex.meta["family"] for ex in added} <= {"pet", "employer"}
    assert {p.family for p in data.instruction_pairs} == {"pet", "birth_years"}
    assert data.instruction_families == ("pet", "employer")
    with pytest.raises(ValueError, match="distinct examples of families"):
        source(100000, 10)
    with pytest.raises(ValueError, match="needs instruction_examples > 0"):
        source(0, 10)


def test_p_mrr_per_family_and_on_seen_versus_unseen():
    from joint_rag.instructions import family_p_mrr

    pairs = [
        InstructionPair("a", "q", "o", "n", ("p1",), family="pet"),
        InstructionPair("b", "q", "o", "n", ("p2",), family="birth_years"),
    ]

    def rank(queries, instructions):  # demotes p1 under "n", leaves p2 in place
        return [["p2", "p3", "p1"] if ins == "n" else ["p1", "p2", "p3"] for ins in instructions]

    result = evaluate_instruction_following(rank, pairs)
    assert result["per_family"]["pet"] == {"p_mrr": pytest.approx(1 - 1 / 3), "queries": 1}
    logged = family_p_mrr(result, seen=("pet",))
    assert logged["p_mrr_seen"] == pytest.approx(1 - 1 / 3)
    assert logged["p_mrr_unseen"] == pytest.approx(result["per_family"]["birth_years"]["p_mrr"])
    assert set(logged) == {"p_mrr/pet", "p_mrr/birth_years", "p_mrr_seen", "p_mrr_unseen"}


def test_pair_records_average_to_the_logged_metrics():
    """Per-pair records (the ablation's paired intervals) whose means are the run's metrics."""
    from joint_rag.instructions import family_p_mrr, pair_records

    pairs = [
        InstructionPair("a", "q", "o", "n", ("p1",), family="pet"),
        InstructionPair("b", "q2", "o", "n", ("p2",), family="pet"),
        InstructionPair("c", "q3", "o", "n", ("p3",), family="birth_years"),
    ]

    def rank(queries, instructions):
        order = {"q": ["p2", "p3", "p1"], "q2": ["p2", "p1", "p3"], "q3": ["p1", "p2", "p3"]}
        return [order[q] if ins == "n" else ["p1", "p2", "p3"] for q, ins in zip(queries, instructions)]

    result = evaluate_instruction_following(rank, pairs)
    records = pair_records(result, seen=("pet",))
    assert [r["id"] for r in records] == ["pair:a", "pair:b", "pair:c"]
    logged = {**family_p_mrr(result, seen=("pet",)), "p_mrr": result["p_mrr"]}
    for name, value in logged.items():
        values = [r[name] for r in records if name in r]
        assert values and statistics.fmean(values) == pytest.approx(value), name
    assert pair_records(result, seen=())[0].keys() == {"id", "p_mrr", "p_mrr/pet"}
