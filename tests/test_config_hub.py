"""Every YAML under experiments/ parses through the CLI (litgpt's config-hub test)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from joint_rag.cli import main, make_cli

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "experiments").rglob("*.yaml"))


def test_there_are_configs():
    assert any(p.name == "smoke.yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "experiments")))
def test_config_parses(path: Path, capsys):
    raw = yaml.safe_load(path.read_text())
    if isinstance(raw, dict) and "ablation" in raw:  # `jrag ablate` grid files
        from joint_rag.studies import load_grid

        assert load_grid(path).runs()
        return
    with pytest.raises(SystemExit) as exit_info:
        make_cli(["fit", "-c", str(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert "model" in printed and "data" in printed


def test_bad_config_names_the_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    text = (REPO / "experiments" / "smoke.yaml").read_text().replace("num_candidates: 4", "num_candidatez: 4")
    bad.write_text(text)
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(bad), "--print_config"])
    assert "num_candidatez" in capsys.readouterr().err
