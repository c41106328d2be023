"""Exports that cannot be mixed up (issue 14, item 4): every fault of an export folder is refused
at load with one ExportFormatError naming the file and saying what to do (exit 2 through
`jrag`), and a killed or terminated `jrag export` leaves nothing that the next export does not
remove.

Faults: a part copied from another export with the same shapes (index, corpus memory, module
folder), an edited byte, a pickle file in the folder, a symbolic link, a manifest path with
``..``, shapes that disagree, a truncated or foreign index, a newer or older format, SIGKILL and
SIGTERM during `jrag export`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from smoke_fit import tiny_export

from joint_rag import JointRAG
from joint_rag.atomic import SIGTERM_EXIT, _host_tag, atomic_write, remove_stale
from joint_rag.cli import main
from joint_rag.errors import ExportFormatError

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "experiments" / "smoke.yaml")


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> tuple[Path, Path]:
    """Two exports of the same shapes and other weights: (ours, another)."""
    root = tmp_path_factory.mktemp("faults")
    return tiny_export(root / "ours"), tiny_export(root / "other", seed=1)


@pytest.fixture
def folder(exports, tmp_path) -> Path:
    """A copy of our export to damage."""
    return Path(shutil.copytree(exports[0], tmp_path / "exp"))


def _refused(folder: Path, *expected: str) -> str:
    """Loading ``folder`` raises one ExportFormatError, one line, containing ``expected`` and
    what to do; returns the message."""
    with pytest.raises(ExportFormatError) as info:
        JointRAG.from_pretrained(folder)
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    for text in expected:
        assert text in message, message
    assert "re-export" in message or "upgrade" in message, message
    return message


def _edit_manifest(folder: Path, **changes) -> None:
    path = folder / "joint_rag.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


# ----------------------------------------------------------------------------- mixed parts
def test_index_of_another_export_with_the_same_shapes(exports, folder):
    shutil.rmtree(folder / "index")
    shutil.copytree(exports[1] / "index", folder / "index")
    _refused(folder, f"{folder / 'index'}: built with encoder sha256:", "the index belongs to another run")


def test_corpus_memory_of_another_export_with_the_same_shapes(exports, folder):
    shutil.copyfile(exports[1] / "corpus_memory.safetensors", folder / "corpus_memory.safetensors")
    _refused(
        folder, f"{folder / 'corpus_memory.safetensors'}: the content is not what joint_rag.json records"
    )


@pytest.mark.parametrize(
    ("part", "expected"),
    [
        ("generator", "generator/model.safetensors: the content is not what joint_rag.json records"),
        ("query_encoder", "query_encoder/model.safetensors"),
        ("compressor", "built with encoder sha256:"),  # the index's fingerprint names it first
    ],
)
def test_module_folder_of_another_export_with_the_same_shapes(exports, folder, part, expected):
    shutil.rmtree(folder / part)
    shutil.copytree(exports[1] / part, folder / part)
    _refused(folder, expected)


@pytest.mark.parametrize(
    "rel", ["generator/model.safetensors", "index/vectors.safetensors", "corpus_memory.safetensors"]
)
def test_one_edited_byte(folder, rel):
    path = folder / rel
    data = bytearray(path.read_bytes())
    data[-4] ^= 1  # the lowest mantissa bit of the last float32: the file still parses, finite
    path.write_bytes(bytes(data))
    _refused(folder, f"{path}: the content is not what joint_rag.json records", "edited")


def test_edited_model_card(folder):
    with (folder / "README.md").open("a") as f:
        f.write("\nmy notes\n")
    _refused(folder, f"{folder / 'README.md'}: the content is not what joint_rag.json records")


def test_extra_unlisted_weight_file(folder):
    shutil.copyfile(folder / "generator" / "model.safetensors", folder / "generator" / "extra.safetensors")
    _refused(folder, f"{folder / 'generator' / 'extra.safetensors'}: not listed in joint_rag.json")


def test_missing_listed_file(folder):
    (folder / "generator" / "generation_config.json").unlink()
    _refused(folder, "missing generator/generation_config.json", "incomplete")


def test_hidden_entries_are_ignored(folder):
    """Nothing loads ``.DS_Store`` or a ``.cache/`` folder: they do not stop a load."""
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    (folder / "generator" / ".cache").mkdir()
    assert JointRAG.from_pretrained(folder).manifest["format_version"] == 3


# ----------------------------------------------------------------------------- no pickle, no links
class _Unpickled:
    """Unpickling this creates ``marker``: a loader that unpickles would leave it behind."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize(
    "rel",
    ["generator/pytorch_model.bin", "compressor/model.pt", "index/vectors.pkl", "training_state.pth"],
)
def test_pickle_file_is_refused_and_never_unpickled(folder, tmp_path, rel):
    marker = tmp_path / "unpickled"
    torch.save({"weights": _Unpickled(marker)}, folder / rel)
    _refused(folder, f"{folder / rel}: not a kind of file an export holds", "never loaded")
    assert not marker.exists()


