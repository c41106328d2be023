"""JointRAG.from_pretrained: the same scores and answers as the in-memory system; damaged
exports refused with one line naming the file; `jrag answer`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from smoke_fit import tiny_export

from joint_rag import JointRAG
from joint_rag.cli import main
from joint_rag.export import export_module
from joint_rag.kernels import similarity
from joint_rag.pipeline import ExportFormatError

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "Where was Trolstom Collective founded?",
    "Who is Gosol Nasegi?",
    "What does Trothas Guild sell?",
]


def _make(tiny_module, tmp_path: Path, **kwargs):
    """(the module's system in eval mode with a fresh index, its export loaded, export folder)."""
    module, data = tiny_module(**kwargs)
    out = export_module(module, tmp_path / "exp", data.corpus)
    system = module.system.eval()
    system.build_index(show_progress=False)
    return system, JointRAG.from_pretrained(out), out


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """One tiny export shared by the corruption and CLI tests (copied before damaging it)."""
    return tiny_export(tmp_path_factory.mktemp("pipeline") / "exp")


@pytest.mark.parametrize("similarity_name", ["flat_cosine", "maxsim", "cosine", "dot"])
def test_same_scores_and_answers_as_the_system(tiny_module, tmp_path, similarity_name):
    system, rag, _ = _make(tiny_module, tmp_path, similarity=similarity_name)
    instructions = [None, "Prefer passages about people.", None]
    for instr in (None, instructions):
        s_sys, ids_sys = system.search(QUESTIONS, instr, 6)
        s_rag, ids_rag = rag.system.search(QUESTIONS, instr, 6)
        assert ids_sys == ids_rag and torch.equal(s_sys, s_rag)
        ranked = system.rank(QUESTIONS, instr, 10)
        got = rag.retrieve(QUESTIONS, k=5, instructions=instr)
        for (ids, scores), row in zip(ranked, got):
            assert [pid for pid, _ in row] == ids[:5]
            assert torch.equal(torch.tensor([s for _, s in row]), scores[:5])
        answers = rag.answer(QUESTIONS, instr)
        assert [a["answer"] for a in answers] == system.answer(
            QUESTIONS, instr, [ids[:4] for ids, _ in ranked]
        )
        for (ids, _), a in zip(ranked, answers):
            assert [p["id"] for p in a["passages"]] == ids[: system.selector.k]
            assert set(a["passages"][0]) == {"id", "title", "text", "score"}


@pytest.mark.parametrize("similarity_name", ["maxsim", "flat_cosine"])
def test_search_is_exact_for_the_configured_similarity(tiny_module, tmp_path, similarity_name):
    """The index searches by the YAML similarity itself (exact MaxSim, no proxy): its top-k is the
    dense scorer's over every passage (up to the order of scores tied within 1e-5: the tiny
    random models score every passage alike)."""
    system, rag, _ = _make(tiny_module, tmp_path, similarity=similarity_name)
    with torch.no_grad():
        q = system.encode_queries(QUESTIONS)  # (B, R, D)
        dense = similarity(q, system.retrieval_of(system.corpus.ids), similarity_name)  # (B, N)
    want = dense.topk(5, dim=1).values
    for scores, ids in (system.search(QUESTIONS, None, 5), rag.system.search(QUESTIONS, None, 5)):
        assert torch.allclose(scores, want, atol=1e-5)
        rows = torch.tensor([[system.corpus.index_of(p) for p in row] for row in ids])
        assert torch.allclose(dense.gather(1, rows), scores, atol=1e-5)  # each id carries its own score


def test_text_mode_generator_round_trip(tiny_module, tmp_path):
    from joint_rag.models import Generator

    system, rag, out = _make(
        tiny_module, tmp_path, generator=Generator("tiny-llama", mode="text", max_new_tokens=4)
    )
    assert rag.system.generator.mode == "text" and not (out / "corpus_memory.safetensors").exists()
    ranked = [ids[:4] for ids, _ in system.rank(QUESTIONS, None, 10)]
    assert [a["answer"] for a in rag.answer(QUESTIONS)] == system.answer(QUESTIONS, None, ranked)


def test_generator_logprobs_identical(tiny_module, tmp_path):
    system, rag, _ = _make(tiny_module, tmp_path)
    memory = torch.randn(len(QUESTIONS), 2, 2, 32)
    with torch.no_grad():
        a = system.generator(QUESTIONS, ["a", "bb", "ccc"], memory=memory).token_logprobs
        b = rag.system.generator(QUESTIONS, ["a", "bb", "ccc"], memory=memory).token_logprobs
    assert torch.equal(a, b)
    assert not rag.system.training and not rag.system.generator.model.training


def test_bad_questions_are_refused(exported):
    rag = JointRAG.from_pretrained(exported)
    with pytest.raises(ValueError, match="no questions"):
        rag.answer([])
    with pytest.raises(ValueError, match="no questions"):
        rag.retrieve([])
    with pytest.raises(ValueError, match="list of questions"):
        rag.answer("a single string")
    with pytest.raises(ValueError, match="question 1 is empty"):
        rag.answer(["ok", "  "])
    with pytest.raises(ValueError, match="k must be"):
        rag.retrieve(["ok"], k=0)


def _edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _corrupt(folder: Path, how: str) -> str:
    """Damage a copy of an export; returns text the error must contain."""
    if how == "missing_weights":
        (folder / "generator" / "model.safetensors").unlink()
        return "generator/model.safetensors"
    if how == "missing_manifest":
        (folder / "joint_rag.json").unlink()
        return "joint_rag.json: missing"
    if how == "garbage_json":
        (folder / "joint_rag.json").write_text("{not json")
        return "joint_rag.json: not valid JSON"
    if how == "garbage_compressor_json":
        (folder / "compressor" / "compressor.json").write_text("[1, 2]")
        return "compressor.json: expected a JSON object"
    if how == "unknown_compressor_key":
        _edit_json(folder / "compressor" / "compressor.json", memory_kind="tokens")
        return "['memory_kind'] are not arguments of Compressor"
    if how == "newer_format":
        _edit_json(folder / "joint_rag.json", format_version=999)
        return "upgrade joint-rag"
    if how == "older_format":
        _edit_json(folder / "joint_rag.json", format_version=1)
        return "re-export it with this version: `jrag export --ckpt"
    if how == "truncated_extras":
        path = folder / "compressor" / "compressor.safetensors"
        path.write_bytes(path.read_bytes()[:100])
        return "compressor.safetensors: not a readable safetensors file"
    if how == "truncated_backbone":
        path = folder / "compressor" / "model.safetensors"
        path.write_bytes(path.read_bytes()[:1000])
        return "cannot build the compressor"
    if how == "corpus_mismatch":
        lines = (folder / "corpus.jsonl").read_text().splitlines()
        (folder / "corpus.jsonl").write_text("\n".join(lines[:-1]) + "\n")
        return "the folder mixes two exports"
    if how == "bad_corpus_line":
        with (folder / "corpus.jsonl").open("a") as f:
            f.write("{oops\n")
        return "corpus.jsonl:"
    if how == "index_of_another_similarity":
        _edit_json(folder / "index" / "meta.json", similarity="dot")
        return "built for similarity 'dot', expected 'flat_cosine'"
    if how == "memory_shape":
        from safetensors.torch import save_file

        save_file({"memory": torch.zeros(3, 2, 32)}, folder / "corpus_memory.safetensors")
        return "corpus_memory.safetensors: expected 'memory' of shape"
    if how == "k_above_c":
        manifest = json.loads((folder / "joint_rag.json").read_text())
        manifest["selector"]["k"] = manifest["K"] = 9
        (folder / "joint_rag.json").write_text(json.dumps(manifest))
        return "K must be <= C"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "missing_weights",
        "missing_manifest",
        "garbage_json",
        "garbage_compressor_json",
        "unknown_compressor_key",
        "newer_format",
        "older_format",
        "truncated_extras",
        "truncated_backbone",
        "corpus_mismatch",
        "bad_corpus_line",
        "index_of_another_similarity",
        "memory_shape",
        "k_above_c",
    ],
)
def test_damaged_export_is_refused(exported, tmp_path, how):
    folder = Path(shutil.copytree(exported, tmp_path / "copy"))
    expected = _corrupt(folder, how)
    with pytest.raises(ExportFormatError) as info:
        JointRAG.from_pretrained(folder)
    message = str(info.value)
    assert expected in message, message
    assert "re-export" in message or "upgrade" in message


