"""Export: checkpoint/module -> self-describing folder (format of joint_rag.artifact); atomic;
`jrag export` errors in one line."""

from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path

import pytest
import torch
from smoke_fit import fit_smoke  # noqa: E402  (tests/ is on sys.path under pytest)

import joint_rag.artifact as artifact_mod
from joint_rag.cli import main
from joint_rag.errors import ExportError
from joint_rag.export import export_checkpoint, export_module
from joint_rag.pipeline import JointRAG

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "Where was Trolstom Collective founded?",
    "Who is Gosol Nasegi?",
    "What does Trothas Guild sell?",
]


def _same_search(system, rag, k: int = 4, exact: bool = True) -> None:
    system.eval().build_index(show_progress=False)
    s_sys, ids_sys = system.search(QUESTIONS, None, k)
    s_rag, ids_rag = rag.system.search(QUESTIONS, None, k)
    assert ids_sys == ids_rag
    assert torch.equal(s_sys, s_rag) if exact else torch.allclose(s_sys, s_rag, atol=1e-5)


def test_export_checkpoint_matches_trained_module(tmp_path):
    cli, ckpt = fit_smoke(tmp_path / "run")
    assert ckpt.name == "last.ckpt"
    out = export_checkpoint(
        ckpt, tmp_path / "export", metrics={"before": {"val/em": 0.0}, "after": {"val/em": 0.25}}
    )
    system = cli.model.system
    rag = JointRAG.from_pretrained(out)
    _same_search(system, rag, 5)
    ranked = system.rank(QUESTIONS, None, 10)
    assert [r["answer"] for r in rag.answer(QUESTIONS)] == system.answer(
        QUESTIONS, None, [i[:4] for i, _ in ranked]
    )
    assert [[pid for pid, _ in row] for row in rag.retrieve(QUESTIONS, k=5)] == [i[:5] for i, _ in ranked]
    manifest = json.loads((out / "joint_rag.json").read_text())
    assert manifest["trained_steps"] == 2
    assert (out / "config.yaml").is_file(), "the run's config.yaml is found next to the checkpoint and copied"
    assert "| val/em | 0.0000 | 0.2500 |" in (out / "README.md").read_text()


def test_checkpoint_of_the_earlier_module_layout_still_exports(tmp_path):
    """Checkpoints written before the module held one RAGSystem keep their parts at the top
    level (``compressor.*``); the export maps them onto ``system.*``."""
    cli, ckpt = fit_smoke(tmp_path / "run")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["state_dict"] = {k.removeprefix("system."): v for k, v in state["state_dict"].items()}
    old = tmp_path / "run" / "old.ckpt"
    torch.save(state, old)
    config = next((tmp_path / "run").rglob("config.yaml"))
    rag = JointRAG.from_pretrained(export_checkpoint(old, tmp_path / "export", config))
    _same_search(cli.model.system, rag, 5)