def test_bin_in_place_of_the_query_encoder_safetensors(folder, tmp_path):
    """The issue's case: ``pytorch_model.bin`` instead of ``model.safetensors`` (transformers
    would load it)."""
    weights = load_file(folder / "query_encoder" / "model.safetensors")
    (folder / "query_encoder" / "model.safetensors").unlink()
    torch.save(weights, folder / "query_encoder" / "pytorch_model.bin")
    _refused(folder, "query_encoder/pytorch_model.bin: not a kind of file an export holds")


@pytest.mark.parametrize("what", ["file", "folder", "inside"])
def test_symbolic_link(exports, folder, tmp_path, what):
    if what == "file":  # the same bytes, outside the folder
        outside = Path(shutil.copyfile(folder / "corpus.jsonl", tmp_path / "corpus.jsonl"))
        (folder / "corpus.jsonl").unlink()
        (folder / "corpus.jsonl").symlink_to(outside)
        link = folder / "corpus.jsonl"
    elif what == "folder":
        shutil.rmtree(folder / "generator")
        (folder / "generator").symlink_to(exports[0] / "generator", target_is_directory=True)
        link = folder / "generator"
    else:  # even to a file of the folder: only regular files
        (folder / "README.md").unlink()
        (folder / "README.md").symlink_to("corpus.jsonl")
        link = folder / "README.md"
    _refused(folder, f"{link}: a symbolic link (to ", "never follows links")


@pytest.mark.parametrize("entry", ["../outside.json", "/etc/passwd", "index/../../x.json", "a//b.json"])
def test_manifest_path_that_leaves_the_folder(folder, entry):
    files = json.loads((folder / "joint_rag.json").read_text())["files"]
    files[entry] = {"sha256": "0" * 64, "size": 1}
    _edit_manifest(folder, files=files)
    _refused(folder, f"{folder / 'joint_rag.json'}: the files entry {entry!r} leaves the export folder")


# ----------------------------------------------------------------------------- shapes at load
def test_index_dimension_other_than_the_query_encoder_at_load(folder):
    """Index vectors of another width (meta.json and fingerprint consistent) are refused by
    ``from_pretrained``, not at the first query."""
    vectors = load_file(folder / "index" / "vectors.safetensors")["vectors"]  # (N, R, D)
    wider = torch.cat([vectors, vectors[..., :1]], dim=-1)  # (N, R, D + 1)
    save_file({"vectors": wider.contiguous()}, folder / "index" / "vectors.safetensors")
    meta = json.loads((folder / "index" / "meta.json").read_text())
    (folder / "index" / "meta.json").write_text(json.dumps({**meta, "shape": list(wider.shape)}))
    _refused(folder, "index/vectors.safetensors: vectors of shape", f"gives (B, {vectors.shape[1]}, 32)")


