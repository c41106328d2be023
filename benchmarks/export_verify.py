"""What verifying an export's digests costs at load (``joint_rag.artifact.load_system``).

    python benchmarks/export_verify.py --repeats 8

Exports an untrained system with the SmolLM2-135M generator (about 0.5 GB of safetensors) and
the tiny-bert compressor over a 12-person knowledge base, then loads it ``--repeats`` times
with verification as shipped (every listed file hashed in a background thread while the parts
load) and, interleaved, with the hashing patched out (the baseline: the same load without the
digest check). Writes medians, minima and their ratio with the machine and the date to
``benchmarks/results/export_verify_cpu.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import joint_rag  # noqa: F401  - sets OMP_WAIT_POLICY before torch loads
from joint_rag import artifact
from joint_rag.atomic import write_json

import torch  # noqa: E402  isort: skip

OUT = Path(__file__).parent / "results" / "export_verify_cpu.json"


def _export(folder: Path) -> Path:
    from joint_rag.data.synthetic import SyntheticSource
    from joint_rag.export import export_module
    from joint_rag.models import Compressor, Generator, TopKSelector
    from joint_rag.training import JointRAGModule

    torch.manual_seed(0)
    data = SyntheticSource(num_entities=12, seed=0).load()
    module = JointRAGModule(
        Compressor("tiny-bert", num_memory_tokens=2, max_length=48),
        Generator("smollm2-135m", max_new_tokens=3),
        selector=TopKSelector(k=2),
        num_candidates=4,
    )
    return export_module(module, folder, data.corpus)


def _load(folder: Path, verify: bool) -> float:
    t0 = time.perf_counter()
    if verify:
        artifact.load_system(folder)
    else:
        with (
            mock.patch.object(artifact, "_start_digests", lambda f, m: (mock.MagicMock(), {})),
            mock.patch.object(artifact, "_verify_digests", lambda *a: None),
        ):
            artifact.load_system(folder)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = _export(Path(tmp) / "export")
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        files = sum(1 for p in folder.rglob("*") if p.is_file())
        _load(folder, True)  # warm the page cache and the imports
        times: dict[str, list[float]] = {"verified": [], "unverified": []}
        for _ in range(args.repeats):
            times["unverified"].append(_load(folder, False))
            times["verified"].append(_load(folder, True))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "benchmark": "export load with and without digest verification",
        "command": f"python benchmarks/export_verify.py --repeats {args.repeats}",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu": next(
                (
                    ln.split(":", 1)[1].strip()
                    for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")
                ),
                platform.processor(),
            ),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
        },
        "export_bytes": size,
        "export_files": files,
        "median_s": med,
        "min_s": {k: min(v) for k, v in times.items()},
        "ratio_verified_over_unverified": med["verified"] / med["unverified"],
        "runs_s": times,
    }
    write_json(OUT, result)
    print(
        f"{size / 1e6:.0f} MB, {files} files: verified {med['verified']:.2f} s, unverified "
        f"{med['unverified']:.2f} s (median of {args.repeats}), ratio {result['ratio_verified_over_unverified']:.2f}"
    )


if __name__ == "__main__":
    main()
