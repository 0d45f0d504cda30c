"""What the demo's pretraining buys, across pretraining seeds: `bash run.sh pretrain`'s own run, seed by seed.

    python benchmarks/bench_demo_gain.py [--seeds 7 11 13 42] [-- other minibert-pretrain flags, e.g. --learning_rate 2e-3]

Each seed is one run of the product's demo command (`minibert-pretrain --seed S`, its config, its loop, its
held-out evaluation and its comparison `pretrain.demo.pretraining_gain`: the model and the same architecture from
random weights fine-tuned alike through `finetune.train.finetune` on held-out text), in its own process, in a
temporary folder. The seed moves which documents are held out, the model's initialisation and the data order, so the
spread across seeds is what one run's gap cannot show. Prints a Markdown table (held-out MLM and NSP accuracy, the
two fine-tuned accuracies, their gap and how many held-out splits agree) and the mean gap: BENCHMARKS.md, "What
pretraining bought". About 1 min 15 s a seed on 2 quiet cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The demo's run as `minibert-pretrain` makes it, its result (gain figures included) printed as one JSON line.
RUN = "import json, sys; from pretrain.__main__ import _run; print('RESULT ' + json.dumps(_run(sys.argv[1:])))"


def demo_run(seed: int, flags: list[str], output_dir: str) -> dict:
    command = [sys.executable, "-c", RUN, "--output_dir", output_dir, "--seed", str(seed), *flags]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        sys.exit(f"seed {seed} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 11, 13, 42])
    parser.add_argument("flags", nargs="*", help="other minibert-pretrain flags, after `--`")
    args = parser.parse_args()
    print("| seed | held-out MLM | NSP | pretrained | random weights | gap (splits ahead) | chance |")
    print("|---|---|---|---|---|---|---|")
    gaps = []
    with tempfile.TemporaryDirectory(prefix="bench-demo-gain-") as work:
        for seed in args.seeds:
            r = demo_run(seed, args.flags, os.path.join(work, f"seed{seed}"))
            pretrained, scratch = r["gain_pretrained_accuracy"], r["gain_scratch_accuracy"]
            pairs = zip(r["gain_pretrained_accuracy_runs"], r["gain_scratch_accuracy_runs"])
            ahead = sum(p > s for p, s in pairs)
            gaps.append(pretrained - scratch)
            nsp = f"{r['eval_nsp_accuracy']:.3f}" if "eval_nsp_accuracy" in r else "-"
            print(
                f"| {seed} | {r['eval_mlm_accuracy']:.3f} | {nsp} | {pretrained:.3f} | {scratch:.3f} | "
                f"{gaps[-1]:+.3f} ({ahead} of {r['gain_repeats']}) | {r['gain_chance_majority']:.3f} |",
                flush=True,
            )
    print(
        f"\nmean gap over {len(gaps)} seeds: {sum(gaps) / len(gaps):+.3f} (min {min(gaps):+.3f}, max {max(gaps):+.3f})"
    )


if __name__ == "__main__":
    main()