def test_query_encoder_that_cannot_encode_at_load(folder, monkeypatch):
    """A query encoder whose forward fails on shapes (e.g. a backbone of another width under the
    shared projector) is named at load, not at the first query."""
    from joint_rag.system import RAGSystem

    def mismatched(self, queries, instructions=None):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (1x48 and 32x32)")

    monkeypatch.setattr(RAGSystem, "encode_queries", mismatched)
    _refused(folder, f"{folder / 'query_encoder'}: the query encoder cannot encode a query (mat1 and mat2")


@pytest.mark.parametrize("shape", ["rows", "slots"])
def test_corpus_memory_shape_at_load(folder, shape):
    memory = load_file(folder / "corpus_memory.safetensors")["memory"]  # (N, M, H)
    memory = memory[:-1] if shape == "rows" else memory[:, :1]
    save_file({"memory": memory.contiguous()}, folder / "corpus_memory.safetensors")
    _refused(folder, "corpus_memory.safetensors: expected 'memory' of shape (14, 2, 32)")


# ----------------------------------------------------------------------------- index, formats
def test_truncated_index(folder):
    path = folder / "index" / "vectors.safetensors"
    path.write_bytes(path.read_bytes()[:200])
    _refused(folder, f"{folder / 'index'}: unreadable passage_ids.json or vectors.safetensors")


@pytest.mark.parametrize("how", ["faiss_file", "foreign_meta"])
def test_foreign_index(folder, how):
    if how == "faiss_file":  # another tool's index folder
        (folder / "index" / "index.faiss").write_bytes(b"IxFl" + bytes(60))
        _refused(folder, "index/index.faiss: not a kind of file an export holds")
    else:
        (folder / "index" / "meta.json").write_text(json.dumps({"dim": 32, "metric": "ip"}))
        _refused(folder, "index format_version None is not 2")


