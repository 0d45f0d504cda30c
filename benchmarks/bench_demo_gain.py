"""What the demo's pretraining buys, across pretraining seeds: `bash run.sh pretrain`'s own run, seed by seed.

    python benchmarks/bench_demo_gain.py [--seeds 7 11 13 42] [--task function_words] [--reinit_top_layers 1]
        [-- other minibert-pretrain flags, e.g. --learning_rate 2e-3 --max_train_steps 600]

Each seed is one run of the product's demo command (`minibert-pretrain --seed S`, its config, its loop, its
held-out evaluation and its comparison `pretrain.demo.pretraining_gain`: the model and the same architecture from
random weights fine-tuned alike through `finetune.train.finetune` on held-out text), in its own process, in a
temporary folder. The seed moves which documents are held out, the model's initialisation and the data order, so the
spread across seeds is what one run's gap cannot show. Prints a Markdown table (held-out MLM and NSP accuracy, the
two fine-tuned accuracies, their gap and how many held-out splits agree) and the mean gap: BENCHMARKS.md, "What
pretraining bought". About 4 minutes a seed on 2 quiet cores.

The variants change one thing each, in the child process, and nothing in the product:
- `--task word_order_period_kept`: the demo's task with each sentence's final punctuation left in place, so that
  where the period stands no longer tells a shuffled sentence apart (what is left is word order itself);
- `--task function_words`: the comparison's task is "were two of the sentence's function words or punctuation marks
  replaced by others?" instead of "are its words shuffled?" (what a model in BERT's early, function-word phase of
  pretraining might know);
- `--reinit_top_layers N`: the pretrained model's top N encoder layers and pooler are re-initialised before it is
  fine-tuned (Zhang et al. 2021, "Revisiting few-sample BERT fine-tuning"), so only the lower layers carry over.
The runs on Python's documentation alone (the demo corpus before its dependencies' docstrings joined it) are this
script at f814943.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def demo_run(seed: int, flags: list[str], output_dir: str, variant: dict) -> dict:
    """The demo's run as `minibert-pretrain` makes it (its result, gain figures included, printed as one JSON line)."""
    command = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(variant)]
    command += ["--output_dir", output_dir, "--seed", str(seed), *flags]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        sys.exit(f"seed {seed} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def function_word_task(train_sentences: list[str], test_sentences: list[str], seed: int = 0, replaced: int = 2):
    """Rows {"sentence", "label"}: each sentence as written (`original`) or with `replaced` of its function words or
    punctuation marks (pretrain.demo.STOPWORDS and , . : ; ( )) each swapped for another of them (`replaced`)."""
    import random

    from pretrain.demo import STOPWORDS

    words = sorted(STOPWORDS | {",", ".", ":", ";", "(", ")"})
    rng = random.Random(seed)

    def rows(sentences):
        made = []
        for sentence in sentences:
            tokens = sentence.split()
            places = [i for i, token in enumerate(tokens) if token in words]
            if len(places) < replaced:
                continue
            label = rng.choice(["original", "replaced"])
            if label == "replaced":
                for i in rng.sample(places, replaced):
                    tokens[i] = rng.choice([w for w in words if w != tokens[i]])
            made.append({"sentence": " ".join(tokens), "label": label})
        return made

    return {"train": rows(train_sentences), "test": rows(test_sentences)}


def with_top_layers_reinitialised(model_dir: str, layers: int, work: str) -> str:
    """A copy of `model_dir` whose top `layers` encoder layers and pooler have fresh weights (the tokenizer kept)."""
    import shutil

    import torch

    from minibert import MiniBertForPreTraining

    model = MiniBertForPreTraining.from_pretrained(model_dir)
    torch.manual_seed(1234)
    fresh = MiniBertForPreTraining(model.config)
    count = len(model.bert.encoder.layer)
    for i in range(count - layers, count):
        model.bert.encoder.layer[i].load_state_dict(fresh.bert.encoder.layer[i].state_dict())
    model.bert.pooler.load_state_dict(fresh.bert.pooler.state_dict())
    copy = os.path.join(work, "reinitialised")
    model.save_pretrained(copy)
    for name in os.listdir(model_dir):
        if name.startswith("tokenizer") or name in ("special_tokens_map.json", "vocab.txt"):
            shutil.copy(os.path.join(model_dir, name), copy)
    return copy


def child(variant: dict, argv: list[str]) -> None:
    import pretrain.demo as demo
    from pretrain.__main__ import _run

    if variant["task"] == "function_words":
        demo.word_order_task = function_word_task
    elif variant["task"] == "word_order_period_kept":
        demo.word_order_task = functools.partial(demo.word_order_task, keep_final_punctuation=True)
    if variant["reinit_top_layers"]:
        gain = demo.pretraining_gain

        def reinitialised_gain(model_dir, held_out, **options):
            with tempfile.TemporaryDirectory(prefix="bench-reinit-") as work:
                copy = with_top_layers_reinitialised(model_dir, variant["reinit_top_layers"], work)
                return gain(copy, held_out, **options)

        demo.pretraining_gain = reinitialised_gain
    print("RESULT " + json.dumps(_run(argv)))


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        return child(json.loads(sys.argv[2]), sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 11, 13, 42])
    parser.add_argument(
        "--task", choices=["word_order", "function_words", "word_order_period_kept"], default="word_order"
    )
    parser.add_argument("--reinit_top_layers", type=int, default=0)
    parser.add_argument("flags", nargs="*", help="other minibert-pretrain flags, after `--`")
    args = parser.parse_args()
    variant = {"task": args.task, "reinit_top_layers": args.reinit_top_layers}
    print("| seed | held-out MLM | NSP | pretrained | random weights | gap (splits ahead) | chance |")
    print("|---|---|---|---|---|---|---|")
    gaps = []
    with tempfile.TemporaryDirectory(prefix="bench-demo-gain-") as work:
        for seed in args.seeds:
            r = demo_run(seed, args.flags, os.path.join(work, f"seed{seed}"), variant)
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
