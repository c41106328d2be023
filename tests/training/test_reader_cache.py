"""``model.reader_cache``: the frozen text reader's answer log-probabilities cached per prompt
(``training/reader_cache.py``): the same values as the generator, independent of what the cache
held before, keyed so that any change of prompt or weights misses, and refusing files and
readers it cannot trust."""

from __future__ import annotations

import sqlite3

import pytest
import torch

from joint_rag.data.collate import collate_examples
from joint_rag.losses import LMSupervisedRetrieval, Reinforce
from joint_rag.models import Generator
from joint_rag.system import eval_mode
from joint_rag.training.reader_cache import ReaderCache

QUERIES = ["Where was Ada born?", "What does Ben play?", "Where was Ada born?"]
ANSWERS = ["Lisbon", "the oboe", "Lisbon"]
PASSAGES = [["Ada was born in Lisbon."], ["Ben plays the oboe in Porto."], ["Ada was born in Lisbon."]]


def reader() -> Generator:
    torch.manual_seed(0)
    return Generator("tiny-llama", mode="text", train_mode="frozen", max_passage_tokens=24)


def test_values_match_the_generator_and_repeats_are_read_once(tmp_path):
    gen = reader()
    cache = ReaderCache(tmp_path / "r.sqlite")
    got = cache.read(gen, QUERIES, ANSWERS, PASSAGES)
    with torch.no_grad(), eval_mode(gen):
        batched = gen(QUERIES, ANSWERS, passages=PASSAGES)
        alone = gen(QUERIES[1:2], ANSWERS[1:2], passages=PASSAGES[1:2])
    assert torch.equal(got.token_mask, batched.token_mask)
    torch.testing.assert_close(got.token_logprobs, batched.token_logprobs, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.nll, batched.nll, atol=1e-4, rtol=0)
    n = int(alone.token_mask.sum())
    torch.testing.assert_close(got.token_logprobs[1, :n], alone.token_logprobs[0, :n], atol=1e-4, rtol=0)
    assert (cache.misses, cache.hits, len(cache)) == (2, 1, 2)  # row 3 repeats row 1
    again = ReaderCache(tmp_path / "r.sqlite").read(gen, QUERIES, ANSWERS, PASSAGES)
    assert torch.equal(again.token_logprobs, got.token_logprobs) and torch.equal(again.nll, got.nll)


def test_misses_are_computed_in_batches_of_miss_batch(tmp_path, monkeypatch):
    gen = reader()
    calls = []
    forward = Generator.forward

    def counting(self, queries, *args, **kwargs):
        calls.append(len(queries))
        return forward(self, queries, *args, **kwargs)

    monkeypatch.setattr(Generator, "forward", counting)
    queries = [f"Where was person {i} born?" for i in range(5)]
    passages = [[f"Person {i} was born in town {i}."] for i in range(5)]
    got = ReaderCache(tmp_path / "r.sqlite", miss_batch=2).read(gen, queries, ["x"] * 5, passages)
    assert sorted(calls) == [1, 2, 2]
    calls.clear()
    with torch.no_grad(), eval_mode(gen):
        want = gen(queries, ["x"] * 5, passages=passages)
    torch.testing.assert_close(got.token_logprobs, want.token_logprobs, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="miss_batch must be >= 1"):
        ReaderCache(tmp_path / "r.sqlite", miss_batch=0)


def test_any_change_of_prompt_answer_or_weights_misses(tmp_path):
    gen = reader()
    cache = ReaderCache(tmp_path / "r.sqlite")
    cache.read(gen, QUERIES[:1], ANSWERS[:1], PASSAGES[:1])
    cache.read(gen, QUERIES[:1], ["Porto"], PASSAGES[:1])
    cache.read(gen, QUERIES[:1], ANSWERS[:1], [["Ada was born in Porto."]])
    cache.read(gen, QUERIES[:1], ANSWERS[:1], PASSAGES[:1], instructions=["Answer briefly."])
    assert (cache.misses, cache.hits) == (4, 0)
    other = reader()
    with torch.no_grad():
        next(other.model.parameters()).add_(1e-3)
    ReaderCache.check_reader(other)
    cache.read(other, QUERIES[:1], ANSWERS[:1], PASSAGES[:1])
    assert (cache.misses, cache.hits) == (5, 0)
    cache.read(gen, QUERIES[:1], ANSWERS[:1], PASSAGES[:1])
    assert cache.hits == 1