def test_parts_of_another_export_with_the_same_shapes_are_refused(exported, tmp_path):
    """An index copied from an export of another (same-shaped) encoder, or a corpus whose text
    changed, no longer loads silently: the index's fingerprints name both sides."""
    other_export = tiny_export(tmp_path / "other", seed=1)  # other weights, the same shapes
    folder = Path(shutil.copytree(exported, tmp_path / "mixed"))
    shutil.rmtree(folder / "index")
    shutil.copytree(other_export / "index", folder / "index")
    with pytest.raises(
        ExportFormatError, match=r"built with encoder sha256:\w+, but this encoder is sha256:\w+"
    ):
        JointRAG.from_pretrained(folder)
    folder = Path(shutil.copytree(exported, tmp_path / "edited"))
    lines = (folder / "corpus.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    lines[0] = json.dumps({**first, "text": first["text"] + " (edited)"})
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(
        ExportFormatError, match=r"built with corpus sha256:\w+, but this corpus is sha256:\w+"
    ):
        JointRAG.from_pretrained(folder)


def test_not_a_folder(tmp_path):
    with pytest.raises(ExportFormatError, match="not a folder"):
        JointRAG.from_pretrained(tmp_path / "nothing")


def test_cli_answer_empty_question(exported, capsys):
    with pytest.raises(SystemExit) as info:
        main(["answer", "--model", str(exported), " "])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "empty" in err


def test_cli_answer_on_a_damaged_export_is_one_line(exported, tmp_path, capsys):
    folder = Path(shutil.copytree(exported, tmp_path / "copy"))
    _corrupt(folder, "newer_format")
    assert main(["answer", "--model", str(folder), "Who?"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jrag answer: error: ") and "upgrade joint-rag" in err[0]
    with pytest.raises(ExportFormatError):  # --traceback: the exception itself
        main(["answer", "--traceback", "--model", str(folder), "Who?"])


def test_cli_answer_end_to_end(exported):
    env = dict(os.environ, HF_HUB_OFFLINE="1", JRAG_PROGRESS="0", OMP_WAIT_POLICY="PASSIVE")
    cmd = [sys.executable, "-m", "joint_rag.cli", "answer", "--model", str(exported)]
    res = subprocess.run(
        [*cmd, "--json", *QUESTIONS[:2]], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    printed = json.loads(res.stdout)
    expected = JointRAG.from_pretrained(exported).answer(QUESTIONS[:2])
    assert [p["answer"] for p in printed] == [e["answer"] for e in expected]
    assert [p["passages"] for p in printed] == [e["passages"] for e in expected]


def test_cli_answer_prints_answer_and_passages(exported, capsys):
    assert main(["answer", "--model", str(exported), QUESTIONS[0]]) == 0
    out = capsys.readouterr().out
    expected = JointRAG.from_pretrained(exported).answer(QUESTIONS[:1])[0]
    assert "Q: Where was Trolstom Collective founded?" in out and "A:" in out
    assert all(p["id"] in out for p in expected["passages"])


def test_answer_latency_benchmark_smoke(exported, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("answer_latency", REPO / "benchmarks" / "answer_latency.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "lat.json"
    args = ["--model", str(exported), "--repeats", "1", "--warmup", "0", "--max-new-tokens", "2"]
    assert bench.main([*args, "--passage-tokens", "32", "--m-values", "1,4", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["name"] for r in result["rows"]] == [
        "text",
        "memory_trained_M2",
        "memory_random_M1",
        "memory_random_M4",
    ]
    assert result["setup"]["passage_tokens_mean"] == 32 and result["machine"]["cores"]
    assert set(result["ratios"]) == {"memory_trained_M2", "memory_random_M1", "memory_random_M4"}
