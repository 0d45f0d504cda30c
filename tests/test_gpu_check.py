"""benchmarks/gpu_check.py, the script a rare GPU loan runs, kept working between loans: its CPU dry run takes the
same steps and writes the same rows (tiny sizes), and its deadline and preflight behave as promised."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, cli_env

SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.py")


def gpu_check(out, *args, timeout=900):
    done = subprocess.run(
        [sys.executable, SCRIPT, "--out", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(OMP_NUM_THREADS="1"),
    )
    rows = []
    results = os.path.join(out, "results.jsonl")
    if os.path.isfile(results):
        with open(results) as f:
            rows = [json.loads(line) for line in f]
    return done, rows


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    done, rows = gpu_check(out, "--dry-run", "--deadline_s", "800")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, rows


def test_the_dry_run_measures_every_row_through_the_product(dry_run):
    out, rows = dry_run
    cpu_only_skip = ("attention_seq32", "varlen")  # torch's varlen attention exists on CUDA only
    assert not [
        r for r in rows if r["status"] in ("skipped", "failed") and (r["step"], r.get("backend")) != cpu_only_skip
    ]
    steps = {}
    for r in rows:
        steps.setdefault(r["step"], []).append(r)
    eager = {r["row"]: r for r in steps["train_step_eager_seq32"] if r.get("kind") == "train_step"}
    assert set(eager) == {"hf", "minibert_dense", "minibert"}
    for r in eager.values():
        assert r["tokens_per_s"] > 0 and r["step_ms"] > 0 and r["model_tflops"] > 0
        assert r["precision"] == "fp32" and r["compile"] is False
    ratios = {k for r in steps["train_step_eager_seq32"] if r.get("kind") == "ratio" for k in r}
    assert {"speedup", "sparse_head_speedup"} <= ratios
    for model in ("hf", "minibert"):
        (compiled,) = [r for r in steps[f"train_step_compiled_{model}_seq32"] if r.get("kind") == "train_step"]
        assert compiled["compile"] is True and compiled["graphs_compiled"] >= 1 and compiled["tokens_per_s"] > 0
    attention = {r["backend"]: r for r in steps["attention_seq32"]}
    assert attention["sdpa_padded"]["ms_fwd_bwd"] > 0
    assert attention["varlen"]["status"] == "skipped" and "CUDA" in attention["varlen"]["reason"]
    assert steps["gpu_tests"][0]["status"] == "passed"
    (cli,) = steps["pretrain_cli"]
    assert cli["tokens_per_s"] > 0
    with open(os.path.join(out, "summary.md")) as f:
        summary = f.read()
    assert "| train_step_eager_seq32 | minibert | measured |" in summary
    for r in rows:  # every row says what ran it
        assert r["torch"] and r["transformers"] and r["device"] == "CPU (dry run)"


def test_past_the_deadline_each_step_writes_a_skipped_row_and_the_summary_stays(tmp_path):
    done, rows = gpu_check(tmp_path, "--dry-run", "--deadline_s", "1", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert rows[0]["step"] == "preflight" and rows[0]["status"] == "measured"
    skipped = rows[1:]
    assert skipped and all(r["status"] == "skipped" and "deadline" in r["reason"] for r in skipped)
    assert {r["step"] for r in skipped} >= {"train_step_eager_seq32", "attention_seq32", "gpu_tests", "pretrain_cli"}
    assert os.path.isfile(tmp_path / "summary.md")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_the_real_check_stops_in_one_line(tmp_path):
    done, rows = gpu_check(tmp_path, timeout=300)
    assert done.returncode == 3
    assert [line for line in done.stdout.splitlines() if "not usable" in line] == [
        "[gpu_check] CUDA is not usable here (torch.cuda.is_available() is False): nothing measured"
    ]
    assert [(r["step"], r["status"], r["reason"]) for r in rows] == [("preflight", "failed", "CUDA not available")]
