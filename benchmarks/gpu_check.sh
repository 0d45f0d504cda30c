#!/usr/bin/env bash
# The GPU check, in one go, for a session that is lent an H100/H200 (about 6-8 minutes):
#   1. the GPU-marked tests (bf16 equivalence with BERT, a training step with no host syncs);
#   2. bench_pretrain.py, base size, seq 128, bf16, against BertForPreTraining (SDPA), eager and compiled, with MFU;
#   3. a 200-step minibert-pretrain run on the demo corpus with --torch_compile true.
# Results land in $OUT (the device tool brings that folder back); copy the figures into BENCHMARKS.md.
#
# The device image has torch, transformers, accelerate and tokenizers but not `datasets`: carry its wheels (and
# those of its own dependencies the image lacks) in .whl/ as the device tool's README explains; they are installed
# into /tmp/site here. Run from the repository root:  bash benchmarks/gpu_check.sh
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
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
status=0

echo "== 1. GPU tests"
timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_modeling.py tests/test_runtimes.py 2>&1 | tee "$OUT/gpu_tests.log" || status=1

echo "== 2. bench_pretrain.py base bf16, eager and compiled"
common=(--device cuda --size base --dtype bf16 --seq_len 128 --batch_size 128 --steps 20 --rounds 3)
timeout 120 python3 benchmarks/bench_pretrain.py "${common[@]}" --json "$OUT/bench_eager.json" 2>&1 | tail -8 | tee "$OUT/bench_eager.log" || status=1
timeout 240 python3 benchmarks/bench_pretrain.py "${common[@]}" --compile --json "$OUT/bench_compiled.json" 2>&1 | tail -8 | tee "$OUT/bench_compiled.log" || status=1

echo "== 3. 200 steps of minibert-pretrain with --torch_compile true"
timeout 180 python3 -m pretrain --max_train_steps 200 --torch_compile true --mixed_precision bf16 \
  --output_dir /tmp/gpu_check_run --overwrite_output_dir true 2>&1 | tail -25 | tee "$OUT/pretrain.log" || status=1
exit $status
