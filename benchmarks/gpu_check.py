"""The GPU check: every figure a rare GPU loan can give, in one call, returned even if the call is cut short.

Steps, in order (each with a time cap; a step that no longer fits before the deadline writes a "skipped" row):

 1. preflight: CUDA usable (else one line and exit 3: every GPU test would otherwise "pass" as skipped), device,
    versions, and the achievable bf16 GEMM TFLOP/s beside the spec peak;
 2. the training step, eager, bf16 autocast (one process, rounds alternating): transformers' BertForPreTraining as
    Trainer trains it, minibert's loop step with a dense MLM head, minibert's loop step as the CLI runs it
    (`benchmarks/bench_pretrain.py`), base size at seq 128 and 512;
 3. the same compiled, one process per model (compile seconds and graphs compiled recorded);
 4. attention on packed ragged batches: padded SDPA vs `varlen_attn` vs flex (`benchmarks/bench_attention.py`);
 5. the GPU-marked tests (a training step with no host syncs, bf16 against BERT, other attention backends);
 6. `minibert-pretrain` end to end for a few hundred steps on the demo corpus (its own tokens/s and MFU log).

Every row is appended to OUT/results.jsonl and flushed the moment it exists, and OUT/summary.md is rewritten
after every step, so a kill still returns what was measured. `--dry-run` runs the same steps and writes the same
rows on the CPU with tiny sizes (tests/test_gpu_check.py runs it in CI, so the script cannot rot between loans).

    python benchmarks/gpu_check.py --out "$OUT" [--deadline_s 450]     # on the GPU (benchmarks/gpu_check.sh)
    python benchmarks/gpu_check.py --dry-run --out /tmp/check            # the same on the CPU, tiny
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


class Check:
    def __init__(self, out: str, deadline_s: float, dry_run: bool):
        self.out, self.dry_run = out, dry_run
        self.deadline = time.monotonic() + deadline_s
        os.makedirs(out, exist_ok=True)
        self.results_path = os.path.join(out, "results.jsonl")
        self.rows: list[dict] = []
        self.context: dict = {}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def row(self, row: dict) -> None:
        """Append a row to results.jsonl and flush it to disk now."""
        row = {**self.context, **row}
        self.rows.append(row)
        with open(self.results_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def skip(self, step: str, reason: str, **fields) -> None:
        self.row({"step": step, "status": "skipped", "reason": reason, **fields})
        print(f"[gpu_check] {step}: skipped ({reason})", flush=True)

    def run(self, step: str, cmd: list[str], cap_s: float, **fields) -> tuple[int | None, str]:
        """Run `cmd` if `cap_s` still fits before the deadline; its output goes to OUT/<step>.log as it comes
        (tee, not tail). Returns (exit code or None when skipped/killed, output)."""
        if self.left() < cap_s * 0.5 or self.left() < 5:
            self.skip(
                step, f"{self.left():.0f} s left before the deadline, the step needs up to {cap_s:.0f} s", **fields
            )
            return None, ""
        limit = min(cap_s, self.left())
        log_path = os.path.join(self.out, f"{step}.log")
        print(f"[gpu_check] {step}: {' '.join(cmd[1:])[:200]} (up to {limit:.0f} s)", flush=True)
        output = []
        with open(log_path, "w", encoding="utf-8") as log:
            process = subprocess.Popen(
                cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
            )
            start = time.monotonic()
            try:
                for line in process.stdout:  # noqa: B007 (streamed as it comes)
                    log.write(line)
                    log.flush()
                    output.append(line)
                    if time.monotonic() - start > limit:
                        raise TimeoutError
                code = process.wait(timeout=max(limit - (time.monotonic() - start), 1))
            except (TimeoutError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()
                self.skip(step, f"killed at its time cap of {limit:.0f} s", **fields)
                return None, "".join(output)
        return code, "".join(output)

    def summary(self) -> None:
        """OUT/summary.md from the rows so far (rewritten after every step)."""
        lines = ["# GPU check", ""]
        for key, value in self.context.items():
            lines.append(f"- {key}: {value}")
        lines += [
            "",
            "| step | row | status | tokens/s | step ms | MFU | HFU | syncs/step | static MB | activations MB |",
        ]
        lines.append("|---|---|---|---|---|---|---|---|---|---|")

        def f(value, fmt):
            return format(value, fmt) if isinstance(value, (int, float)) else ""

        for r in self.rows:
            if r.get("kind") != "train_step":
                continue
            lines.append(
                f"| {r['step']} | {r.get('row', '')} | {r['status']} | {f(r.get('tokens_per_s'), '.0f')} | "
                f"{f(r.get('step_ms'), '.1f')} | {f(r.get('mfu'), '.1%')} | {f(r.get('hfu'), '.1%')} | "
                f"{r.get('syncs_per_step') if r.get('syncs_per_step') is not None else ''} | {f(r.get('static_mb'), '.0f')} | {f(r.get('activation_mb'), '.0f')} |"
            )
        lines += ["", "Other rows:", ""]
        for r in self.rows:
            if r.get("kind") != "train_step":
                shown = {k: v for k, v in r.items() if k not in self.context}
                lines.append(f"- `{json.dumps(shown)[:600]}`")
        with open(os.path.join(self.out, "summary.md"), "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")


def preflight(check: Check) -> bool:
    import torch
    import transformers

    check.context = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dry_run": check.dry_run,
    }
    if check.dry_run:
        check.context["device"] = "CPU (dry run)"
        check.row({"step": "preflight", "kind": "device", "status": "measured", "cuda": torch.cuda.is_available()})
        return True
    if not torch.cuda.is_available():
        print("[gpu_check] CUDA is not usable here (torch.cuda.is_available() is False): nothing measured", flush=True)
        check.row({"step": "preflight", "status": "failed", "reason": "CUDA not available"})
        return False
    try:
        from pretrain.throughput import peak_tflops

        name = torch.cuda.get_device_name()
        check.context["device"] = name
        n = 8192
        a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        for _ in range(3):
            a @ b
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        repeats = 20
        for _ in range(repeats):
            a @ b
        torch.cuda.synchronize()
        achieved = 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e12
        check.row(
            {
                "step": "preflight",
                "kind": "device",
                "status": "measured",
                "gemm_bf16_tflops": achieved,
                "spec_peak_bf16_tflops": peak_tflops(name),
                "memory_gb": torch.cuda.get_device_properties(0).total_memory / 2**30,
            }
        )
        return True
    except Exception as e:  # a broken driver or device: one line, stop
        print(f"[gpu_check] CUDA is not usable: {type(e).__name__}: {e}", flush=True)
        check.row({"step": "preflight", "status": "failed", "reason": f"{type(e).__name__}: {e}"})
        return False


def train_step_rows(check: Check, step: str, result_path: str, code: int | None, **fields) -> None:
    if code is None:
        return
    if code != 0 or not os.path.isfile(result_path):
        check.row({"step": step, "status": "failed", "reason": f"exit {code}, see {step}.log", **fields})
        return
    with open(result_path) as f:
        result = json.load(f)
    common = {k: result[k] for k in ("size", "seq_len", "batch_size", "precision", "compile")}
    common["graphs_compiled"] = result.get("graphs_compiled")
    for row, figures in result["rows"].items():
        check.row({"step": step, "kind": "train_step", "status": "measured", "row": row, **common, **figures})
    for key in ("speedup", "sparse_head_speedup"):
        if key in result:
            check.row({"step": step, "kind": "ratio", "status": "measured", key: result[key], **common})


def small_corpus(out: str, lines: int | None = 300) -> str:
    """The demo corpus's Python documentation (without its dependencies' docstrings: built in seconds, not the ~40 s
    that device time cannot spare), or its first `lines` lines: the dry run's CLI step in seconds."""
    sys.path.insert(0, ROOT)
    from pretrain.demo import build_demo_corpus

    corpus = build_demo_corpus(os.path.join(out, "corpus"), packages=())
    if lines is None:
        return corpus
    with open(corpus, encoding="utf-8") as f:
        head = [line for _, line in zip(range(lines), f)]
    path = os.path.join(out, "corpus", "small.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(head)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT", "/tmp/gpu_check"))
    p.add_argument("--deadline_s", type=float, default=450.0, help="stop starting steps after this (default 7.5 min)")
    p.add_argument("--dry-run", dest="dry_run", action="store_true", help="the same steps on the CPU, tiny sizes")
    args = p.parse_args(argv)
    check = Check(args.out, args.deadline_s, args.dry_run)
    if os.path.exists(check.results_path):
        os.remove(check.results_path)
    ok = preflight(check)
    check.summary()
    if not ok:
        return 3
    dry = args.dry_run
    device = ["--device", "cpu", "--threads", "1"] if dry else ["--device", "cuda"]
    size = (
        ["--size", "tiny", "--batch_size", "4", "--steps", "2", "--rounds", "1", "--vocab_size", "512"]
        if dry
        else [
            "--size",
            "base",
            "--steps",
            "10",
            "--rounds",
            "3",
        ]
    )
    bench = [PY, "benchmarks/bench_pretrain.py", *device, *size]
    seqs = [(32, "4")] if dry else [(128, "128"), (512, "32")]

    # 2. eager, the three rows in one process (rounds alternate between them)
    for seq, batch in seqs:
        step = f"train_step_eager_seq{seq}"
        path = os.path.join(args.out, f"{step}.json")
        code, _ = check.run(
            step, [*bench, "--seq_len", str(seq), "--batch_size", batch, "--json", path], 120 if not dry else 60
        )
        train_step_rows(check, step, path, code)
        check.summary()
    # 3. compiled, one process per model
    for row in ("hf", "minibert"):
        for seq, batch in seqs[:1]:
            step = f"train_step_compiled_{row}_seq{seq}"
            path = os.path.join(args.out, f"{step}.json")
            cmd = [*bench, "--seq_len", str(seq), "--batch_size", batch, "--rows", row, "--compile", "--json", path]
            if dry:  # dynamo's tracing without inductor's code generation (minutes on a CPU)
                cmd += ["--compile_backend", "eager"]
            code, _ = check.run(step, cmd, 150 if not dry else 120)
            train_step_rows(check, step, path, code)
            check.summary()
    # 4. attention on packed ragged batches
    for seq, batch in seqs:
        step = f"attention_seq{seq}"
        path = os.path.join(args.out, f"{step}.json")
        attention = [PY, "benchmarks/bench_attention.py", "--seq_len", str(seq), "--batch_size", batch, "--json", path]
        if dry:
            attention += ["--device", "cpu", "--heads", "2", "--head_dim", "16", "--repeats", "2"]
            attention += ["--backends", "sdpa_padded,varlen"]  # compiling flex on a CPU takes minutes
        code, _ = check.run(step, attention, 60)
        if code is not None and code == 0 and os.path.isfile(path):
            with open(path) as f:
                result = json.load(f)
            for name, figures in result["rows"].items():
                check.row({"step": step, "kind": "attention", "backend": name, "seq_len": seq, **figures})
        elif code is not None:
            check.row({"step": step, "status": "failed", "reason": f"exit {code}, see {step}.log"})
        check.summary()
    # 5. the GPU-marked tests
    tests = [PY, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests/test_modeling.py"]
    tests += ["tests/test_runtimes.py", "tests/test_fast_path.py"]
    code, output = check.run("gpu_tests", tests, 150 if not dry else 120)
    if code is not None:
        last = [line for line in output.strip().splitlines() if line.strip()][-1:] or ["(no output)"]
        check.row(
            {
                "step": "gpu_tests",
                "kind": "tests",
                "status": "passed" if code in (0, 5) else "failed",
                "exit": code,
                "summary": last[0],
            }
        )
    check.summary()
    # 6. the CLI end to end (the demo corpus; the dry run on its first 300 lines)
    run_dir = os.path.join(args.out, "pretrain_run")
    cli = [PY, "-m", "pretrain", "--output_dir", run_dir, "--overwrite_output_dir", "true"]
    if dry:
        cli += ["--train_file", small_corpus(args.out), "--max_train_steps", "6", "--logging_steps", "2"]
        cli += ["--vocab_size", "300", "--max_seq_length", "32", "--per_device_train_batch_size", "4"]
    else:  # BERT-base on the whole demo corpus, as a user would start a real run
        cli += ["--train_file", small_corpus(args.out, lines=None), "--model_size", "base", "--max_seq_length", "128"]
        cli += ["--per_device_train_batch_size", "128", "--max_train_steps", "200", "--logging_steps", "20"]
        cli += ["--mixed_precision", "bf16", "--torch_compile", "true"]
    code, _ = check.run("pretrain_cli", cli, 150 if not dry else 240)
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if code == 0 and os.path.isfile(metrics):
        with open(metrics) as f:
            train = [r for r in map(json.loads, f) if "tokens_per_second" in r]
        last = train[-1] if train else {}
        check.row(
            {
                "step": "pretrain_cli",
                "kind": "cli",
                "status": "measured",
                "tokens_per_s": last.get("tokens_per_second"),
                "mfu": last.get("mfu"),
                "model_tflops_per_device": last.get("model_tflops_per_device"),
            }
        )
    elif code is not None:
        check.row({"step": "pretrain_cli", "status": "failed", "reason": f"exit {code}, see pretrain_cli.log"})
    check.summary()
    print(f"[gpu_check] done: {len(check.rows)} rows in {check.results_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
