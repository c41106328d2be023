"""Faults of a training run (issue 14, items 1-3 and 6): a fit killed and resumed, divergence,
bad ``--ckpt_path``, config errors, and what makes two same-seed runs differ. Each test asserts
the exact outcome: the parameters and logged values, or the one-line message and exit code 2,
and that no checkpoint of non-finite weights is left.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from joint_rag.cli import main
from joint_rag.config import build, resolve_ckpt_path
from joint_rag.errors import DivergenceError, JointRAGError
from joint_rag.training.module import CHECKPOINT_KEY

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "experiments" / "smoke.yaml")
SMALL = ["--data.source.init_args.num_entities=12", "--trainer.limit_val_batches=1"]

#: rolling refresh over a trained IVF quantizer with Gumbel noise in the selector: every piece
#: of state a resumed fit must get back (index rows and ages, faiss lists, RNG, data order)
ROLLING_IVF_GUMBEL = """
trainer:
  callbacks:
    - class_path: joint_rag.training.callbacks.IndexRefresh
      init_args: {mode: rolling, rolling_steps: 4, show_progress: false, refresh_before_eval: false}
model:
  index_backend: faiss_ivf
  index_params: {nlist: 4, nprobe: 2}
  selector:
    class_path: joint_rag.models.selection.TopKSelector
    init_args: {k: 2, temperature: 1.0, gumbel: true}
"""


def _jrag(*args: str, cwd: Path, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    code = "import sys; from joint_rag.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _last(root: Path) -> Path:
    return max(
        root.glob("lightning_logs/version_*/checkpoints/last.ckpt"), key=lambda p: p.parent.parent.name
    )


def test_sigkill_then_resume_last_equals_an_uninterrupted_fit(tmp_path):
    """Six steps (validation and a checkpoint after 3 and 6), killed by SIGKILL as step 4
    starts, resumed with ``--ckpt_path last``: the same weights (bit for bit), the same logged
    losses and staleness for steps 3-5 and the same validation metrics as one run of 6 steps."""
    delta = tmp_path / "rolling.yaml"
    delta.write_text(ROLLING_IVF_GUMBEL)
    config = ["fit", "-c", SMOKE, "-c", str(delta), *SMALL]
    full = _jrag(*config, f"--trainer.default_root_dir={tmp_path / 'full'}", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-2000:]
    root = tmp_path / "killed"
    killed = _jrag(
        *config,
        f"--trainer.default_root_dir={root}",
        "--trainer.callbacks+=injection.KillAt",
        cwd=tmp_path,
        extra_path=Path(__file__).parent,
    )
    assert killed.returncode == -9  # SIGKILL: no cleanup, no flush
    assert torch.load(_last(root), weights_only=True)["global_step"] == 3
    resumed = _jrag(*config, f"--trainer.default_root_dir={root}", "--ckpt_path", "last", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout and "step=3.ckpt" in resumed.stdout

    a = torch.load(_last(tmp_path / "full"), weights_only=True)
    b = torch.load(_last(root), weights_only=True)
    assert a["global_step"] == b["global_step"] == 6
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert torch.equal(a[CHECKPOINT_KEY]["index"]["vectors"], b[CHECKPOINT_KEY]["index"]["vectors"])

    want = [r for r in _rows(_last(tmp_path / "full").parents[1]) if int(r["step"]) >= 3]
    got = _rows(_last(root).parents[1])  # the resumed run's own log: steps 3-5 and validation
    assert len(got) == len(want) >= 4
    for w, g in zip(want, got):
        assert {k: w[k] for k in w if w[k]} == {k: g[k] for k in w if w[k]}  # logged strings equal
    assert any(r.get("val/recall@5") for r in got)


def test_resume_keeps_the_blocking_index_and_its_staleness(tmp_path):
    """In process: 2 steps with a checkpoint, then resumed to 4, equal an uninterrupted 4-step
    fit (blocking refresh every 3 steps, exact index), with the staleness counted from the
    checkpoint's index (its build step), not from the restart."""

    def fit(root: Path, steps: int, ckpt: str | None = None):
        cli = build([SMOKE], [*SMALL, f"--trainer.default_root_dir={root}", f"--trainer.max_steps={steps}"])
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt)
        return cli

    full = fit(tmp_path / "full", 4)
    part = fit(tmp_path / "part", 3)
    resumed = fit(tmp_path / "part", 4, ckpt=str(_last(tmp_path / "part")))
    sa, sb = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert part.model.system.index.step == 3  # refreshed after step 3, kept at resume
    assert resumed.model.system.index.step == 3 and resumed.model.index_restored
    staleness = [r["train/staleness"] for r in _rows(_last(tmp_path / "part").parents[1]) if r["train/loss"]]
    assert staleness == ["0.0"]  # step 3's index is fresh at step 3


