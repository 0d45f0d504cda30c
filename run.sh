#!/usr/bin/env bash
# One entry point for newcomers and CI: sets up .venv on first use, then runs a job.
#   bash run.sh pretrain [args]   pretrain a tiny BERT on text that ships with Python (the main job)
#   bash run.sh finetune [args]   fine-tune the result on a small classification demo
#   bash run.sh evaluate [args]   GLUE: fine-tune the result on every task, one table (needs GLUE: --data_dir or the Hub)
#   bash run.sh test [args]       run the test suite
#   bash run.sh bench [script]    run a benchmark from benchmarks/
#   bash run.sh lint              ruff: lint and format check (what CI runs)
set -euo pipefail
cd "$(dirname "$0")"
venv=.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
# Re-install when pyproject.toml changes (a stamp holds its hash).
stamp="$venv/.stamp-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  "$py" -m pip install -q --upgrade pip
  # torch first, pinned to the CPU build that lies on this disk: a bare `torch` requirement
  # would pull a multi-GB CUDA build. Users with their own torch keep it (the project asks for a range).
  "$py" -c "import torch" 2>/dev/null || "$py" -m pip install -q "torch==2.13.0"
  "$py" -m pip install -q -e ".[dev]"
  # timm's LAMB is a test oracle (tests/test_pretrain_units.py), but timm's package imports torchvision, whose PyPI
  # builds need a CUDA torch: its files go beside the venv's packages, not among them (transformers would find a
  # timm it cannot import), and the test loads the optimizer's three files alone.
  "$py" -m pip install -q --no-deps --upgrade --target "$venv/oracles/timm" "timm==1.0.31"
  rm -f "$venv"/.stamp-*
  touch "$stamp"
fi
export PATH="$PWD/$venv/bin:$PATH"
job="${1:-}"; shift || true
case "$job" in
  pretrain) exec minibert-pretrain "$@" ;;
  finetune) exec minibert-finetune "$@" ;;
  convert)  exec minibert-convert "$@" ;;
  evaluate) exec minibert-evaluate glue --model_name_or_path outputs/pretrain --output_dir outputs/glue "$@" ;;
  test)     exec "$py" -m pytest -q "$@" ;;
  bench)    exec "$py" "benchmarks/${1:?name a script in benchmarks/}" "${@:2}" ;;
  lint)     "$venv/bin/ruff" check . && exec "$venv/bin/ruff" format --check . ;;
  *) echo "usage: bash run.sh {pretrain|finetune|convert|evaluate|test|bench|lint} [args]" >&2; exit 2 ;;
esac
