#!/usr/bin/env bash
# The GPU check, in one call, for a session that is lent an H100/H200 (benchmarks/gpu_check.py says what it runs):
# about 7.5 minutes of steps behind an internal deadline, every row flushed to $OUT/results.jsonl as it is measured,
# $OUT/summary.md rewritten after every step. Copy the figures into BENCHMARKS.md.
#
# The device image has torch, transformers, accelerate and tokenizers but not `datasets`: carry its wheels (and
# those of its own dependencies the image lacks) in .whl/ as the device tool's README explains; they are installed
# into /tmp/site here. Run from the repository root:  bash benchmarks/gpu_check.sh  (--dry-run: the same on the CPU)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
if [ "${1:-}" != "--dry-run" ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
fi
python3 benchmarks/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