def test_export_layout_manifest_and_no_pickle(tiny_module, tmp_path):
    module, data = tiny_module()
    out = export_module(module, tmp_path / "exp", data.corpus, config=REPO / "experiments" / "smoke.yaml")
    for rel in (
        "joint_rag.json",
        "README.md",
        "config.yaml",
        "corpus.jsonl",
        "corpus_memory.safetensors",
        "compressor/compressor.json",
        "compressor/compressor.safetensors",
        "compressor/model.safetensors",
        "compressor/tokenizer_config.json",
        "query_encoder/compressor.json",
        "query_encoder/compressor.safetensors",
        "generator/generator.json",
        "generator/model.safetensors",
        "index/vectors.safetensors",
        "index/meta.json",
    ):
        assert (out / rel).is_file(), rel
    suffixes = {p.suffix for p in out.rglob("*") if p.is_file()}
    assert not suffixes & {".bin", ".pt", ".pth", ".pkl", ".ckpt", ".faiss"}, suffixes
    manifest = json.loads((out / "joint_rag.json").read_text())
    assert manifest["format_version"] == artifact_mod.FORMAT_VERSION == 3
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"joint_rag.json"}
    assert set(manifest["files"]) == files, "the manifest lists every other file"
    for rel, entry in manifest["files"].items():
        assert entry == {
            "sha256": sha256((out / rel).read_bytes()).hexdigest(),
            "size": (out / rel).stat().st_size,
        }
    assert (manifest["K"], manifest["M"], manifest["system"]["num_candidates"]) == (2, 2, 4)
    assert manifest["system"]["similarity"] == "flat_cosine" and manifest["num_passages"] == len(data.corpus)
    assert manifest["system"]["index_backend"] == "exact" and manifest["selector"]["k"] == 2
    assert set(manifest["versions"]) >= {"joint_rag", "torch", "transformers", "safetensors"}
    assert "Question: {question}" in manifest["prompt_template"] and manifest["created_at"]
    assert manifest["trained_from"] == {"compressor": "tiny-bert", "generator": "tiny-llama"}
    comp = json.loads((out / "compressor" / "compressor.json").read_text())
    assert comp["num_memory_tokens"] == 2 and comp["output_dim"] == 32 and comp["backbone"] == "."
    assert (
        json.loads((out / "query_encoder" / "compressor.json").read_text())["output_dim"] is None
    )  # shares the projector
    gen = json.loads((out / "generator" / "generator.json").read_text())
    assert gen["mode"] == "memory" and gen["max_new_tokens"] == 3 and gen["train_mode"] == "frozen"
    lines = (out / "corpus.jsonl").read_text().splitlines()
    assert len(lines) == len(data.corpus) and json.loads(lines[0])["_id"] == data.corpus[0].passage_id
    assert "No evaluation was recorded" in (out / "README.md").read_text()


def test_separate_query_encoder_round_trip(tiny_module, tmp_path):
    module, data = tiny_module()
    out = export_module(module, tmp_path / "exp", data.corpus)
    rag = JointRAG.from_pretrained(out)
    qenc = rag.system.query_encoder
    assert qenc is not rag.system.compressor and qenc.projector is rag.system.compressor.projector
    _same_search(module.system, rag)


def test_shared_query_encoder_round_trip(tiny_module, tmp_path):
    module, data = tiny_module(query_encoder="shared")
    out = export_module(module, tmp_path / "exp", data.corpus)
    assert not (out / "query_encoder").exists()
    rag = JointRAG.from_pretrained(out)
    assert rag.system.query_encoder is rag.system.compressor
    _same_search(module.system, rag)


def test_lora_adapters_are_merged(tiny_module, tmp_path):
    from joint_rag.models import Compressor, Generator

    module, data = tiny_module(
        compressor=Compressor("tiny-bert", num_memory_tokens=2, max_length=48, lora_rank=2),
        generator=Generator("tiny-llama", train_mode="lora", lora_rank=2, max_new_tokens=3),
    )
    with torch.no_grad():  # make the adapters matter (LoRA B starts at zero)
        for name, p in module.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    out = export_module(module, tmp_path / "exp", data.corpus)
    assert hasattr(module.system.generator.model, "merge_and_unload"), "export must not merge the live module"
    assert "lora" not in (out / "generator" / "config.json").read_text()
    rag = JointRAG.from_pretrained(out)
    assert not any("lora" in n for n, _ in rag.system.named_parameters())
    _same_search(module.system, rag, exact=False)  # merged: equal up to rounding
    with torch.no_grad():
        memory = torch.randn(1, 2, 2, 32)
        logits = [
            s.generator(QUESTIONS[:1], ["x"], memory=memory).token_logprobs
            for s in (module.system, rag.system)
        ]
    assert torch.allclose(*logits, atol=1e-4)


def test_failed_export_leaves_nothing(tiny_module, tmp_path, monkeypatch):
    module, data = tiny_module()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(artifact_mod, "write_corpus", boom)  # fails after the models were written
    target = tmp_path / "new" / "deeper" / "exp"
    with pytest.raises(RuntimeError, match="disk full"):
        export_module(module, target, data.corpus)
    assert not (tmp_path / "new").exists(), "no output folder, temporary folder or created parent is left"
    assert list(tmp_path.iterdir()) == []


