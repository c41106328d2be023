"""Every YAML under experiments/ parses through the CLI (litgpt's config-hub test): full
experiments alone, ablation bases (deltas) on top of the files their grids name, grids and the
menu through the ablation runner."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from joint_rag.ablation import load_grid, load_menu
from joint_rag.cli import main
from joint_rag.config import config_args, make_cli, override

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "experiments").rglob("*.yaml"))
MENU = REPO / "experiments" / "ablations" / "menu.yaml"


def _kind(path: Path) -> str:
    raw = yaml.safe_load(path.read_text())
    if path == MENU:
        return "menu"
    if isinstance(raw, dict) and "ablation" in raw:
        return "grid"
    if path.parent.name == "distributed":
        return "overlay"  # on top of the quickstart: -c quickstart.yaml -c overlay.yaml
    return "delta" if path.parent.name == "base" else "experiment"


def _grids() -> list[Path]:
    return [p for p in CONFIGS if _kind(p) == "grid"]


def _documented_stack(path: Path) -> list[Path]:
    """The -c files of the `jrag fit` (or `jrag validate`: the same config stack) command in a
    file's leading comment (continuation lines joined), e.g.
    ``#   jrag fit -c experiments/quickstart.yaml -c experiments/x.yaml``."""
    comment = " ".join(
        line.lstrip("#").strip().rstrip("\\")
        for line in path.read_text().splitlines()
        if line.startswith("#")
    )
    command = next((c for c in ("jrag fit", "jrag validate") if c in comment), None)
    if command is None:
        return []
    words = comment.split(command, 1)[1].split("jrag ", 1)[0].split()  # up to the next command
    return [REPO / words[i + 1] for i, w in enumerate(words[:-1]) if w == "-c"]


def _printed(args: list[str], capsys) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        make_cli(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_there_are_configs():
    kinds = {_kind(p) for p in CONFIGS}
    assert kinds == {"experiment", "delta", "grid", "menu", "overlay"} and any(
        p.name == "smoke.yaml" for p in CONFIGS
    )


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "experiments")))
def test_config_parses(path: Path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    kind = _kind(path)
    if kind == "menu":
        assert {"frozen", "similarity"} <= set(load_menu(path))
        return
    if kind == "grid":
        grid = load_grid(path)
        assert grid.runs()
        printed = _printed(config_args(grid.bases, grid.flags_for(*grid.runs()[0])), capsys)
    elif kind == "delta":
        grids = [g for g in _grids() if path.resolve() in [b.resolve() for b in load_grid(g).bases]]
        if grids:
            printed = _printed(config_args(load_grid(grids[0]).bases), capsys)
        else:  # a delta of a delta: the `jrag fit -c ...` command its comment documents must parse
            stack = _documented_stack(path)
            assert stack, (
                f"{path} is a delta file no grid names, and its comment shows no `jrag fit -c` command"
            )
            assert stack[-1].resolve() == path.resolve(), (
                f"{path}: its documented command does not end with it"
            )
            printed = _printed(config_args(stack), capsys)
    elif kind == "overlay":
        printed = _printed(["-c", str(REPO / "experiments" / "quickstart.yaml"), "-c", str(path)], capsys)
    else:
        printed = _printed(["-c", str(path)], capsys)
    assert "model" in printed and "data" in printed


@pytest.mark.parametrize("row", sorted(load_menu(MENU)))
def test_every_menu_row_builds_on_the_smoke_base(row: str, capsys):
    flags = [override(k, v) for k, v in load_menu(MENU)[row].items()]
    printed = _printed(["-c", str(REPO / "experiments" / "smoke.yaml"), *flags], capsys)
    assert printed["model"]["objectives"]


def test_bad_config_names_the_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    text = (REPO / "experiments" / "smoke.yaml").read_text().replace("num_candidates: 4", "num_candidatez: 4")
    bad.write_text(text)
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(bad), "--print_config"])
    assert "num_candidatez" in capsys.readouterr().err
