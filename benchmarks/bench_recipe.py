"""Time to quality: the faithful BERT recipe against `--recipe fast`, at the same wall-clock budget.

    python benchmarks/bench_recipe.py                       # mini size, 8 minutes each, then fine-tuning
    python benchmarks/bench_recipe.py --minutes 3 --size tiny
    python benchmarks/bench_recipe.py --ablate add --minutes 4     # each knob of `fast` alone added to faithful
    python benchmarks/bench_recipe.py --ablate remove --minutes 4  # each knob taken out of `fast`

The corpus is English prose that ships on this machine: the module, class and function docstrings of the
standard library and of the installed packages (torch, transformers, numpy, scipy, scikit-learn, datasets, ...),
read with `ast` (nothing imported), cleaned as the demo corpus's are (`minibert.text.docstring_prose`: running
prose up to the first section, no doctest or code lines), deduplicated. Files are split by a hash of
their path: 85% make the pretraining corpus (its held-out documents give the MLM figures), the other 15% the
downstream task — which package a docstring comes from, balanced — so fine-tuning reads text pretraining never saw.

Both recipes get the same model size, the same WordPiece tokenizer (trained once, beforehand), the same
sequence length and batch, and the same budget of training time (`--time_budget`, with `--schedule_by time`
for both, so that each one's LR schedule ends where the budget does: a step-scheduled faithful run cut by the
budget would be unfairly left at a high LR). They run *concurrently*, one thread each, so that the load of a
shared machine falls on both alike. Both are evaluated at 15% masking (`--eval_mlm_probability 0.15`) every
`--eval_every` steps; the report gives each one's final held-out MLM loss and accuracy, the training time at which
fast first reaches faithful's final loss (and that time over the budget: the goal is <= 0.5), and the test
accuracy of each after the same fine-tuning (`minibert-finetune`, same settings).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PACKAGES = [
    "torch",
    "transformers",
    "numpy",
    "scipy",
    "sklearn",
    "datasets",
    "pandas",
    "accelerate",
    "huggingface_hub",
    "tokenizers",
    "matplotlib",
    "pyarrow",
    "onnx",
    "peft",
    "sentence_transformers",
]
TASK_LABELS = ["stdlib", "torch", "transformers", "numpy", "scipy", "sklearn"]
SIZES = {  # --config_overrides of the model, the same for both recipes
    "tiny": "hidden_size=128,num_hidden_layers=2,num_attention_heads=2,intermediate_size=512",
    "mini": "hidden_size=256,num_hidden_layers=4,num_attention_heads=4,intermediate_size=1024",
}
# Each knob of `fast`: (flags that add it to the faithful run, flags that take it out of the fast run), for
# --ablate add / --ablate remove. Config entries merge with the size's (and the recipe's) entry by entry.
KNOBS = {
    "pre_ln": (["--config_overrides", "pre_layer_norm=true"], ["--config_overrides", "pre_layer_norm=false"]),
    "geglu": (["--config_overrides", "gated_feed_forward=true"], ["--config_overrides", "gated_feed_forward=false"]),
    "no_bias": (
        ["--config_overrides", "attention_bias=false,mlp_bias=false"],
        ["--config_overrides", "attention_bias=true,mlp_bias=true"],
    ),
    "no_dropout": (
        ["--config_overrides", "hidden_dropout_prob=0,attention_probs_dropout_prob=0"],
        ["--config_overrides", "hidden_dropout_prob=0.1,attention_probs_dropout_prob=0.1"],
    ),
    "mlm_only": (["--next_sentence_prediction", "false"], ["--next_sentence_prediction", "true"]),
    "mask_30": (["--mlm_probability", "0.3"], ["--mlm_probability", "0.15"]),
    "wsd_1sqrt": (
        ["--lr_scheduler_type", "warmup_stable_decay", "--lr_decay_ratio", "0.3"],
        ["--lr_scheduler_type", "linear"],
    ),
    "lr_1e-3": (
        ["--learning_rate", "1e-3", "--adam_beta2", "0.98"],
        ["--learning_rate", "1e-4", "--adam_beta2", "0.999"],
    ),
}


# --------------------------------------------------------------------------------------------------------------
# The corpus and the task
# --------------------------------------------------------------------------------------------------------------
def _source_files() -> list[tuple[str, str]]:
    """(label, path) of the .py files of the stdlib (the demo corpus's) and of the installed packages."""
    import importlib.util

    from pretrain.demo import stdlib_files

    out = [("stdlib", path) for path in stdlib_files()]
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for root in spec.submodule_search_locations:
            for base, dirs, files in os.walk(root):
                dirs[:] = sorted(d for d in dirs if d not in ("tests", "test", "__pycache__"))
                out += [(package, os.path.join(base, f)) for f in sorted(files) if f.endswith(".py")]
    return out


def build_corpus(workdir: str) -> dict:
    """The pretraining corpus (BERT format) and the downstream task's CSV files; cached in `workdir`."""
    from minibert.text import docstring_prose
    from pretrain.demo import file_docstrings

    meta_path = os.path.join(workdir, "corpus.json")
    if os.path.isfile(meta_path):
        return json.load(open(meta_path))
    os.makedirs(workdir, exist_ok=True)
    seen, documents, task = set(), [], {label: [] for label in TASK_LABELS}
    for label, path in _source_files():
        for_task = int(hashlib.sha1(path.encode()).hexdigest(), 16) % 100 < 15
        for doc in file_docstrings(path):
            sentences = docstring_prose(doc)  # the demo corpus's cleaner
            key = " ".join(sentences)
            if not sentences or key in seen:
                continue
            seen.add(key)
            if for_task:
                if label in task:
                    task[label].append(" ".join(sentences[:2]))
            else:
                documents.append(sentences)
    random.Random(0).shuffle(documents)
    corpus = os.path.join(workdir, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("\n\n".join("\n".join(d) for d in documents) + "\n")
    per_class = min(len(v) for v in task.values())
    rows = [(text, label) for label, texts in task.items() for text in random.Random(1).sample(texts, per_class)]
    random.Random(2).shuffle(rows)
    n = len(rows)
    splits = {
        "train": rows[: int(0.7 * n)],
        "validation": rows[int(0.7 * n) : int(0.85 * n)],
        "test": rows[int(0.85 * n) :],
    }
    for name, part in splits.items():
        with open(os.path.join(workdir, f"task_{name}.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(part)
    meta = {
        "corpus": corpus,
        "documents": len(documents),
        "words": sum(len(s.split()) for d in documents for s in d),
        "bytes": os.path.getsize(corpus),
        "task_examples": n,
        "task_per_class": per_class,
    }
    json.dump(meta, open(meta_path, "w"), indent=2)
    return meta


# --------------------------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------------------------
def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": ROOT}


def common_flags(args, meta: dict, tokenizer: str) -> list[str]:
    return [
        "--train_file",
        meta["corpus"],
        "--tokenizer_name",
        tokenizer,
        "--data_cache_dir",
        os.path.join(args.workdir, "cache"),
        "--max_seq_length",
        "128",
        "--per_device_train_batch_size",
        "32",
        "--per_device_eval_batch_size",
        "64",
        "--validation_split_percentage",
        "2",
        "--max_eval_samples",
        "512",
        "--dupe_factor",
        "1",
        "--time_budget",
        str(args.minutes),
        "--schedule_by",
        "time",
        "--warmup_ratio",
        "0.06",
        "--eval_mlm_probability",
        "0.15",
        "--eval_steps",
        str(args.eval_every),
        "--logging_steps",
        "25",
        "--checkpointing_steps",
        "100000",
        "--checkpoints_total_limit",
        "1",
        "--overwrite_output_dir",
        "true",
        "--seed",
        "0",
    ]


def train_tokenizer(args, meta: dict) -> str:
    """One WordPiece vocabulary for every run (trained by a short dry run of the pipeline)."""
    from pretrain.__main__ import parse
    from pretrain.data import prepare_pretraining_data

    path = os.path.join(args.workdir, "tokenizer")
    if not os.path.isdir(path):
        _, data_args, _, _ = parse(
            [
                "--train_file",
                meta["corpus"],
                "--vocab_size",
                str(args.vocab_size),
                "--data_cache_dir",
                os.path.join(args.workdir, "cache"),
                "--max_seq_length",
                "128",
                "--dupe_factor",
                "1",
                "--validation_split_percentage",
                "2",
            ]
        )
        prepare_pretraining_data(data_args, seed=0).tokenizer.save_pretrained(path)
    return path


def start_pretraining(name: str, flags: list[str], args) -> tuple[subprocess.Popen, str]:
    out = os.path.join(args.workdir, "runs", name)
    cmd = [sys.executable, "-m", "pretrain", *flags, "--output_dir", out]
    log = open(os.path.join(args.workdir, f"{name}.log"), "w")
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT), out


def eval_curve(out: str) -> list[tuple[float, float, float]]:
    """(training seconds, held-out MLM loss, accuracy) of every evaluation of a run."""
    curve = []
    for line in open(os.path.join(out, "metrics.jsonl")):
        record = json.loads(line)
        if "eval_mlm_loss" in record:
            curve.append((record["train_runtime"], record["eval_mlm_loss"], record["eval_mlm_accuracy"]))
    return curve


def finetune(name: str, checkpoint: str, args) -> subprocess.Popen:
    task = args.workdir
    cmd = [
        sys.executable,
        "-m",
        "finetune",
        "--model_name_or_path",
        checkpoint,
        "--train_file",
        os.path.join(task, "task_train.csv"),
        "--validation_file",
        os.path.join(task, "task_validation.csv"),
        "--test_file",
        os.path.join(task, "task_test.csv"),
        "--output_dir",
        os.path.join(args.workdir, "finetuned", name),
        "--num_train_epochs",
        "5",
        "--learning_rate",
        "3e-4",
        "--per_device_train_batch_size",
        "32",
        "--max_seq_length",
        "64",
        "--seed",
        "0",
        "--overwrite_output_dir",
        "true",
    ]
    log = open(os.path.join(args.workdir, f"finetune_{name}.log"), "w")
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT)


def _wait(procs: dict[str, subprocess.Popen], args) -> None:
    for name, proc in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"{name} failed: see {os.path.join(args.workdir, name + '.log')}")


EVAL_FORMATS = {"nsp_pairs": True, "packed_text": False}  # held-out set name -> --next_sentence_prediction


def cross_evaluate(args, meta: dict, tokenizer: str, outs: dict[str, str]) -> dict:
    """Each run's final model on both held-out sets, at 15% masking, the same masks for every model.

    Each run evaluates itself during training on held-out data in its own format: the faithful run on NSP pairs
    (half of them with a random second segment, shorter on average), the fast run on its documents' sentences
    packed in order (longer contiguous context). Those two sets hold the same held-out documents but differ in how
    easy their masked tokens are, so the final comparison is made here on both, with the MLM head alone (a
    pretraining checkpoint loads as a masked LM; the NSP label is left out).
    """
    import torch
    from accelerate import Accelerator
    from torch.utils.data import DataLoader
    from transformers import AutoModelForMaskedLM

    import minibert  # noqa: F401  (registers MiniBERT with the Auto classes)
    from pretrain.__main__ import parse
    from pretrain.data import prepare_pretraining_data
    from pretrain.evaluation import eval_collator, evaluate
    from pretrain.train import build_collator

    torch.set_num_threads(2)  # the training runs have ended: this process has the machine
    accelerator = Accelerator(cpu=True)
    results: dict = {name: {} for name in outs}
    for held_out, nsp in EVAL_FORMATS.items():
        flags = [*common_flags(args, meta, tokenizer), "--next_sentence_prediction", str(nsp).lower()]
        _, data_args, training_args, _ = parse([*flags, "--output_dir", os.path.join(args.workdir, "runs")])
        data = prepare_pretraining_data(data_args, seed=training_args.seed)  # the runs' cache: read, not rebuilt
        collator = eval_collator(build_collator(data_args, data.tokenizer, training_args.seed), 0.15)

        def collate(examples, collator=collator):
            batch = collator(examples)
            batch.pop("next_sentence_label", None)  # the MLM head alone, for every model
            return batch

        loader = DataLoader(data.eval_dataset, batch_size=64, shuffle=False, collate_fn=collate)
        for name, out in outs.items():
            model = AutoModelForMaskedLM.from_pretrained(out)
            metrics = evaluate(model, loader, accelerator, seed=training_args.seed, next_sentence_prediction=False)
            results[name][held_out] = {
                k: metrics[k] for k in ("eval_mlm_loss", "eval_mlm_accuracy", "eval_masked_tokens", "eval_samples")
            }
    return results


def compare(args, meta: dict, tokenizer: str) -> dict:
    base = common_flags(args, meta, tokenizer) + ["--config_overrides", SIZES[args.size]]
    runs = {"faithful": base, "fast": ["--recipe", "fast", *base]}
    started = {name: start_pretraining(name, flags, args) for name, flags in runs.items()}
    _wait({name: proc for name, (proc, _) in started.items()}, args)
    curves = {name: eval_curve(out) for name, (_, out) in started.items()}
    target = curves["faithful"][-1][1]
    reached = next((t for t, loss, _ in curves["fast"] if loss <= target), None)
    common = cross_evaluate(args, meta, tokenizer, {name: out for name, (_, out) in started.items()})
    tuned = {name: finetune(name, out, args) for name, (_, out) in started.items()}
    _wait({f"finetune_{n}": p for n, p in tuned.items()}, args)
    downstream = {}
    for name in runs:
        results = json.load(open(os.path.join(args.workdir, "finetuned", name, "all_results.json")))
        downstream[name] = {k: results[k] for k in ("eval_accuracy", "test_accuracy") if k in results}
    final = {name: json.load(open(os.path.join(out, "all_results.json"))) for name, (_, out) in started.items()}
    return {
        "corpus": meta,
        "size": args.size,
        "minutes": args.minutes,
        "curves": curves,
        "final": {
            n: {
                k: r.get(k)
                for k in (
                    "eval_mlm_loss",
                    "eval_mlm_accuracy",
                    "train_steps",
                    "train_tokens",
                    "train_runtime",
                    "num_parameters",
                )
            }
            for n, r in final.items()
        },
        "fast_reaches_faithful_final_loss_at_s": reached,
        "time_ratio": None if reached is None else reached / final["faithful"]["train_runtime"],
        "downstream": downstream,
        "common_held_out": common,
    }


def _with_overrides(size: str, flags: list[str]) -> list[str]:
    """`flags` with their --config_overrides (if any) appended to the size's, as one --config_overrides."""
    overrides, rest = size, []
    for i in range(0, len(flags), 2):
        if flags[i] == "--config_overrides":
            overrides += "," + flags[i + 1]
        else:
            rest += flags[i : i + 2]
    return ["--config_overrides", overrides, *rest]


def ablate(args, meta: dict, tokenizer: str) -> dict:
    """Each knob alone, the same budget, two runs at a time (one thread each): `add` puts each knob of fast into
    the faithful run; `remove` takes each one out of the fast run (what it is worth inside the recipe)."""
    base = common_flags(args, meta, tokenizer)
    start = [] if args.ablate == "add" else ["--recipe", "fast"]
    reference = "faithful" if args.ablate == "add" else "fast"
    knob_flags = {name: flags[0 if args.ablate == "add" else 1] for name, flags in KNOBS.items()}
    runs = {reference: [], **{f"{args.ablate}_{name}": flags for name, flags in knob_flags.items()}}
    results = {}
    names = list(runs)
    for i in range(0, len(names), 2):
        procs = {}
        for name in names[i : i + 2]:
            flags = [*start, *base, *_with_overrides(SIZES[args.size], runs[name])]
            procs[name] = start_pretraining(f"ablate_{name}", flags, args)
        _wait({f"ablate_{n}": p for n, (p, _) in procs.items()}, args)
        for name, (_, out) in procs.items():
            results[name] = eval_curve(out)[-1]
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=8.0, help="training time budget of each run")
    parser.add_argument("--size", choices=sorted(SIZES), default="mini")
    parser.add_argument("--vocab_size", type=int, default=8192)
    parser.add_argument("--eval_every", type=int, default=20, help="optimizer steps between evaluations")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "benchmarks", "results", "recipe"))
    parser.add_argument(
        "--ablate",
        choices=["add", "remove"],
        help="each knob of fast alone: added to faithful (add), or taken out of fast (remove)",
    )
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    meta = build_corpus(args.workdir)
    print(
        f"corpus: {meta['documents']:,} documents, {meta['words']:,} words ({meta['bytes'] / 1e6:.1f} MB); task: "
        f"{meta['task_examples']:,} docstrings, {meta['task_per_class']} per class ({', '.join(TASK_LABELS)})"
    )
    tokenizer = train_tokenizer(args, meta)
    if args.ablate:
        results = ablate(args, meta, tokenizer)
        print(f"\n{'run':<18} {'train s':>8} {'MLM loss':>9} {'MLM acc':>8}")
        for name, (seconds, loss, acc) in results.items():
            print(f"{name:<18} {seconds:8.0f} {loss:9.3f} {acc:8.3f}")
        json.dump(results, open(os.path.join(args.workdir, f"ablation_{args.ablate}.json"), "w"), indent=2)
        return 0
    report = compare(args, meta, tokenizer)
    json.dump(report, open(os.path.join(args.workdir, "report.json"), "w"), indent=2)
    print(
        f"\n{args.size} model, {args.minutes:g} min of training each (concurrent, 1 thread each); held-out MLM at 15%:"
    )
    print(f"{'recipe':<9} {'steps':>6} {'tokens':>10} {'MLM loss':>9} {'MLM acc':>8} {'task val':>9} {'task test':>10}")
    for name, final in report["final"].items():
        down = report["downstream"][name]
        print(
            f"{name:<9} {final['train_steps']:6d} {final['train_tokens']:10,d} {final['eval_mlm_loss']:9.3f} "
            f"{final['eval_mlm_accuracy']:8.3f} {down.get('eval_accuracy', float('nan')):9.3f} "
            f"{down.get('test_accuracy', float('nan')):10.3f}"
        )
    print("the final models on both held-out sets (15% masking, MLM head only, the same masks for both):")
    for held_out in EVAL_FORMATS:
        cells = "  ".join(
            f"{name} {r[held_out]['eval_mlm_loss']:.3f} / {r[held_out]['eval_mlm_accuracy']:.3f}"
            for name, r in report["common_held_out"].items()
        )
        print(f"  {held_out:<12} (loss / accuracy)  {cells}")
    reached = report["fast_reaches_faithful_final_loss_at_s"]
    if reached is None:
        print("fast never reached faithful's final held-out MLM loss")
    else:
        print(
            f"fast reached faithful's final held-out MLM loss after {reached:.0f} s of training: "
            f"{report['time_ratio']:.2f} of faithful's time (goal <= 0.5)"
        )
    print(f"(wall time of the benchmark: {(time.monotonic() - t0) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