def test_reading_under_bf16_autocast_is_its_own_key(tmp_path):
    """A bf16-mixed run's readings differ from float32 ones by more than rounding: never shared."""
    gen = reader()
    cache = ReaderCache(tmp_path / "r.sqlite")
    fp32 = cache.read(gen, QUERIES[:1], ANSWERS[:1], PASSAGES[:1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = cache.read(gen, QUERIES[:1], ANSWERS[:1], PASSAGES[:1])
        again = cache.read(gen, QUERIES[:1], ANSWERS[:1], PASSAGES[:1])
    assert (cache.misses, cache.hits) == (2, 1)
    assert torch.equal(again.token_logprobs, bf16.token_logprobs)
    assert not torch.equal(bf16.token_logprobs, fp32.token_logprobs)
    assert torch.equal(
        cache.read(gen, QUERIES[:1], ANSWERS[:1], PASSAGES[:1]).token_logprobs, fp32.token_logprobs
    )


def test_untrustworthy_files_and_readers_are_refused(tmp_path):
    text = tmp_path / "notes.sqlite"
    text.write_text("not a database\n" * 100)
    with pytest.raises(ValueError, match="notes.sqlite is not a joint-rag reader cache"):
        ReaderCache(text)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('magic', 'something else')")
    with pytest.raises(ValueError, match="other.sqlite is an SQLite file of something else"):
        ReaderCache(other)
    newer = tmp_path / "newer.sqlite"
    ReaderCache(newer).close()
    with sqlite3.connect(newer) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'format'")
    with pytest.raises(ValueError, match="has format '99', newer than this joint-rag reads"):
        ReaderCache(newer)
    corrupt = tmp_path / "corrupt.sqlite"
    gen = reader()
    cache = ReaderCache(corrupt)
    cache.read(gen, QUERIES[:1], ANSWERS[:1], PASSAGES[:1])
    with sqlite3.connect(corrupt) as db:
        db.execute("UPDATE rows SET logprobs = ?", (b"\0" * 4,))
    with pytest.raises(
        ValueError, match="holds 1 log-probabilities for a .*-token answer: the file is corrupt"
    ):
        ReaderCache(corrupt).read(gen, QUERIES[:1], ANSWERS[:1], PASSAGES[:1])
    for bad in (
        Generator("tiny-llama", mode="memory", train_mode="frozen"),
        Generator("tiny-llama", mode="text"),
    ):
        with pytest.raises(ValueError, match="reader_cache needs a frozen generator reading text"):
            ReaderCache.check_reader(bad)


def test_module_signals_do_not_depend_on_what_the_cache_held(tiny_module, tmp_path):
    """LSR's passage_loglik and Reinforce's loglik rewards: the same with a cold cache and a
    warm one, equal to the uncached module's to float rounding."""
    path = str(tmp_path / "r.sqlite")
    objectives = {"lsr": LMSupervisedRetrieval(), "rl": Reinforce(num_samples=6, k=2, reward="loglik")}

    def signals(**kwargs):
        module, data = tiny_module(
            generator=reader(), objectives=objectives, relevance_labels=False, num_candidates=4, **kwargs
        )
        module.build_index(show_progress=False)
        batch = collate_examples(data.train[:4])
        inputs = module._joint_inputs(batch, module.objective.needs)
        samples = torch.tensor([[[0, 1], [0, 1], [2, 3]]] * 4)  # (B, G, K), one set repeated
        return inputs.passage_loglik, inputs.set_reward(samples, "loglik"), module

    plain_ll, plain_rw, _ = signals()
    cold_ll, cold_rw, cold = signals(reader_cache=path)
    warm_ll, warm_rw, warm = signals(reader_cache=path)
    assert cold._reader().misses > 0 and warm._reader().misses == 0
    assert torch.equal(cold_ll, warm_ll) and torch.equal(cold_rw, warm_rw)
    torch.testing.assert_close(cold_ll, plain_ll, atol=1e-4, rtol=0)
    torch.testing.assert_close(cold_rw, plain_rw, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="reader_cache needs a frozen generator reading text"):
        tiny_module(reader_cache=path)  # the default tiny generator trains and reads memory


def test_reader_precision_benchmark_smoke(tmp_path):
    """benchmarks/reader_precision.py on the tiny reader: both paths timed, agreement measured."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "reader_precision.py"
    spec = importlib.util.spec_from_file_location("reader_precision", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "rp.json"
    args = ["--backbone", "tiny-llama", "--questions", "2", "--candidates", "3", "--repeats", "2"]
    assert bench.main([*args, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert len(result["seconds"]["fp32"]) == len(result["seconds"]["bf16"]) == 2
    assert result["setup"]["rows_per_pass"] == 6 and result["machine"]["cores"]
    agreement = result["agreement"]
    assert 0.0 < agreement["abs_loglik_diff_mean_nats"] <= agreement["abs_loglik_diff_max_nats"]
    assert 0.0 <= agreement["top1_same"] <= 1.0 and agreement["kl_softmax_mean"] >= 0.0