def test_export_does_not_change_the_system(tiny_module, tmp_path):
    module, data = tiny_module()
    system = module.system
    system.build_index(show_progress=False)
    index, memory = system.index, system.corpus_memory
    export_module(module, tmp_path / "exp", data.corpus)
    assert system.index is index and system.corpus_memory is memory and system.corpus is data.corpus


def test_existing_output_is_refused_then_overwritten(tiny_module, tmp_path):
    module, data = tiny_module()
    out = tmp_path / "exp"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="already exists"):
        export_module(module, out, data.corpus)
    assert (out / "keep.txt").read_text() == "mine"
    export_module(module, out, data.corpus, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "joint_rag.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def test_cli_export_missing_ckpt_writes_nothing(tmp_path, capsys):
    out = tmp_path / "exp"
    with pytest.raises(SystemExit) as info:
        main(["export", "--ckpt", str(tmp_path / "missing.ckpt"), "--out", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing.ckpt" in err and "no such file" in err
    assert list(tmp_path.iterdir()) == []


def test_cli_export_rejects_garbage_ckpt(tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    cfg = REPO / "experiments" / "smoke.yaml"
    assert main(["export", "--ckpt", str(bad), "--config", str(cfg), "--out", str(tmp_path / "exp")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1].startswith("jrag export: error: ")
        and "bad.ckpt" in err[-1]
        and "weights_only=False" in err[-1]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ckpt"]


def test_cli_export_without_config_says_what_to_pass(tmp_path, capsys):
    ckpt = tmp_path / "a" / "b" / "c" / "d" / "x.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": {}}, ckpt)
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "exp")]) == 2
    assert "--config" in capsys.readouterr().err
    assert not (tmp_path / "exp").exists()


def test_extractive_compressor_round_trip(tiny_module, tmp_path):
    from joint_rag.models import Compressor

    comp = Compressor("tiny-bert", num_memory_tokens=2, max_length=48, memory="extractive", extract_tokens=5)
    module, data = tiny_module(compressor=comp)
    out = export_module(module, tmp_path / "exp", data.corpus)
    assert json.loads((out / "joint_rag.json").read_text())["M"] == 5
    rag = JointRAG.from_pretrained(out)
    assert rag.system.compressor.memory_mode == "extractive"
    assert torch.equal(rag.system.compressor.scorer.weight, module.system.compressor.scorer.weight)
    _same_search(module.system, rag)
    ranked = [ids[:4] for ids, _ in module.system.rank(QUESTIONS, None, 10)]
    assert [r["answer"] for r in rag.answer(QUESTIONS)] == module.system.answer(QUESTIONS, None, ranked)


def test_untrained_export_with_overrides_is_reproducible(tmp_path, capsys):
    """`jrag export --untrained --config CFG --set KEY=VALUE`: no checkpoint, the overrides land
    in the export's config.yaml (passed as LightningCLI flags, no temporary YAML), and the same
    command gives the same retriever."""
    cfg = REPO / "experiments" / "smoke.yaml"
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        argv = ["export", "--untrained", "--config", str(cfg), "--out", str(out)]
        argv += ["--set", "model.similarity=cosine", "--set", "data.source.init_args.num_entities=12"]
        assert main(argv) == 0
        outs.append(out)
    saved = (outs[0] / "config.yaml").read_text()
    assert "similarity: cosine" in saved and "num_entities: 12" in saved
    assert json.loads((outs[0] / "joint_rag.json").read_text())["trained_steps"] == 0
    a, b = (JointRAG.from_pretrained(o) for o in outs)
    s_a, ids_a = a.system.search(QUESTIONS, None, 5)
    s_b, ids_b = b.system.search(QUESTIONS, None, 5)
    assert ids_a == ids_b and torch.equal(s_a, s_b)
    for argv, message in [
        (["export", "--untrained", "--out", str(tmp_path / "c")], "--untrained needs --config"),
        (["export", "--out", str(tmp_path / "c")], "either --ckpt"),
        (
            ["export", "--untrained", "--config", str(cfg), "--out", str(tmp_path / "c"), "--set", "x"],
            "KEY=VALUE",
        ),
    ]:
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
