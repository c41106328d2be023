"""JointRAG.from_pretrained: same scores and answers as the in-memory module; damaged exports refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from joint_rag import JointRAG
from joint_rag.cli import main
from joint_rag.export import export_module
from joint_rag.models.scoring import score_candidates
from joint_rag.pipeline import ExportFormatError

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "Where was Trolstom Collective founded?",
    "Who is Gosol Nasegi?",
    "What does Trothas Guild sell?",
]


def _make(tiny_module, tmp_path: Path, **kwargs):
    """(module in eval mode with a fresh index, its export loaded as JointRAG, export folder)."""
    module, data = tiny_module(**kwargs)
    out = export_module(module, tmp_path / "exp", data.corpus)
    module.eval().build_index(show_progress=False)
    return module, JointRAG.from_pretrained(out), out


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """One tiny export shared by the corruption and CLI tests (copied before damaging it)."""
    from joint_rag.data.synthetic import SyntheticSource
    from joint_rag.models import Compressor, Generator, TopKSelector
    from joint_rag.training import JointRAGModule

    torch.manual_seed(0)
    data = SyntheticSource(num_entities=12, seed=0).load()
    module = JointRAGModule(
        Compressor("tiny-bert", num_memory_tokens=2, max_length=48),
        Generator("tiny-llama", max_new_tokens=3),
        selector=TopKSelector(k=2),
        num_candidates=4,
    )
    return export_module(module, tmp_path_factory.mktemp("pipeline") / "exp", data.corpus)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"similarity": "maxsim"}, {"similarity": "cosine"}],
    ids=["flat_cosine", "maxsim", "cosine"],
)
def test_same_scores_and_answers_as_module(tiny_module, tmp_path, kwargs):
    module, rag, _ = _make(tiny_module, tmp_path, **kwargs)
    instructions = [None, "Prefer passages about people.", None]
    for instr in (None, instructions):
        s_mod, ids_mod = module.search(QUESTIONS, instr, 6)
        s_rag, ids_rag = rag.search(QUESTIONS, instr, 6)
        assert ids_mod == ids_rag and torch.equal(s_mod, s_rag)
        ranked, cands = module.rank(QUESTIONS, instr)
        # exact scores as the module computes them in rank(), best first
        q = module.encode_queries(QUESTIONS, instr)
        with torch.no_grad():
            expected = [
                score_candidates(q[b : b + 1], module._retrieval_for(row).unsqueeze(0), module.similarity)[0]
                for b, row in enumerate(ranked)
            ]
        got = rag.retrieve(QUESTIONS, k=5, instructions=instr)
        for b, row in enumerate(got):
            assert [pid for pid, _ in row] == ranked[b][:5]
            assert torch.equal(torch.tensor([s for _, s in row], dtype=torch.float32), expected[b][:5])
        answers = rag.answer(QUESTIONS, instr)
        assert [a["answer"] for a in answers] == module.answer_from_candidates(QUESTIONS, instr, cands)
        for b, a in enumerate(answers):
            assert [p["id"] for p in a["passages"]] == ranked[b][: module.selector.k]
            assert a["passages"][0]["score"] == got[b][0][1]
            assert set(a["passages"][0]) == {"id", "title", "text", "score"}


def test_text_mode_generator_round_trip(tiny_module, tmp_path):
    from joint_rag.models import Generator

    module, rag, _ = _make(
        tiny_module, tmp_path, generator=Generator("tiny-llama", mode="text", max_new_tokens=4)
    )
    assert rag.generator.mode == "text"
    _, cands = module.rank(QUESTIONS, None)
    assert [a["answer"] for a in rag.answer(QUESTIONS)] == module.answer_from_candidates(
        QUESTIONS, None, cands
    )


def test_generator_logprobs_identical(tiny_module, tmp_path):
    module, rag, _ = _make(tiny_module, tmp_path)
    memory = torch.randn(len(QUESTIONS), 2, 2, 32)
    with torch.no_grad():
        a = module.generator(QUESTIONS, ["a", "bb", "ccc"], memory=memory).token_logprobs
        b = rag.generator(QUESTIONS, ["a", "bb", "ccc"], memory=memory).token_logprobs
    assert torch.equal(a, b)
    assert not rag.training and not rag.generator.model.training


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
    if how == "newer_format":
        manifest = json.loads((folder / "joint_rag.json").read_text())
        (folder / "joint_rag.json").write_text(json.dumps({**manifest, "format_version": 999}))
        return "upgrade joint-rag"
    if how == "truncated_extras":
        path = folder / "compressor" / "extras.safetensors"
        path.write_bytes(path.read_bytes()[:100])
        return "extras.safetensors: not a readable safetensors file"
    if how == "truncated_backbone":
        path = folder / "compressor" / "model.safetensors"
        path.write_bytes(path.read_bytes()[:1000])
        return "cannot load the backbone"
    if how == "corpus_mismatch":
        lines = (folder / "corpus.jsonl").read_text().splitlines()
        (folder / "corpus.jsonl").write_text("\n".join(lines[:-1]) + "\n")
        return "the folder mixes two exports"
    if how == "bad_corpus_line":
        with (folder / "corpus.jsonl").open("a") as f:
            f.write("{oops\n")
        return "corpus.jsonl:"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "missing_weights",
        "missing_manifest",
        "garbage_json",
        "garbage_compressor_json",
        "newer_format",
        "truncated_extras",
        "truncated_backbone",
        "corpus_mismatch",
        "bad_corpus_line",
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


def test_not_a_folder(tmp_path):
    with pytest.raises(ExportFormatError, match="not a folder"):
        JointRAG.from_pretrained(tmp_path / "nothing")


def test_cli_answer_empty_question(exported, capsys):
    with pytest.raises(SystemExit) as info:
        main(["answer", "--model", str(exported), " "])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "empty" in err


def test_cli_answer_end_to_end(exported):
    env = dict(os.environ, HF_HUB_OFFLINE="1", JRAG_PROGRESS="0", OMP_WAIT_POLICY="PASSIVE")
    # what the `jrag` entry point runs (`python -m joint_rag.cli` would register the extra
    # commands on a second copy of the cli module)
    jrag = "import sys; from joint_rag.cli import main; sys.exit(main())"
    cmd = [sys.executable, "-c", jrag, "answer", "--model", str(exported)]
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
    assert result["setup"]["passage_tokens_mean"] == 32 and result["machine"]["cpu_count"]
    assert set(result["ratios"]) == {"memory_trained_M2", "memory_random_M1", "memory_random_M4"}
