"""Instruction following: p-MRR (FollowIR / MTEB definition), instruction pairs, `jrag follow`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from smoke_fit import fit_smoke  # (tests/ is on sys.path under pytest)

from joint_rag.cli import main
from joint_rag.data.formats import DataError
from joint_rag.data.knowledge_base import build_knowledge_base
from joint_rag.export import export_checkpoint
from joint_rag.instructions import (
    InstructionPair,
    evaluate_instruction_following,
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

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        json.dumps({"query": "q", "instruction_og": "a", "instruction_new": "b", "changed": ["nope"]})
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["follow", "--model", str(export), "--pairs", str(pairs)])
    assert exit_info.value.code == 2
    assert "not in the export's corpus, e.g. 'nope'" in capsys.readouterr().err
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