def test_newer_format(folder, capsys):
    _edit_manifest(folder, format_version=4)
    _refused(folder, "format_version 4 was written by a newer joint-rag", "upgrade joint-rag")
    assert main(["answer", "--model", str(folder), "Who?"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jrag answer: error: ") and "upgrade joint-rag" in err[0]


def test_format_2_loads_with_a_warning_and_1_is_refused(folder):
    """Version 2 (the same layout without digests) still loads, with a warning that swaps
    cannot be detected; version 1 asks for the re-export command."""
    manifest = json.loads((folder / "joint_rag.json").read_text())
    del manifest["files"]
    (folder / "joint_rag.json").write_text(json.dumps({**manifest, "format_version": 2}))
    with pytest.warns(UserWarning, match="format_version 2 has no file digests.*re-export"):
        JointRAG.from_pretrained(folder)
    (folder / "generator" / "pytorch_model.bin").write_bytes(b"x")  # still no pickle in version 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _refused(folder, "generator/pytorch_model.bin: not a kind of file")
    _edit_manifest(folder, format_version=1)
    _refused(folder, "format_version 1 was written by an older joint-rag", "jrag export --ckpt")


def test_version_3_without_digests(folder):
    manifest = json.loads((folder / "joint_rag.json").read_text())
    del manifest["files"]
    (folder / "joint_rag.json").write_text(json.dumps(manifest))
    _refused(folder, "missing keys ['files']")


def test_cli_answer_on_a_mixed_export_is_one_line(exports, folder, capsys):
    shutil.copyfile(exports[1] / "corpus_memory.safetensors", folder / "corpus_memory.safetensors")
    assert main(["answer", "--model", str(folder), "Who?"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jrag answer: error: "), err
    assert "corpus_memory.safetensors: the content is not what joint_rag.json records" in err[0]


# ----------------------------------------------------------------------------- killed exports
#: `jrag export` in a subprocess that stops for good once the corpus is written: the temporary
#: folder then holds the models and the index, and the process waits to be signalled
# SIGINT back to Python's KeyboardInterrupt: a suite started in the background by a
# non-interactive shell inherits SIGINT ignored, and the export would never see the Ctrl-C
_PAUSED_EXPORT = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
import joint_rag.artifact as artifact
write = artifact.write_corpus
def paused(corpus, path):
    write(corpus, path)
    print("PAUSED", flush=True)
    time.sleep(300)
artifact.write_corpus = paused
from joint_rag.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _export_paused(work: Path) -> subprocess.Popen:
    """Start ``jrag export --untrained`` to ``work/exp`` and return once it is mid-export."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", JRAG_PROGRESS="0")
    cmd = [sys.executable, "-c", _PAUSED_EXPORT, "export", "--untrained", "--config", SMOKE]
    stderr = (work.parent / f"{work.name}.stderr").open("w")
    proc = subprocess.Popen(
        [*cmd, "--out", str(work / "exp")],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    watchdog = threading.Timer(240, proc.kill)  # never hang the suite
    watchdog.start()
    try:
        for line in proc.stdout:
            if line.strip() == "PAUSED":
                return proc
    finally:
        watchdog.cancel()
    proc.wait()
    raise AssertionError(
        f"the export ended before it paused: {(work.parent / f'{work.name}.stderr').read_text()}"
    )


def _temporaries(work: Path) -> list[Path]:
    return sorted(work.glob(".exp.tmp-*"))


def test_sigkill_mid_export_then_the_next_export_removes_its_folder(tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    proc = _export_paused(work)
    [tmp] = _temporaries(work)
    assert (tmp / "generator" / "model.safetensors").is_file() and not (tmp / "joint_rag.json").exists()
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert _temporaries(work) == [tmp] and not (work / "exp").exists()  # nothing could clean up
    assert main(["export", "--untrained", "--config", SMOKE, "--out", str(work / "exp")]) == 0
    assert _temporaries(work) == [], "the next export to the same place removed the dead one's folder"
    assert sorted(p.name for p in work.iterdir()) == ["exp"]
    JointRAG.from_pretrained(work / "exp")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_or_sigint_mid_export_leaves_nothing(tmp_path, sig):
    work = tmp_path / "work"
    work.mkdir()
    proc = _export_paused(work)
    assert len(_temporaries(work)) == 1
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    assert list(work.iterdir()) == [], "no temporary folder, no partial export"
    err = (tmp_path / "work.stderr").read_text().strip().splitlines()
    if sig == signal.SIGTERM:
        assert code == SIGTERM_EXIT == 143
        assert err[-1] == "jrag export: terminated (SIGTERM); removing partial output", err[-3:]
    else:  # KeyboardInterrupt: Python ends by the signal after unwinding
        assert code == -signal.SIGINT and err[-1] == "KeyboardInterrupt", err[-3:]


def test_only_temporaries_of_dead_writers_are_removed(tmp_path):
    """``remove_stale``: a dead writer's folder and file go; this process's, another host's and
    the earlier naming's stay; a folder a killed replace moved aside is put back."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = _host_tag()
    target = tmp_path / "exp"
    gone = [tmp_path / f".exp.tmp-{dead.pid}@{host}-abc", tmp_path / f".exp.tmp-{dead.pid}@{host}-def"]
    kept = [
        tmp_path / f".exp.tmp-{os.getpid()}@{host}-live",
        tmp_path / f".exp.tmp-{dead.pid}@{'0' * 8 if host != '0' * 8 else '1' * 8}-elsewhere",
        tmp_path / ".exp.tmp-legacy",
        tmp_path / f".other.tmp-{dead.pid}@{host}-x",
    ]
    for p in [gone[0], *kept]:
        p.mkdir()
    gone[1].write_text("half a file")
    moved = tmp_path / f".exp.tmp-{dead.pid}@{host}-ghi.old"
    moved.mkdir()
    (moved / "joint_rag.json").write_text("{}")
    assert sorted(remove_stale(target)) == sorted([*gone, moved])
    assert sorted(tmp_path.iterdir()) == sorted([*kept, target])
    assert (target / "joint_rag.json").read_text() == "{}", "the moved-aside export is back"
    stale_file = tmp_path / f".notes.txt.tmp-{dead.pid}@{host}-z"
    stale_file.write_text("x")
    atomic_write(tmp_path / "notes.txt", "done")
    assert not stale_file.exists() and (tmp_path / "notes.txt").read_text() == "done"
