"""The ablation runner: grid parsing, the menu file, overrides as LightningCLI flags,
resumability, tables and plot."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from joint_rag.ablation import load_grid
from joint_rag.commands.ablate import main as main_ablate
from joint_rag.errors import GridError

REPO = Path(__file__).resolve().parents[1]
#: the interval rows of results.csv (seed column), besides the per-seed values, mean and std
FIELDS = ("delta", "ci_low", "ci_high", "beyond_noise", "method", "paired_seeds", "paired_questions")


def test_smoke_ablation_runs_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    grid_file = tmp_path / "grid.yaml"
    spec = yaml.safe_load((REPO / "experiments/ablations/smoke.yaml").read_text())
    spec["ablation"]["out_dir"] = str(tmp_path / "out")
    grid_file.write_text(yaml.safe_dump(spec))
    assert main_ablate(["-c", str(grid_file)]) == 0
    out = tmp_path / "out"
    for name in ("results.md", "results.csv", "results.png"):
        assert (out / name).stat().st_size > 0
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    variants = {r["variant"] for r in rows}
    assert {
        "frozen",
        "similarity",
        "end_to_end",
        "similarity+end_to_end",
        "pdist",
        "emdr2",
        "lsr",
    } <= variants
    assert {r["seed"] for r in rows} >= {"0", "1", "mean", "std", "delta", "ci_low", "ci_high"}
    assert not any(r["variant"] == "frozen" and r["seed"] == "delta" for r in rows)  # the baseline
    md = (out / "results.md").read_text()
    assert "| frozen |" in md and "recall@5" in md
    # per-question records next to each run's metrics; the report's paired intervals use them
    for variant in ("frozen", "lsr"):
        for seed in (0, 1):
            run = out / f"runs/{variant}/seed{seed}"
            lines = (run / "questions.jsonl").read_text().splitlines()
            records = [json.loads(line) for line in lines]
            metrics = json.loads((run / "metrics.json").read_text())
            assert len(records) == metrics["questions"] and len({r["id"] for r in records}) == len(records)
            mean = sum(r["recall@5"] for r in records) / len(records)
            assert mean == pytest.approx(metrics["recall@5"], abs=1e-6)  # the logged metric
            assert {"em", "f1", "mrr@10", "ndcg@10", "top1"} <= set(records[0])
            assert all(r["top1"].startswith(("person-", "org-")) for r in records)  # a passage id
    assert "Difference from `frozen`: paired bootstrap 95% intervals" in md
    assert "| lsr | 2 | 8 | " in md and "**Warning:** the intervals use 2 seeds" in md
    assert "(2 SE)" not in md.split("| variant | paired seeds |")[1]  # every pair has questions
    assert json.loads((out / "results.json").read_text())["baseline"] == "frozen"
    # resumable: finished runs are skipped (their metrics files are not rewritten)
    stamp = (out / "runs/frozen/seed0/metrics.json").stat().st_mtime_ns
    assert main_ablate(["-c", str(grid_file)]) == 0
    assert (out / "runs/frozen/seed0/metrics.json").stat().st_mtime_ns == stamp
    # --report-only runs nothing and reports the finished runs
    (out / "results.md").unlink()
    (out / "runs/lsr/seed1/metrics.json").unlink()
    assert main_ablate(["-c", str(grid_file), "--report-only"]) == 0
    assert not (out / "runs/lsr/seed1/metrics.json").exists()
    with open(out / "results.csv") as fh:
        lsr = [r for r in csv.DictReader(fh) if r["variant"] == "lsr"]
    assert {r["seed"] for r in lsr} - set(FIELDS) == {"0", "mean", "std"}
    assert "| lsr | 1 | 8 | " in (out / "results.md").read_text()  # paired on seed 0 only
    # runs that finished before questions.jsonl existed still count: the 2-SE fallback
    for run in (out / "runs").glob("*/seed*/questions.jsonl"):
        run.unlink()
    assert main_ablate(["-c", str(grid_file), "--report-only"]) == 0
    md = (out / "results.md").read_text()
    assert "| similarity | 2 (2 SE) | - | " in md and "| lsr | 1 (2 SE) | - | " in md
    # another row as the baseline: its own report folder, the grid's report untouched
    assert main_ablate(["-c", str(grid_file), "--report-only", "--baseline", "similarity"]) == 0
    assert "Difference from `similarity`" in (out / "vs_similarity" / "results.md").read_text()
    assert "Difference from `frozen`" in (out / "results.md").read_text()


def test_grid_errors_name_the_field(tmp_path):
    bad = tmp_path / "g.yaml"
    bad.write_text("ablation:\n  base: experiments/smoke.yaml\n  seeds: one\n")
    with pytest.raises(GridError, match="ablation.seeds"):
        load_grid(bad)
    bad.write_text("ablation:\n  base: nowhere.yaml\n")
    with pytest.raises(GridError, match="ablation.base: file not found"):
        load_grid(bad)
    bad.write_text("ablation:\n  base: experiments/smoke.yaml\n  menu: [nope]\n")
    with pytest.raises(GridError, match="unknown entries"):
        load_grid(bad)


def test_menu_rows_come_from_the_menu_file(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    grid = load_grid(REPO / "experiments/ablations/smoke.yaml")
    menu = yaml.safe_load((REPO / "experiments/ablations/menu.yaml").read_text())["rows"]
    assert grid.variants["similarity"] == menu["similarity"]
    assert menu["similarity"]["model.objectives"]["similarity"]["init_args"] == {"temperature": 0.05}
    bad = tmp_path / "g.yaml"
    (tmp_path / "menu.yaml").write_text("rows: {similarity: {}}\n")
    bad.write_text("ablation:\n  base: experiments/smoke.yaml\n")
    with pytest.raises(GridError, match="lacks the required rows \\['frozen'\\]"):
        load_grid(bad)
    (tmp_path / "menu.yaml").write_text("rows: [1, 2]\n")
    with pytest.raises(GridError, match="expected 'rows:'"):
        load_grid(bad)


def test_a_variant_replaces_the_whole_value_at_its_key(monkeypatch, tmp_path):
    """Overrides are LightningCLI flags (JSON values): `model.objectives` swaps the objective set
    of the base (the smoke base trains end_to_end + similarity), null removes the weights."""
    from joint_rag.config import build

    monkeypatch.chdir(REPO)
    grid = load_grid(REPO / "experiments/ablations/smoke.yaml")
    flags = grid.flags_for("end_to_end", 1)
    assert f"--trainer.default_root_dir={grid.run_dir('end_to_end', 1)}" in flags
    cli = build(grid.bases, flags)
    assert list(cli.model.objective.objectives) == ["end_to_end"]
    assert cli.model.objective.weights == {"end_to_end": 1.0}
    assert cli.model.system.similarity == "cosine"  # from the grid's overrides
    assert cli.trainer.max_steps == 3


def test_baselines_always_included(monkeypatch):
    monkeypatch.chdir(REPO)
    grid = load_grid(REPO / "experiments/ablations/smoke.yaml")
    assert {"frozen", "similarity", "similarity+end_to_end"} <= set(grid.variants)
    assert grid.baseline == "frozen"


def test_the_baseline_row_is_a_grid_key(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    grid = tmp_path / "g.yaml"
    grid.write_text("ablation:\n  base: experiments/smoke.yaml\n  baseline: similarity\n")
    assert load_grid(grid).baseline == "similarity"
    grid.write_text("ablation:\n  base: experiments/smoke.yaml\n  baseline: nope\n")
    with pytest.raises(GridError, match="ablation.baseline: 'nope' is not a row"):
        load_grid(grid)


def test_a_non_utf8_menu_names_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    (tmp_path / "menu.yaml").write_bytes(b"rows: {\xff}\n")
    grid = tmp_path / "g.yaml"
    grid.write_text("ablation:\n  base: experiments/smoke.yaml\n")
    with pytest.raises(GridError, match="menu.yaml: cannot read the ablation menu"):
        load_grid(grid)


def test_seeds_and_only_restrict_what_runs(tmp_path, monkeypatch, capsys):
    import joint_rag.ablation as ablation

    monkeypatch.chdir(REPO)
    grid_file = tmp_path / "grid.yaml"
    spec = yaml.safe_load((REPO / "experiments/ablations/smoke.yaml").read_text())
    spec["ablation"].update(out_dir=str(tmp_path / "out"), seeds=[0, 1, 2])
    grid_file.write_text(yaml.safe_dump(spec))
    ran = []

    def fake_run(grid, variant, seed):
        ran.append((variant, seed))
        return {"recall@1": 0.5, "wall_seconds": 0.0}

    monkeypatch.setattr(ablation, "run_one", fake_run)
    monkeypatch.setattr("joint_rag.report.write_results", lambda *a, **k: grid_file)
    assert main_ablate(["-c", str(grid_file), "--seeds", "1", "--only", "frozen", "similarity"]) == 0
    assert ran == [("frozen", 1), ("similarity", 1)]
    with pytest.raises(SystemExit):
        main_ablate(["-c", str(grid_file), "--seeds", "7"])
    assert "--seeds: [7] are not seeds of the grid; it has [0, 1, 2]" in capsys.readouterr().err
    for argv, message in (
        (["--baseline", "lsr"], "--baseline goes with --report-only"),
        (["--report-only", "--baseline", "nope"], "--baseline: 'nope' is not a row of the grid"),
    ):
        with pytest.raises(SystemExit):
            main_ablate(["-c", str(grid_file), *argv])
        assert message in capsys.readouterr().err


def test_run_records_let_a_fresh_clone_report_and_resume(tmp_path, monkeypatch, capsys):
    """``records:``: one JSON file per finished run; with the run folders gone (a fresh clone) the
    report is the same and nothing reruns; old runs are backfilled; other settings are flagged;
    a record that is not one is refused by name."""
    import joint_rag.ablation as ablation

    monkeypatch.chdir(REPO)
    grid_file = tmp_path / "grid.yaml"
    spec = yaml.safe_load((REPO / "experiments/ablations/smoke.yaml").read_text())
    spec["ablation"].update(out_dir=str(tmp_path / "out"), seeds=[0, 1], menu=["frozen", "similarity"])
    spec["ablation"]["overrides"]["trainer.max_steps"] = 1
    grid_file.write_text(yaml.safe_dump(spec))
    assert main_ablate(["-c", str(grid_file)]) == 0  # no records yet: the grid keeps none
    out, records = tmp_path / "out", tmp_path / "records"
    table = (out / "results.md").read_text().split("wall time")[1].split("s.", 1)[1]
    spec["ablation"]["records"] = str(records)
    grid_file.write_text(yaml.safe_dump(spec))
    assert main_ablate(["-c", str(grid_file), "--report-only"]) == 0  # backfills the records
    assert "recorded similarity seed 1" in capsys.readouterr().out
    record = json.loads((records / "similarity" / "seed1.json").read_text())
    run = out / "runs/similarity/seed1"
    assert record["metrics"] == json.loads((run / "metrics.json").read_text())
    assert record["variant"] == "similarity" and record["seed"] == 1 and record["machine"]["cpu"]
    assert {q["id"]: q["recall@5"] for q in record["questions"]} == {
        q: m["recall@5"] for q, m in ablation.read_questions(run / "questions.jsonl").items()
    }
    assert "--seed_everything=1" in record["flags"]
    assert not any(f.startswith("--trainer.default_root_dir") for f in record["flags"])
    # a fresh clone: no run folders; the same report, and nothing reruns
    shutil.rmtree(out)
    assert main_ablate(["-c", str(grid_file), "--report-only"]) == 0
    assert (out / "results.md").read_text().split("wall time")[1].split("s.", 1)[1] == table
    monkeypatch.setattr(ablation, "run_one", lambda *a: pytest.fail("a recorded run reran"))
    assert main_ablate(["-c", str(grid_file)]) == 0
    # a record made with other settings counts, and the report says so
    record["settings_sha256"] = "0" * 64
    (records / "similarity" / "seed1.json").write_text(json.dumps(record))
    assert main_ablate(["-c", str(grid_file), "--report-only"]) == 0
    assert "other settings than the grid defines now" in (out / "results.md").read_text()
    assert "similarity seed 1" in (out / "results.md").read_text()
    # records that are not this run's, or not readable, are refused by file
    grid = load_grid(grid_file)
    path = records / "similarity" / "seed1.json"
    for text, message in (
        ("{not json", "cannot read the run record"),
        (json.dumps({**record, "format": 99}), "run record format 99 is newer"),
        (json.dumps({**record, "seed": 0}), "the record is of similarity seed 0, not similarity seed 1"),
        (json.dumps({k: v for k, v in record.items() if k != "metrics"}), "field 'metrics' is missing"),
    ):
        path.write_text(text)
        with pytest.raises(GridError, match=message) as err:
            ablation.finished(grid)
        assert str(path) in str(err.value)
