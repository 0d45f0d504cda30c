"""End to end: `minibert-pretrain` against transformers' own recipe, on the same NSP pairs, real tokens per second.

The alternative a user would run: transformers' `BertForPreTraining` (SDPA) trained by `Trainer` with
`DataCollatorForLanguageModeling` (15% masking, padded to the longest) on BERT-style next-sentence pairs — the
very pairs `minibert-pretrain` trains on (its data cache, read by both: transformers ships no NSP data path).
Same model size, sequence length, batch, optimizer (AdamW), precision and CPU threads (the CLI's
`minibert.runs.set_cpu_threads`). Each side is a fresh process that trains `--steps` steps; its speed is the real
(non-padding) tokens over the time of the steps after the first `--warmup` (data loading and collation included,
evaluation, checkpoints and start-up not). Rounds alternate A, B, A, B so machine noise hits both alike; the
reported figure is the median ratio.

    python benchmarks/bench_e2e.py                                # mini, seq 128, batch 32, 60 steps, 2 rounds
    python benchmarks/bench_e2e.py --size base --steps 200 --mixed_precision bf16   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def common_flags(args, corpus: str, cache: str) -> list[str]:
    """The data and model flags both sides share (the transformers side reads the data cache they name)."""
    return [
        "--train_file",
        corpus,
        "--data_cache_dir",
        cache,
        "--vocab_size",
        str(args.vocab_size),
        "--max_seq_length",
        str(args.seq_len),
        "--model_size",
        args.size,
        "--per_device_train_batch_size",
        str(args.batch_size),
        "--learning_rate",
        "1e-4",
        "--num_warmup_steps",
        "0",
        "--seed",
        "0",
        *(["--mixed_precision", args.mixed_precision] if args.mixed_precision else []),
    ]


def run_minibert(args, flags: list[str], workdir: str) -> dict:
    """`minibert-pretrain` as a user runs it; its speed from metrics.jsonl's training records after the warm-up."""
    out = os.path.join(workdir, "minibert")
    cmd = [
        sys.executable,
        "-m",
        "pretrain",
        *flags,
        "--output_dir",
        out,
        "--overwrite_output_dir",
        "true",
        "--max_train_steps",
        str(args.steps),
        "--logging_steps",
        str(args.warmup),
        "--checkpointing_steps",
        "none",
    ]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        records = [r for r in map(json.loads, f) if "tokens_per_second" in r]
    after = [r for r in records if r["step"] > args.warmup]
    seen = [args_tokens(records, r) for r in after]
    tokens = sum(seen)
    seconds = sum(t / r["tokens_per_second"] for t, r in zip(seen, after))
    return {"tokens_per_s": tokens / seconds, "tokens": tokens, "seconds": seconds}


def args_tokens(records: list[dict], record: dict) -> float:
    """The tokens a training record covers: the difference of `tokens_seen` with the record before it."""
    before = [r["tokens_seen"] for r in records if r["step"] < record["step"]]
    return record["tokens_seen"] - (before[-1] if before else 0)


