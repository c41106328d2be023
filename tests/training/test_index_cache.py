"""``model.index_cache``: a frozen plain passage encoder's corpus vectors are encoded once and
read back exactly; anything they depend on changes the key; a bad file is ignored."""

from __future__ import annotations

import pytest
import torch

from joint_rag.training import index_cache


def _cached(tiny_module, folder, **kwargs):
    from joint_rag.losses import Similarity
    from joint_rag.models import Compressor

    torch.manual_seed(0)  # the same random tiny encoder in every call (a run of the same row)
    opts = dict(
        compressor=Compressor("tiny-bert", num_memory_tokens=2, max_length=48, retrieval="mean_pool"),
        objectives={"similarity": Similarity()},
        freeze_passage_encoder=True,
        cache_corpus_memory=False,
        similarity="cosine",
        index_cache=str(folder),
    )
    opts.update(kwargs)
    return tiny_module(**opts)


def _count_encodes(module) -> list[int]:
    calls: list[int] = []
    real = module.system.encode_corpus
    module.system.encode_corpus = lambda *a, **k: calls.append(1) or real(*a, **k)
    return calls


def test_second_build_reads_the_vectors_and_encodes_nothing(tiny_module, tmp_path):
    first, _ = _cached(tiny_module, tmp_path)
    calls = _count_encodes(first)
    first.build_index(show_progress=False)
    assert calls == [1] and len(list(tmp_path.glob("*.safetensors"))) == 1
    second, _ = _cached(tiny_module, tmp_path)  # a fresh run of the same grid row
    calls = _count_encodes(second)
    second.build_index(show_progress=False)
    assert calls == [], "a cache hit must not encode the corpus"
    assert torch.equal(second.system.index.vectors, first.system.index.vectors)
    fresh, _ = _cached(tiny_module, tmp_path, index_cache=None)
    fresh.build_index(show_progress=False)  # what encoding gives without the cache
    assert torch.equal(fresh.system.index.vectors, second.system.index.vectors)


def test_key_follows_weights_corpus_and_settings(tiny_module, tmp_path):
    module, data = _cached(tiny_module, tmp_path)
    key = module._index_cache_key()
    assert key == module._index_cache_key()  # deterministic
    with torch.no_grad():
        next(module.system.compressor.backbone.parameters()).view(-1)[0] += 1e-3
    assert module._index_cache_key() != key, "a changed weight must change the key"
    other, _ = _cached(tiny_module, tmp_path)
    from joint_rag.data.types import Corpus

    other.system.attach_corpus(Corpus(list(data.corpus)[:-1]))
    assert other._index_cache_key() != key, "another corpus must change the key"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _cached(tiny_module, tmp_path)[0]._index_cache_key() != key, "precision is part of the key"
    unit, _ = _cached(tiny_module, tmp_path)
    unit.system.compressor.normalize_retrieval = True
    assert unit._index_cache_key() != key, "unit vectors are other vectors"
    threads = torch.get_num_threads()
    try:  # CPU kernels round by thread count: another count is another key
        torch.set_num_threads(threads + 1)
        assert _cached(tiny_module, tmp_path)[0]._index_cache_key() != key
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "why", [{"freeze_passage_encoder": False}, {"cache_corpus_memory": True}, {"retrieval": "memory"}]
)
def test_off_when_the_vectors_could_change(tiny_module, tmp_path, why):
    from joint_rag.models import Compressor

    kwargs = dict(why)
    if "retrieval" in kwargs:
        torch.manual_seed(0)
        kwargs = {
            "compressor": Compressor("tiny-bert", num_memory_tokens=2, max_length=48, retrieval="memory")
        }
    module, _ = _cached(tiny_module, tmp_path, **kwargs)
    assert module._index_cache_key() is None
    module.build_index(show_progress=False)
    assert not list(tmp_path.glob("*")), "nothing may be cached when the vectors can change"


@pytest.mark.parametrize("damage", ["truncate", "foreign"])
def test_a_damaged_or_foreign_file_is_ignored_and_rewritten(tiny_module, tmp_path, damage):
    module, _ = _cached(tiny_module, tmp_path)
    module.build_index(show_progress=False)
    (path,) = tmp_path.glob("*.safetensors")
    key = module._index_cache_key()
    good = index_cache.load_vectors(tmp_path, key, len(module.system.corpus))
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:50])
    else:  # a readable file under another key
        index_cache.save_vectors(tmp_path, "0" * 64, torch.zeros_like(good))
        path.write_bytes(index_cache.cache_file(tmp_path, "0" * 64).read_bytes())
    assert index_cache.load_vectors(tmp_path, key, good.shape[0]) is None
    again, _ = _cached(tiny_module, tmp_path)
    calls = _count_encodes(again)
    again.build_index(show_progress=False)
    assert calls == [1] and torch.equal(again.system.index.vectors, module.system.index.vectors)
    assert torch.equal(index_cache.load_vectors(tmp_path, key, good.shape[0]), good)  # rewritten


def test_build_index_refuses_vectors_of_the_wrong_size(tiny_module, tmp_path):
    module, _ = _cached(tiny_module, tmp_path)
    module.build_index(show_progress=False)
    with pytest.raises(ValueError, match="whole corpus"):
        module.system.build_index(vectors=module.system.index.vectors[:-1])


def test_another_similarity_reads_the_same_file_and_gets_the_encoded_index(tiny_module, tmp_path):
    """The encoder's own vectors are cached, not what one index keeps of them: a dot-product
    run after a cosine run reads the file and builds the index encoding would give."""
    cos, _ = _cached(tiny_module, tmp_path)
    cos.build_index(show_progress=False)
    dot, _ = _cached(tiny_module, tmp_path, similarity="dot")
    calls = _count_encodes(dot)
    dot.build_index(show_progress=False)
    assert calls == []
    plain, _ = _cached(tiny_module, tmp_path, similarity="dot", index_cache=None)
    plain.build_index(show_progress=False)
    assert torch.equal(dot.system.index.vectors, plain.system.index.vectors)
