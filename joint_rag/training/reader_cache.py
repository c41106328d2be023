"""A persistent cache of a frozen reader's answer log-probabilities (``model.reader_cache``).

With a frozen generator reading passages as text, the usefulness teachers are pure functions
of the prompt: ``log p(answer | question, passage)`` for LSR, PDist, EMDR2 and the marginal
objectives, ``-NLL(answer | question, sampled set)`` for Reinforce's "loglik" reward. Across the
seeds and objectives of a grid the same (question, passage) pairs come back, because every run
starts from the same off-the-shelf retriever and index. This cache stores, per prompt, the
answer tokens' log-probabilities in an SQLite file, so a grid pays for each reading once.

Exactness. The key is the SHA-256 of the reader's fingerprint (every weight's bytes, dtype,
torch version, device type, thread count), the autocast state it reads under (a
``trainer.precision: bf16-mixed`` run computes in bfloat16, so its readings differ from a
float32 run's by more than rounding) and the exact token ids (prompt + answer) the
generator would read, so a changed prompt template, truncation, answer or weight is a miss,
never a stale hit. The misses of one call are computed together (eval mode, no gradient), in
batches of up to ``miss_batch`` rows ordered by prompt length (a batch of one costs about 2.5x
per row on a 2-core CPU). Batch composition changes the float rounding (about 2e-5 in a
log-probability for SmolLM2-135M in float32 on CPU; more under bf16 autocast), so a value agrees
with the same prompt read in another batch to that rounding, not bit for bit: a run with a warm
cache and one with an empty cache agree to that rounding.

Safety. Values are raw float32 bytes (no pickle); the file's format version is checked, and a
file that is not this cache's SQLite database is refused by name. Each call commits once, so a
killed run leaves every completed step's rows and nothing half-written (SQLite's journal).
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import torch
from torch import nn

from joint_rag.models.generator import Generator, GeneratorOutput
from joint_rag.system import eval_mode
from joint_rag.training.fingerprint import module_fingerprint

FORMAT = 1
_MAGIC = "joint-rag reader cache"


def reader_fingerprint(model: nn.Module) -> str:
    """SHA-256 over every parameter and buffer (name, dtype, shape, bytes) plus the torch
    version, device type and thread count (CPU kernels round by thread count)."""
    return module_fingerprint(model, f"{_MAGIC} v{FORMAT}")


def autocast_tag(generator: Generator) -> str:
    """The autocast state on the reader's device: empty when off (so float32 keys are those of
    format 1 files), else ``|autocast DTYPE``."""
    device = generator.model.get_input_embeddings().weight.device.type
    if not torch.is_autocast_enabled(device):
        return ""
    return f"|autocast {torch.get_autocast_dtype(device)}"


class ReaderCache:
    """Answer-token log-probabilities of a frozen text-mode generator, keyed by prompt.

    Args:
        path: the SQLite file (created with its folder when missing).
        miss_batch: most rows per generator call when computing one call's misses.

    ``read(generator, queries, answers, passages, instructions)`` returns what
    ``generator(queries, answers, passages=passages, instructions=instructions)`` returns in
    eval mode, with each row taken from the cache or computed (with the call's other misses) and
    stored. ``hits`` and ``misses`` count rows (a row repeated within one call is computed once
    and counted a hit).
    """

    def __init__(self, path: str | Path, miss_batch: int = 32) -> None:
        if miss_batch < 1:
            raise ValueError(f"ReaderCache: miss_batch must be >= 1, got {miss_batch}")
        self.path = Path(path)
        self.miss_batch = miss_batch
        self.hits = 0
        self.misses = 0
        self._fingerprints: dict[int, str] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path)
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            rows = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as err:
            raise ValueError(
                f"model.reader_cache: {self.path} is not a joint-rag reader cache ({err})"
            ) from None
        if not rows:
            with self._db:
                self._db.executemany(
                    "INSERT INTO meta VALUES (?, ?)", [("magic", _MAGIC), ("format", str(FORMAT))]
                )
                self._db.execute("CREATE TABLE rows (key BLOB PRIMARY KEY, logprobs BLOB NOT NULL)")
        elif rows.get("magic") != _MAGIC:
            raise ValueError(
                f"model.reader_cache: {self.path} is an SQLite file of something else (no '{_MAGIC}' tag)"
            )
        elif not str(rows.get("format", "")).isdigit() or int(rows["format"]) > FORMAT:
            raise ValueError(
                f"model.reader_cache: {self.path} has format {rows.get('format')!r}, newer than this "
                f"joint-rag reads ({FORMAT}); upgrade joint-rag or point reader_cache at a new file"
            )

    def close(self) -> None:
        self._db.close()

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM rows").fetchone()[0])

    def fingerprint(self, generator: Generator) -> str:
        """The reader's fingerprint, computed once per generator (its weights are frozen)."""
        fp = self._fingerprints.get(id(generator))
        if fp is None:
            fp = self._fingerprints[id(generator)] = reader_fingerprint(generator.model)
        return fp

    @staticmethod
    def check_reader(generator: Generator) -> None:
        """Refuse a reader whose outputs are not a fixed function of the prompt."""
        trainable = [n for n, p in generator.named_parameters() if p.requires_grad]
        if generator.mode != "text" or trainable:
            raise ValueError(
                "model.reader_cache needs a frozen generator reading text (generator mode 'text', "
                f"train_mode 'frozen'); got mode {generator.mode!r}, train_mode {generator.train_mode!r}"
                + (f", {len(trainable)} trainable parameters" if trainable else "")
            )

    def _key(self, fp: str, prompt: list[int], answer: list[int]) -> bytes:
        ids = torch.tensor([len(prompt), *prompt, *answer], dtype=torch.int64).numpy().tobytes()
        return hashlib.sha256(fp.encode() + b"|" + ids).digest()

    @torch.no_grad()
    def read(
        self,
        generator: Generator,
        queries: list[str],
        answers: list[str],
        passages: list[list[str]],
        instructions: list[str | None] | None = None,
    ) -> GeneratorOutput:
        """As ``generator(queries, answers, passages=passages, instructions=instructions)`` in eval
        mode without gradient: nll (B,), token_logprobs (B, T), token_mask (B, T)."""
        self.check_reader(generator)
        B = len(queries)
        instructions = instructions or [None] * B
        fp = self.fingerprint(generator) + autocast_tag(generator)
        keys, lens, prompt_lens = [], [], []
        for b in range(B):
            prompt, _ = generator.prompt_ids(queries[b], len(passages[b]), 0, instructions[b], passages[b])
            answer = generator.answer_ids(answers[b])
            keys.append(self._key(fp, prompt, answer))
            lens.append(len(answer))
            prompt_lens.append(len(prompt))
        unique = list(dict.fromkeys(keys))
        found: dict[bytes, torch.Tensor] = {}
        for i in range(0, len(unique), 500):  # SQLite's variable limit
            part = unique[i : i + 500]
            marks = ",".join("?" * len(part))
            for key, blob in self._db.execute(f"SELECT key, logprobs FROM rows WHERE key IN ({marks})", part):
                found[key] = torch.frombuffer(bytearray(blob), dtype=torch.float32)
        first = {}  # each missing key's first row
        for b, key in enumerate(keys):
            if key not in found:
                first.setdefault(key, b)
        todo = sorted(first.values(), key=lambda b: (prompt_lens[b], b))  # little padding per batch
        new = []
        with eval_mode(generator):
            for i in range(0, len(todo), self.miss_batch):
                rows = todo[i : i + self.miss_batch]
                out = generator(
                    [queries[b] for b in rows],
                    [answers[b] for b in rows],
                    passages=[passages[b] for b in rows],
                    instructions=[instructions[b] for b in rows],
                )
                for j, b in enumerate(rows):
                    found[keys[b]] = out.token_logprobs[j, : lens[b]].float().cpu()
                    new.append((keys[b], found[keys[b]].numpy().tobytes()))
        for b, key in enumerate(keys):
            if found[key].numel() != lens[b]:
                raise ValueError(
                    f"model.reader_cache: {self.path} holds {found[key].numel()} log-probabilities for a "
                    f"{lens[b]}-token answer: the file is corrupt; delete it"
                )
        if new:
            with self._db:
                self._db.executemany("INSERT OR IGNORE INTO rows VALUES (?, ?)", new)
        self.misses += len(new)
        self.hits += B - len(new)
        device = generator.model.get_input_embeddings().weight.device
        T = max(lens)
        logp = torch.zeros((B, T), device=device)
        for b, key in enumerate(keys):
            logp[b, : lens[b]] = found[key].to(device)
        mask = torch.arange(T, device=device)[None, :] < torch.tensor(lens, device=device)[:, None]
        nll = -logp.sum(1) / mask.sum(1).clamp(min=1)
        return GeneratorOutput(nll=nll, token_logprobs=logp, token_mask=mask)