def run_transformers(args, flags: list[str], workdir: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "transformers", "--workdir", workdir, *sys.argv[1:]]
    cmd += ["--", *flags]
    out = subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def transformers_child(args, flags: list[str]) -> None:
    """transformers' recipe on our NSP pairs: `Trainer` + `BertForPreTraining` + `DataCollatorForLanguageModeling`."""
    import torch
    from transformers import (
        BertConfig,
        BertForPreTraining,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from minibert import MiniBertConfig
    from minibert.runs import set_cpu_threads
    from pretrain.__main__ import parse
    from pretrain.data import prepare

    set_cpu_threads()  # the CLI's thread count, for a like-for-like comparison
    _, data_args, training_args, _ = parse([*flags, "--output_dir", os.path.join(args.workdir, "unused")])
    data = prepare(data_args, seed=training_args.seed)  # the cache minibert-pretrain made
    tokenizer = data.tokenizer
    train = data.train_dataset.remove_columns([c for c in data.train_dataset.column_names if c == "example_id"])
    size = MiniBertConfig.from_preset(args.size)  # the preset the CLI's --model_size builds
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden_size,
        num_hidden_layers=size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads,
        intermediate_size=size.intermediate_size,
        max_position_embeddings=max(512, args.seq_len),
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    model = BertForPreTraining(config)
    mlm = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    counted = {"tokens": 0}

    def collate(features):
        batch = mlm(features)
        counted["tokens"] = int(batch["attention_mask"].sum())  # real tokens of the batch the step will take
        return batch

    class Clock(TrainerCallback):
        def __init__(self):
            self.start, self.tokens, self.end = None, 0, None

        def on_step_begin(self, targs, state, control, **kw):
            if state.global_step == args.warmup:
                self.start = time.perf_counter()
            if self.start is not None:
                self.tokens += counted["tokens"]

        def on_step_end(self, targs, state, control, **kw):
            self.end = time.perf_counter()

    clock = Clock()
    targs = TrainingArguments(
        output_dir=os.path.join(args.workdir, "transformers"),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=1e-4,
        warmup_steps=0,
        logging_steps=args.warmup,
        save_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        bf16=args.mixed_precision == "bf16",
        use_cpu=not torch.cuda.is_available(),
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=train, data_collator=collate, callbacks=[clock])
    trainer.train()
    seconds = clock.end - clock.start
    print(
        json.dumps(
            {
                "tokens_per_s": clock.tokens / seconds,
                "tokens": clock.tokens,
                "seconds": seconds,
                "vocab": len(tokenizer),
            }
        )
    )


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="mini")
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument(
        "--vocab_size", type=int, default=8192, help="the tokenizer trained on the corpus (the CLI's default)"
    )
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10, help="steps not timed at the start of each run")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--mixed_precision", default=None)
    p.add_argument("--corpus", default=None, help="a text file (default: the demo corpus's Python documentation)")
    p.add_argument("--json", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return transformers_child(args, extra)

    from pretrain.demo import build_demo_corpus

    workdir = tempfile.mkdtemp(prefix="bench_e2e-")
    # Python's documentation alone (the demo corpus without its dependencies' docstrings): the text BENCHMARKS.md's
    # end-to-end figures were measured on, built in seconds
    corpus = args.corpus or build_demo_corpus(os.path.join(workdir, "corpus"), packages=())
    flags = common_flags(args, corpus, os.path.join(workdir, "cache"))
    args.workdir = workdir
    rounds = []
    for _ in range(args.rounds):
        ours = run_minibert(args, flags, workdir)
        theirs = run_transformers(args, flags, workdir)
        rounds.append(
            {"minibert": ours, "transformers": theirs, "ratio": ours["tokens_per_s"] / theirs["tokens_per_s"]}
        )
        print(
            f"round {len(rounds)}: minibert-pretrain {ours['tokens_per_s']:.0f} real tokens/s, "
            f"transformers Trainer {theirs['tokens_per_s']:.0f} ({rounds[-1]['ratio']:.2f}x)",
            flush=True,
        )
    results = {
        "size": args.size,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "vocab": rounds[0]["transformers"].get("vocab"),  # the trained tokenizer's size (at most --vocab_size)
        "threads": os.environ.get("OMP_NUM_THREADS", "the CLI's choice (usable cores)"),
        "load_average": os.getloadavg(),
        "rounds": rounds,
        "minibert_tokens_per_s": statistics.median(r["minibert"]["tokens_per_s"] for r in rounds),
        "transformers_tokens_per_s": statistics.median(r["transformers"]["tokens_per_s"] for r in rounds),
        "ratio": statistics.median(r["ratio"] for r in rounds),
    }
    print(
        f"median: minibert-pretrain {results['minibert_tokens_per_s']:.0f} vs transformers' recipe "
        f"{results['transformers_tokens_per_s']:.0f} real tokens/s: {results['ratio']:.2f}x "
        f"(vocabulary {results['vocab']}, load average {results['load_average'][0]:.1f})"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
