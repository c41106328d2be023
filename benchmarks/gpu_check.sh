#!/usr/bin/env bash
# One-shot GPU check of the fused similarity + top-k kernel (joint_rag.kernels), for a session
# that has a CUDA GPU. Runs the gpu-marked tests, then the CUDA benchmark sweep; everything is
# written under $OUT (default benchmarks/results):
#   gpu_info.txt, gpu_tests.log, similarity_topk_<h100|h200|...>.json, gpu_bench.log,
#   similarity_topk_probe_<h100|h200>.json, gpu_probe.log
# Usage:  OUT=/some/dir bash benchmarks/gpu_check.sh [all|tests|bench|probe|binmax]
#   binmax: the binned-max round (about 6 min): its gpu tests (TEST_TIMEOUT, default 100 s), the
#   binmax probe (benchmarks/binmax_probe.py, PROBE_BUDGET 120 s) and the sweep (BENCH_BUDGET 120 s,
#   --no-compile --no-merge), writing binmax_gpu_tests.log, binmax_probe_<gpu>.json and the sweep JSON.
# Knobs:  PY (python to use), TEST_TIMEOUT (s, default 110), BENCH_BUDGET (s of sweep, default 90;
#         the sweep is killed 35 s after it), BENCH_ARGS (extra benchmark arguments, e.g. --quick),
#         PROBE_BUDGET (s of the config/cost probe, default 150; killed 60 s after it).
# Total with the defaults: about 450 s (tests first, with their own timeout; the sweep, then the
# probe). Under a 600 s command limit, run `tests` alone first, then `bench` and `probe`.
# The gpu tests compile 13 kernel specialisations (about 1-5 s each, see the test file).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
WHAT="${1:-all}"
PY="${PY:-python}"
if ! "$PY" -c "import torch" 2>/dev/null && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi

# joint_rag.kernels is kernels/ through setup.cfg's package_dir; without an install, import it
# through a shim package (no pip, no network).
if ! "$PY" -c "import joint_rag.kernels" 2>/dev/null; then
  SHIM="$(mktemp -d)"
  mkdir -p "$SHIM/joint_rag"
  ln -s "$ROOT/kernels" "$SHIM/joint_rag/kernels"
  printf '__path__.append(%s)\n' "'$ROOT/joint_rag'" > "$SHIM/joint_rag/__init__.py"
  export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
fi
# compiled mode (tests/conftest.py would default it to the CPU interpreter)
export TRITON_INTERPRET=0

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
  "$PY" -c "import faiss; print('faiss', faiss.__version__, 'gpu' if hasattr(faiss, 'StandardGpuResources') else 'cpu-only')" 2>&1 | tail -1
} > "$OUT/gpu_info.txt" 2>&1
cat "$OUT/gpu_info.txt"

rc=0
if [ "$WHAT" = all ] || [ "$WHAT" = tests ]; then
  # PYTHONSAFEPATH: `python -m` would put the repo root first on sys.path, and its joint_rag/ (no
  # kernels/ inside) would shadow the shim
  PYTHONSAFEPATH=1 timeout "${TEST_TIMEOUT:-110}" "$PY" -m pytest -q -m gpu tests/kernels/test_similarity_topk_gpu.py \
    2>&1 | tee "$OUT/gpu_tests.log" | tail -25
  rc=${PIPESTATUS[0]}
  echo "gpu tests exit code: $rc" | tee -a "$OUT/gpu_tests.log"
fi
if [ "$WHAT" = all ] || [ "$WHAT" = bench ]; then
  # the JSON is rewritten after every row, so a timeout keeps what was measured
  timeout "$(( ${BENCH_BUDGET:-90} + 35 ))" "$PY" benchmarks/similarity_topk.py --device cuda \
    --budget-s "${BENCH_BUDGET:-90}" --out-dir "$OUT" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/gpu_bench.log" | tail -8
  brc=${PIPESTATUS[0]}
  echo "benchmark exit code: $brc" | tee -a "$OUT/gpu_bench.log"
  [ "$rc" -eq 0 ] && rc=$brc
fi
if [ "$WHAT" = all ] || [ "$WHAT" = probe ]; then
  # where the kernel's time goes (scoring vs top-k) and configs around the table; see the script
  timeout "$(( ${PROBE_BUDGET:-150} + 60 ))" "$PY" benchmarks/similarity_topk_probe.py \
    --budget-s "${PROBE_BUDGET:-150}" --out-dir "$OUT" 2>&1 | tee "$OUT/gpu_probe.log" | tail -4 | cut -c1-400
  prc=${PIPESTATUS[0]}
  echo "probe exit code: $prc" | tee -a "$OUT/gpu_probe.log"
  [ "$rc" -eq 0 ] && rc=$prc
fi
if [ "$WHAT" = binmax ]; then
  PYTHONSAFEPATH=1 timeout "${TEST_TIMEOUT:-100}" "$PY" -m pytest -q -m gpu -k "binmax or table_configs" \
    tests/kernels/test_similarity_topk_gpu.py 2>&1 | tee "$OUT/binmax_gpu_tests.log" | tail -15
  rc=${PIPESTATUS[0]}
  echo "binmax gpu tests exit code: $rc" | tee -a "$OUT/binmax_gpu_tests.log"
  timeout "$(( ${PROBE_BUDGET:-120} + 40 ))" "$PY" benchmarks/binmax_probe.py --budget-s "${PROBE_BUDGET:-120}" \
    --out-dir "$OUT" 2>&1 | tee "$OUT/binmax_probe.log" | tail -3 | cut -c1-400
  prc=${PIPESTATUS[0]}
  echo "binmax probe exit code: $prc" | tee -a "$OUT/binmax_probe.log"
  timeout "$(( ${BENCH_BUDGET:-120} + 35 ))" "$PY" benchmarks/similarity_topk.py --device cuda --no-compile \
    --no-merge --budget-s "${BENCH_BUDGET:-120}" --out-dir "$OUT" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/gpu_bench.log" | tail -4
  brc=${PIPESTATUS[0]}
  echo "benchmark exit code: $brc" | tee -a "$OUT/gpu_bench.log"
  [ "$rc" -eq 0 ] && rc=$prc
  [ "$rc" -eq 0 ] && rc=$brc
fi
exit "$rc"
