"""`jrag`: one command table that shows itself, one-line errors (exit 2), and runs that leave
logs (CSV by default, TensorBoard with a flag) and a last checkpoint."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from joint_rag.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "experiments" / "smoke.yaml")


def run_jrag(args: list[str], **env) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", JRAG_PROGRESS="0", TOKENIZERS_PARALLELISM="false", **env)
    return subprocess.run(
        [sys.executable, "-m", "joint_rag.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_help_lists_every_subcommand_with_a_line(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, (target, help_line) in COMMANDS.items():
        assert f"  {name}" in out and help_line in out
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function))
    assert set(COMMANDS) == {
        "fit",
        "validate",
        "test",
        "quickstart",
        "ablate",
        "export",
        "answer",
        "follow",
        "gap",
        "pairs",
        "evaluate",
        "capacity",
        "synthesize",
    }


def test_unknown_command_and_no_command(capsys):
    assert main(["fitt"]) == 2
    assert "unknown command 'fitt'" in capsys.readouterr().err
    assert main([]) == 2


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (
            "--model.selector.init_args.k=9",
            "selector.k=9 is larger than num_candidates=4 (C): K must be <= C",
        ),
        ("--model.compressor.init_args.backbone=nonesuch", "unknown backbone 'nonesuch'"),
        ("--model.similarity=mean_dot", "similarity='mean_dot' is unknown ('mean_dot' is now 'dot')"),
        ("--data.source.init_args.num_entities=0", "num_entities must be >= 1"),
    ],
)
def test_bad_values_are_one_line_and_exit_2(flag, message, tmp_path, capsys):
    code = main(["fit", "-c", SMOKE, flag, f"--trainer.default_root_dir={tmp_path}"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and err[-1].startswith("jrag fit: error: ") and message in err[-1], err


def test_bad_data_file_is_one_line(tmp_path, capsys):
    squad = tmp_path / "squad.json"
    squad.write_bytes(b'{"data": [\xff]}')
    flags = ["--data.source=joint_rag.data.SquadSource", f"--data.source.init_args.path={squad}"]
    assert main(["fit", "-c", SMOKE, *flags, f"--trainer.default_root_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("jrag fit: error: ") and "squad.json" in err


def test_traceback_flag_and_environment_show_the_trace(tmp_path, monkeypatch):
    flag = "--model.selector.init_args.k=9"
    res = run_jrag(["--traceback", "fit", "-c", SMOKE, flag, f"--trainer.default_root_dir={tmp_path}"])
    assert res.returncode != 0 and "Traceback (most recent call last)" in res.stderr
    assert "K must be <= C" in res.stderr
    # the environment variable, in process (one subprocess start is enough): the error propagates
    monkeypatch.setenv("JRAG_TRACEBACK", "1")
    with pytest.raises(ValueError, match="K must be <= C"):
        main(["fit", "-c", SMOKE, flag, f"--trainer.default_root_dir={tmp_path}"])
    monkeypatch.setenv("JRAG_TRACEBACK", "0")
    assert main(["fit", "-c", SMOKE, flag, f"--trainer.default_root_dir={tmp_path}"]) == 2


def test_smoke_fit_leaves_csv_logs_a_last_checkpoint_and_says_where(tmp_path):
    res = run_jrag(["fit", "-c", SMOKE, f"--trainer.default_root_dir={tmp_path}"])
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "lightning_logs" / "version_0"
    assert f"run folder: {run}" in res.stdout
    assert (run / "metrics.csv").is_file() and (run / "config.yaml").is_file()
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "val/recall@1" in header and "train/loss" in header
    last = run / "checkpoints" / "last.ckpt"
    assert last.exists() and f"last checkpoint: {last}" in res.stdout


def test_tensorboard_flag(tmp_path):
    flags = ["--trainer.max_steps=1", "--trainer.val_check_interval=1", "--trainer.limit_val_batches=1"]
    assert main(["fit", "-c", SMOKE, "--tensorboard", *flags, f"--trainer.default_root_dir={tmp_path}"]) == 0
    assert list((tmp_path / "lightning_logs" / "version_0").glob("events.out.tfevents.*"))


def test_smoke_validate_reports_metrics(tmp_path):
    res = run_jrag(["validate", "-c", SMOKE, f"--trainer.default_root_dir={tmp_path}"])
    assert res.returncode == 0, res.stderr[-3000:]
    for key in ("val/recall@1", "val/recall@5", "val/mrr@10", "val/em", "val/f1"):
        assert key in res.stdout + res.stderr