def test_resume_last_without_a_checkpoint(tmp_path, capsys):
    """``fit --ckpt_path last`` with nothing to resume says so and starts from step 0;
    ``validate`` refuses."""
    assert resolve_ckpt_path("last", tmp_path, "fit") is None
    assert "no last.ckpt under" in capsys.readouterr().out
    with pytest.raises(JointRAGError, match="no last.ckpt under"):
        resolve_ckpt_path("last", tmp_path, "validate")


@pytest.mark.parametrize("fault", ["missing", "truncated", "not-a-checkpoint", "dangling-last"])
def test_bad_ckpt_path_is_one_line(tmp_path, fault, capsys):
    path = tmp_path / "model.ckpt"
    if fault == "truncated":
        torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:-200])
    elif fault == "not-a-checkpoint":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "hello")
    elif fault == "dangling-last":
        folder = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
        folder.mkdir(parents=True)
        (folder / "last.ckpt").symlink_to(folder / "gone.ckpt")
    ckpt = "last" if fault == "dangling-last" else str(path)
    code = main(
        ["validate", "-c", SMOKE, *SMALL, f"--trainer.default_root_dir={tmp_path}", "--ckpt_path", ckpt]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    want = {
        "missing": "no such checkpoint file",
        "truncated": "not a complete checkpoint",
        "not-a-checkpoint": "not a torch checkpoint",
        "dangling-last": "no last.ckpt under",
    }[fault]
    assert err.startswith("jrag validate: error: --ckpt_path") and want in err


def test_divergence_stops_the_fit_in_one_line_and_writes_no_nonfinite_checkpoint(tmp_path, capsys):
    """``lr: 1e30``: the update overflows the weights and the next loss is NaN. The fit stops
    with exit 2 and one line naming the step, the loss terms and the learning rates; every
    checkpoint left behind (a checkpoint every step here) holds finite weights only."""
    code = main(
        [
            "fit",
            "-c",
            SMOKE,
            *SMALL,
            f"--trainer.default_root_dir={tmp_path}",
            "--model.lr=1e30",
            "--trainer.callbacks+=pytorch_lightning.callbacks.ModelCheckpoint",
            "--trainer.callbacks.init_args.every_n_train_steps=1",
            "--trainer.callbacks.init_args.save_top_k=-1",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    line = err[0]
    assert line.startswith("jrag fit: error: training diverged at step 1: non-finite loss nan")
    assert "end_to_end/answer_nll=nan" in line and "learning rates: 1e+30, 1e+30" in line
    assert "No checkpoint was written" in line
    for ckpt in tmp_path.rglob("*.ckpt"):
        state = torch.load(ckpt, weights_only=True)["state_dict"]
        assert all(bool(torch.isfinite(v).all()) for v in state.values()), ckpt


def test_nonfinite_gradient_stops_naming_the_parameter(tiny_module):
    module, _ = tiny_module()
    name, param = next((n, p) for n, p in module.named_parameters() if p.requires_grad)
    param.grad = torch.full_like(param, math.inf)
    with pytest.raises(
        DivergenceError, match=r"at step 0: non-finite gradients in " + name.replace(".", r"\.")
    ):
        module.on_before_optimizer_step(None)


def test_an_update_that_overflows_stops_naming_the_parameter(tiny_module):
    """Finite loss and gradients, a learning rate that makes the weights infinite."""
    module, _ = tiny_module()
    name, param = next((n, p) for n, p in module.named_parameters() if p.requires_grad)
    opt = torch.optim.SGD([param], lr=1e38)
    param.grad = torch.full_like(param, -1e38)
    with pytest.raises(DivergenceError, match=r"the update made " + name.replace(".", r"\.") + " non-finite"):
        module.optimizer_step(0, 0, opt, lambda: None)


def test_a_checkpoint_of_nonfinite_weights_is_refused(tiny_module):
    module, _ = tiny_module()
    with pytest.raises(DivergenceError, match=r"the weights w are non-finite \(checkpoint refused\)"):
        module.on_save_checkpoint({"state_dict": {"w": torch.tensor([1.0, math.nan])}})


def test_nonfinite_weights_give_nan_metrics_or_a_divergence_error(tiny_module, tmp_path):
    """Evaluating non-finite weights: with an index at hand the metrics are NaN (never 0);
    without one, the index build says what is wrong (not 'non-finite vectors')."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from joint_rag.data.collate import collate_examples

    module, data = tiny_module()
    module.build_index(show_progress=False)
    with torch.no_grad():
        module.system.generator.model.get_input_embeddings().weight[0, 0] = math.nan
    loader = DataLoader(data.val[:4], batch_size=4, collate_fn=collate_examples)
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    metrics = trainer.validate(module, dataloaders=loader, verbose=False)[0]
    assert metrics and all(math.isnan(v) for k, v in metrics.items() if k != "val/questions")
    module.system.index = None
    with pytest.raises(DivergenceError, match="are non-finite, so the index cannot be built"):
        trainer.validate(module, dataloaders=loader, verbose=False)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "--model.selector.init_args.k=0",
            "TopKSelector: k (model.selector.init_args.k) must be >= 1, got 0",
        ),
        (
            '--model.objective_weights={"end_to_end": 1.0, "similarty": 0.5}',
            "objective weights name unknown objectives ['similarty']; known: ['end_to_end', 'similarity']",
        ),
        (
            "--model.selector.init_args.k=8",
            "selector.k=8 is larger than num_candidates=4 (C): K must be <= C",
        ),
        (
            "--model.compressor.init_args.backbone=minilmx",
            "unknown backbone 'minilmx': not a preset (tiny-bert, minilm, tiny-llama, smollm2-135m) "
            "and no such directory",
        ),
        (
            "--model.similarity=cosin",
            "similarity='cosin' is unknown; choose one of dot, cosine, flat_cosine, maxsim",
        ),
        (
            "--model.index_backend=faiss_lsh",
            "index backend must be one of ('exact', 'faiss', 'faiss_ivf', 'faiss_ivfpq', 'faiss_hnsw'), "
            "got 'faiss_lsh'",
        ),
    ],
)
def test_config_errors_are_one_line(tmp_path, capsys, override, message):
    code = main(["fit", "-c", SMOKE, *SMALL, f"--trainer.default_root_dir={tmp_path}", override])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"jrag fit: error: {message}"]


def test_interpolation_follows_a_command_line_override(tmp_path):
    """``${trainer.default_root_dir}`` in a delta file resolves after the flags are merged."""
    delta = tmp_path / "delta.yaml"
    delta.write_text(
        "trainer:\n  callbacks:\n    - class_path: pytorch_lightning.callbacks.ModelCheckpoint\n"
        '      init_args: {dirpath: "${trainer.default_root_dir}/ckpts"}\n'
    )
    cli = build([SMOKE, delta], [f"--trainer.default_root_dir={tmp_path / 'over'}"])
    (ckpt,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "ModelCheckpoint"]
    assert ckpt.dirpath == str(tmp_path / "over" / "ckpts")


def test_loading_a_pretrained_backbone_leaves_the_seeded_generator_alone():
    """A run must not depend on whether a backbone was loaded (or converted) before it seeded
    its generators: loading draws no random numbers from them."""
    from joint_rag.models.backbones import load_backbone

    torch.manual_seed(0)
    before = torch.get_rng_state()
    load_backbone("minilm", "encoder")
    assert torch.equal(torch.get_rng_state(), before)
