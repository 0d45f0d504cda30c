"""Pretraining-data throughput and peak memory: minibert's pipeline against what a user would write by hand.

    python benchmarks/bench_data.py                    # 5 MB and 50 MB corpora, 1 process and all cores
    python benchmarks/bench_data.py --sizes 2 20 --workdir /tmp/bench
    python benchmarks/bench_data.py --pipeline         # the input pipeline: collator and DataLoader, sequences/s

Both sides turn the same synthetic BERT-format corpus (generated here, one sentence per line, blank line between
documents) into NSP instances (`[CLS] A [SEP] B [SEP]`, max_seq_length 128, dupe_factor 1) with the same
WordPiece vocabulary (trained once, beforehand, and not timed):

- ours:     `prepare_pretraining_data` from a cold cache: read -> tokenize (`datasets.map`) -> pair -> Arrow on disk;
- baseline: read the file into Python lists, `BertTokenizerFast(sentences)`, Google's
            `create_instances_from_document` in plain Python over the in-memory lists, instances kept in memory;
- run_mlm:  transformers' `run_mlm.py` recipe: `load_dataset("text")`, `datasets.map` with the fast tokenizer,
            `group_texts` into 128-token blocks (no NSP pairs), Arrow in the `datasets` cache;
- bare:     the Rust tokenizer's `encode_batch_fast` over the same sentences, nothing paired or written: the
            physical limit of this design. minibert's tokens/s as a fraction of it is the pipeline's efficiency.

`--pipeline` measures what feeds the training loop instead, from a prepared cache (made here, not timed): the
collator alone on one core (batch 128, from feature dicts and from bulk `ExampleBatch` reads, whole-word masking off
and on), then the real `DataLoader` (`pretrain.train.build_dataloaders`'s settings: shuffled, drop_last, its own
generator, workers not persistent) wrapped by accelerate as the loop iterates it, with 0, 1, 2 and 4 workers, at
max_seq_length 128 and 512, reading rows as `datasets` dicts and in bulk (`pretrain.batches.ArrowExamples`). Each
figure is sequences/s over whole epochs after the first batch (time to the first batch, worker start-up
included, is reported beside it), next to what BERT-base consumes on one H100 at 40% and 50% MFU
(`pretrain.throughput.step_flops`, full-length sequences, 15% masked).

Each run is a fresh subprocess, so its peaks are its own: peak RSS (VmHWM, which also counts the pages of
memory-mapped Arrow files, i.e. file cache the kernel can drop), peak anonymous memory (RssAnon, sampled every
20 ms: what the process really holds) above what it held after importing its libraries, and for `num_proc` > 1
the largest worker's peak RSS (which includes pages shared with the parent). "1 core" pins the tokenizers
library to one thread (RAYON_NUM_THREADS=1) and uses one process on both sides; "all cores" lets the baseline's
tokenizer use every core (its batch encoding is multi-threaded) and gives ours `num_proc` = the core count.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_SEQ_LENGTH = 128


# ------------------------------------------------------------------------------------------------------------
# Corpus and tokenizer
# ------------------------------------------------------------------------------------------------------------


def make_corpus(path: str, megabytes: float, seed: int = 0) -> None:
    """Zipf-distributed pseudo-words (so WordPiece finds sub-words), 5-30 words a sentence, 3-60 a document."""
    import numpy as np

    rng = np.random.default_rng(seed)
    syllables = [a + b for a in "bcdfghjklmnprstvwz" for b in "aeiou"] + ["an", "er", "in", "on", "st", "th"]
    words = sorted({"".join(rng.choice(syllables, size=rng.integers(1, 5))) for _ in range(40_000)})
    weights = 1.0 / (np.arange(len(words)) + 10.0)
    order = rng.permutation(len(words))
    probabilities = weights[order] / weights.sum()
    target = int(megabytes * 1_000_000)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            n_sentences = int(rng.integers(3, 61))
            lengths = rng.integers(5, 31, size=n_sentences)
            picks = rng.choice(len(words), size=int(lengths.sum()), p=probabilities)
            lines, start = [], 0
            for length in lengths:
                sentence = " ".join(words[i] for i in picks[start : start + length])
                lines.append(sentence.capitalize() + ".")
                start += length
            block = "\n".join(lines) + "\n\n"
            f.write(block)
            written += len(block.encode())


def train_shared_tokenizer(corpus: str, directory: str) -> None:
    sys.path.insert(0, ROOT)
    from pretrain.tokenizer import train_tokenizer

    def texts():
        with open(corpus, encoding="utf-8") as f:
            batch = []
            for line in f:
                batch.append(line)
                if len(batch) == 10_000:
                    yield batch
                    batch = []
            yield batch

    train_tokenizer(texts, vocab_size=8192, show_progress=False).save_pretrained(directory)


# ------------------------------------------------------------------------------------------------------------
# The two pipelines (each runs in its own process)
# ------------------------------------------------------------------------------------------------------------


def _our_arguments(corpus: str, tokenizer: str, **overrides):
    """`pretrain.data`'s arguments for the bench: the corpus, the shared tokenizer, MAX_SEQ_LENGTH, no held-out part."""
    from pretrain.data import DataArguments

    return DataArguments(
        train_file=[corpus],
        tokenizer_name=tokenizer,
        max_seq_length=MAX_SEQ_LENGTH,
        validation_split_percentage=0,
        **overrides,
    )


def run_ours(corpus: str, tokenizer: str, num_proc: int, cache: str) -> dict:
    sys.path.insert(0, ROOT)
    import datasets

    from pretrain.data import prepare

    datasets.disable_progress_bars()
    imported = _memory_after_imports()
    args = _our_arguments(corpus, tokenizer, preprocessing_num_workers=num_proc, data_cache_dir=cache)
    start = time.perf_counter()
    data = prepare(args, seed=0)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    prepare(args, seed=0)  # the same inputs again: a cache hit
    warm = time.perf_counter() - start
    result = {
        "seconds": seconds,
        "warm_seconds": warm,
        "tokens": data.stats["tokens"],
        "instances": data.stats["instances"],
        "cache_bytes": data.stats["cache_bytes"],
        **imported,
    }
    if os.environ.get("BENCH_FIRST_STEP"):
        result["first_step_seconds"] = first_step_seconds(corpus, tokenizer, cache)
    return result


def first_step_seconds(corpus: str, tokenizer: str, cache: str) -> float:
    """Wall time of `minibert-pretrain` on this (prepared) cache up to the end of its first optimizer step: a
    fresh process (imports, accelerate, cache look-up, model), `--dry_run` so nothing is exported."""
    command = [
        sys.executable,
        "-m",
        "pretrain",
        "--train_file",
        corpus,
        "--tokenizer_name",
        tokenizer,
        "--max_seq_length",
        str(MAX_SEQ_LENGTH),
        "--validation_split_percentage",
        "0",
        "--seed",
        "0",
        "--data_cache_dir",
        cache,
        "--max_train_steps",
        "1",
        "--dry_run",
        "true",
        "--output_dir",
        os.path.join(cache, "out"),
        "--config_overrides",
        "hidden_size=64,num_hidden_layers=2",
    ]
    start = time.perf_counter()
    process = subprocess.Popen(command, env=dict(os.environ, PYTHONPATH=ROOT), stderr=subprocess.PIPE, text=True)
    for line in process.stderr:  # the progress bar reaches 1/1 at the end of the first step
        if "1/1" in line.replace("\r", "\n"):
            break
    seconds = time.perf_counter() - start
    process.kill()
    process.wait()
    return seconds


def run_stream(corpus: str, tokenizer: str, seconds: float = 60.0) -> dict:
    """--streaming: instances read, tokenized and paired on the fly, for `seconds`."""
    sys.path.insert(0, ROOT)
    from pretrain.data import prepare

    imported = _memory_after_imports()
    args = _our_arguments(corpus, tokenizer, streaming=True, data_cache_dir=tempfile.mkdtemp())
    stream = prepare(args, seed=0).train_dataset
    start, tokens, instances = time.perf_counter(), 0, 0
    for row in stream:
        tokens += len(row["input_ids"])
        instances += 1
        if instances % 1000 == 0 and time.perf_counter() - start > seconds:
            break
    return {
        "seconds": time.perf_counter() - start,
        "tokens": tokens,
        "instances": instances,
        **imported,
    }


def run_baseline(corpus: str, tokenizer: str) -> dict:
    from transformers import BertTokenizerFast

    imported = _memory_after_imports()
    start = time.perf_counter()
    tok = BertTokenizerFast.from_pretrained(tokenizer)
    documents, current = [], []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                if current:
                    documents.append(current)
                current = []
            else:
                current.append(line)
    if current:
        documents.append(current)
    all_documents = []
    for i in range(0, len(documents), 1000):  # tokenize 1000 documents' sentences per call
        chunk = documents[i : i + 1000]
        ids = tok([s for doc in chunk for s in doc], add_special_tokens=False)["input_ids"]
        k = 0
        for doc in chunk:
            all_documents.append(ids[k : k + len(doc)])
            k += len(doc)
    rng = random.Random(0)
    instances = []
    for document_index in range(len(all_documents)):
        instances += google_create_instances_from_document(
            all_documents, document_index, MAX_SEQ_LENGTH, 0.1, rng, tok.cls_token_id, tok.sep_token_id
        )
    seconds = time.perf_counter() - start
    tokens = sum(len(s) for doc in all_documents for s in doc)
    return {
        "seconds": seconds,
        "tokens": tokens,
        "instances": len(instances),
        **imported,
    }


def run_bare_tokenizer(corpus: str, tokenizer: str) -> dict:
    """The physical limit of this design: the Rust tokenizer's `encode_batch_fast` over the corpus's sentences,
    10,000 lines a call, timed alone (the lines are read beforehand); nothing paired, nothing written."""
    from tokenizers import Tokenizer

    imported = _memory_after_imports()
    tok = Tokenizer.from_file(os.path.join(tokenizer, "tokenizer.json"))
    with open(corpus, encoding="utf-8") as f:
        lines = [line for line in map(str.strip, f) if line]
    start = time.perf_counter()  # the tokenizer alone: the file is read (and split into lines) beforehand
    tokens = 0
    for i in range(0, len(lines), 10_000):
        tokens += sum(len(e.ids) for e in tok.encode_batch_fast(lines[i : i + 10_000], add_special_tokens=False))
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "tokens": tokens,
        "instances": 0,
        **imported,
    }


def run_mlm_recipe(corpus: str, tokenizer: str, num_proc: int, cache: str) -> dict:
    """What transformers' `run_mlm.py` does with a text file (no --line_by_line): `load_dataset("text")`,
    `datasets.map` with the fast tokenizer (special-tokens mask included, as there), then `group_texts` into
    blocks of max_seq_length; on disk in the `datasets` cache. No NSP pairs: the recipe does not make them."""
    from itertools import chain

    import datasets
    from datasets import load_dataset
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    imported = _memory_after_imports()
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(tokenizer)
    raw = load_dataset("text", data_files={"train": corpus}, cache_dir=cache)["train"]
    proc = num_proc if num_proc > 1 else None

    def tokenize_function(examples):
        return tok(examples["text"], return_special_tokens_mask=True)

    tokenized = raw.map(tokenize_function, batched=True, num_proc=proc, remove_columns=["text"])

    def group_texts(examples):
        concatenated = {k: list(chain(*examples[k])) for k in examples}
        total = (len(concatenated["input_ids"]) // MAX_SEQ_LENGTH) * MAX_SEQ_LENGTH
        return {
            k: [t[i : i + MAX_SEQ_LENGTH] for i in range(0, total, MAX_SEQ_LENGTH)] for k, t in concatenated.items()
        }

    grouped = tokenized.map(group_texts, batched=True, num_proc=proc)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "tokens": len(grouped) * MAX_SEQ_LENGTH,
        "instances": len(grouped),
        **imported,
    }


# The baseline is Google's function verbatim (not pretrain.nsp's port, which it is measured against): long as the
# original is.
def google_create_instances_from_document(
    all_documents, document_index, max_seq_length, short_seq_prob, rng, cls_id, sep_id
):
    """Google's create_pretraining_data.py algorithm, as written there (minus masking, which is per batch)."""
    document = all_documents[document_index]
    max_num_tokens = max_seq_length - 3
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)
    instances = []
    current_chunk = []
    current_length = 0
    i = 0
    while i < len(document):
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        if i == len(document) - 1 or current_length >= target_seq_length:
            if current_chunk:
                a_end = 1
                if len(current_chunk) >= 2:
                    a_end = rng.randint(1, len(current_chunk) - 1)
                tokens_a = []
                for j in range(a_end):
                    tokens_a.extend(current_chunk[j])
                tokens_b = []
                is_random_next = False
                if len(current_chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    target_b_length = target_seq_length - len(tokens_a)
                    for _ in range(10):
                        random_document_index = rng.randint(0, len(all_documents) - 1)
                        if random_document_index != document_index:
                            break
                    random_document = all_documents[random_document_index]
                    random_start = rng.randint(0, len(random_document) - 1)
                    for j in range(random_start, len(random_document)):
                        tokens_b.extend(random_document[j])
                        if len(tokens_b) >= target_b_length:
                            break
                    num_unused_segments = len(current_chunk) - a_end
                    i -= num_unused_segments
                else:
                    is_random_next = False
                    for j in range(a_end, len(current_chunk)):
                        tokens_b.extend(current_chunk[j])
                while len(tokens_a) + len(tokens_b) > max_num_tokens:
                    trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
                    if rng.random() < 0.5:
                        del trunc_tokens[0]
                    else:
                        trunc_tokens.pop()
                instances.append(
                    {
                        "input_ids": [cls_id, *tokens_a, sep_id, *tokens_b, sep_id],
                        "token_type_ids": [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1),
                        "next_sentence_label": int(is_random_next),
                    }
                )
            current_chunk = []
            current_length = 0
        i += 1
    return instances


def _memory_after_imports() -> dict:
    """Resident memory once a run's libraries are imported (its peaks are reported above these)."""
    return {"imported_mb": _rss_mb(), "imported_anon_mb": _rss_mb("RssAnon")}


def _rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _AnonymousPeak(threading.Thread):
    """Samples RssAnon: memory the process owns, unlike the pages of memory-mapped Arrow files, which VmHWM also
    counts but the kernel reclaims at will (they are the file cache). `tree_peak`: the same summed over this
    process and all its descendants (the `num_proc` workers of `datasets.map`)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = 0.0
        self.tree_peak = 0.0

    def run(self):
        while True:
            self.peak = max(self.peak, _rss_mb("RssAnon"))
            self.tree_peak = max(self.tree_peak, sum(_anon_mb(pid) for pid in _tree(os.getpid())))
            time.sleep(0.02)


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return pids


def _anon_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def child(args) -> None:
    sampler = _AnonymousPeak()
    sampler.start()
    if args.child == "ours":
        result = run_ours(args.corpus, args.tokenizer, args.num_proc, args.cache)
    elif args.child == "stream":
        result = run_stream(args.corpus, args.tokenizer)
    elif args.child == "bare":
        result = run_bare_tokenizer(args.corpus, args.tokenizer)
    elif args.child == "run_mlm":
        result = run_mlm_recipe(args.corpus, args.tokenizer, args.num_proc, args.cache)
    else:
        result = run_baseline(args.corpus, args.tokenizer)
    result["peak_mb"] = _rss_mb("VmHWM")
    result["anon_peak_mb"] = max(sampler.peak, _rss_mb("RssAnon"))
    result["tree_anon_peak_mb"] = sampler.tree_peak
    # Workers of datasets.map (num_proc > 1) have exited and been waited for: their largest peak.
    result["worker_peak_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


# ------------------------------------------------------------------------------------------------------------
# The input pipeline: collator and DataLoader sequences/s (--pipeline)
# ------------------------------------------------------------------------------------------------------------


def h100_appetite(seq_len: int, mfu: float, masked: float = 0.15) -> float:
    """Sequences/s that BERT-base (L12 H768, vocab 30522) trains on at `mfu` of one H100's dense bf16 peak."""
    from minibert import MiniBertConfig
    from pretrain.throughput import PEAK_BF16_TFLOPS, step_flops

    config = MiniBertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, intermediate_size=3072)
    flops = step_flops(config, seq_len, seq_len * seq_len, masked * seq_len)
    return mfu * PEAK_BF16_TFLOPS["H100"] * 1e12 / flops


def _prepared(corpus: str, tokenizer: str, seq_len: int, cache: str, dupe_factor: int):
    from pretrain.data import prepare

    args = _our_arguments(corpus, tokenizer, data_cache_dir=cache, dupe_factor=dupe_factor)
    args.max_seq_length = seq_len
    return prepare(args, seed=0)


def _rate(function, argument, seconds: float) -> tuple[float, float]:
    """(calls per wall second, calls per CPU second of this process) of `function(argument)` over about `seconds`,
    after one warm-up call. On a shared machine the CPU-second figure is the per-core one."""
    function(argument)
    calls, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        function(argument)
        calls += 1
    return calls / (time.perf_counter() - start), calls / max(time.process_time() - cpu, 1e-9)


def _cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (data-loader workers, once joined)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _collator_at(revision: str):
    """`DataCollatorForPreTraining` as pretrain/collator.py was at a git revision (`git show`), for a before/after
    figure measured in the same process as today's."""
    import importlib.util

    source = subprocess.run(
        ["git", "show", f"{revision}:pretrain/collator.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    path = os.path.join(tempfile.mkdtemp(), "collator_at_revision.py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("collator_at_revision", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.DataCollatorForPreTraining


def collator_rates(data, batch_size: int, seconds: float, baseline: str | None) -> dict[str, tuple[float, float]]:
    """Sequences per wall second and per CPU second of the collator alone on one thread, its input already read
    (dicts, or a bulk batch); with `baseline`, also the collator of that git revision (dicts: all it takes)."""
    import torch

    from pretrain.batches import ArrowExamples
    from pretrain.collator import DataCollatorForPreTraining

    torch.set_num_threads(1)
    rows = list(range(batch_size))
    as_dicts = [data.train_dataset[i] for i in rows]
    bulk = ArrowExamples(data.train_dataset).__getitems__(rows)
    rates = {}
    for whole_word in (False, True):
        words = ", whole words" if whole_word else ""
        collator = DataCollatorForPreTraining(data.tokenizer, whole_word_mask=whole_word, seed=0)
        if baseline:
            old = _collator_at(baseline)(data.tokenizer, whole_word_mask=whole_word, seed=0)
            wall, cpu = _rate(old, as_dicts, seconds)
            rates[f"{baseline} (before), dicts{words}"] = (batch_size * wall, batch_size * cpu)
        for name, batch in (("dicts", as_dicts), ("bulk", bulk)):
            wall, cpu = _rate(collator, batch, seconds)
            rates[f"{name}{words}"] = (batch_size * wall, batch_size * cpu)
    return rates


def loader_rate(data, batch_size: int, workers: int, bulk: bool, epochs: int) -> tuple[float, float, float]:
    """(sequences/s after the first batch, seconds to the first batch, sequences per CPU second of the main process
    and its workers together, start-up included) of the training DataLoader, built with `build_dataloaders`'
    settings and prepared by accelerate, as the loop iterates it."""
    import torch
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from pretrain.batches import ArrowExamples
    from pretrain.train import build_collator

    collator = build_collator(_our_arguments("-", "-"), data.tokenizer, seed=0)
    dataset = ArrowExamples(data.train_dataset) if bulk else data.train_dataset
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=collator,
        generator=torch.Generator().manual_seed(0),
        num_workers=workers,
        pin_memory=False,  # CPU here; on CUDA build_dataloaders pins (a copy the benchmark cannot time)
        persistent_workers=False,
    )
    loader = Accelerator(cpu=True).prepare_data_loader(loader)
    sequences, first, start, cpu = 0, None, time.perf_counter(), _cpu_seconds()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        collator.set_epoch(epoch)
        for batch in loader:
            if first is None:
                first = time.perf_counter()
                continue
            sequences += batch["input_ids"].shape[0]
    end = time.perf_counter()
    del loader  # its workers are joined: their CPU time is counted
    batches = sequences + batch_size  # the first batch too
    return sequences / (end - first), first - start, batches / max(_cpu_seconds() - cpu, 1e-9)


def pipeline(workdir: str, megabytes: float, seconds: float, epochs: int, baseline: str | None) -> None:
    """Collator per core and DataLoader sequences/s at seq 128 and 512, beside one H100's appetite."""
    sys.path.insert(0, ROOT)
    import datasets

    datasets.disable_progress_bars()
    corpus = os.path.join(workdir, f"corpus-{megabytes:g}MB.txt")
    if not os.path.isfile(corpus):
        make_corpus(corpus, megabytes)
    tokenizer = os.path.join(workdir, "tokenizer")
    if not os.path.isdir(tokenizer):
        train_shared_tokenizer(corpus, tokenizer)
    cache = os.path.join(workdir, "pipeline-cache")
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} at the start")
    for seq_len, batch_size, dupe in ((128, 128, 2), (512, 128, 4)):
        data = _prepared(corpus, tokenizer, seq_len, cache, dupe)
        mean = data.stats["mean_seq_length"]
        need = {mfu: h100_appetite(seq_len, mfu) for mfu in (0.4, 0.5)}
        print(
            f"\nseq {seq_len}, batch {batch_size}: {len(data.train_dataset)} sequences, mean length {mean}; "
            f"BERT-base on one H100 needs {need[0.4]:,.0f} sequences/s at 40% MFU, {need[0.5]:,.0f} at 50%"
        )
        if seq_len == 128:
            print("| collator alone, 1 thread | sequences/s (wall) | sequences per CPU second |\n|---|---|---|")
            for name, (wall, cpu) in collator_rates(data, batch_size, seconds, baseline).items():
                print(f"| {name} | {wall:,.0f} | {cpu:,.0f} |", flush=True)
        print(
            "| reading | workers | sequences/s | x H100 need at 50% MFU | seconds to the first batch | "
            "sequences per CPU second (all processes) | cores to feed one H100 at 50% MFU |"
        )
        print("|---|---|---|---|---|---|---|")
        for bulk in (False, True):
            for workers in (0, 1, 2, 4):
                rate, first, per_cpu = loader_rate(data, batch_size, workers, bulk, epochs)
                name = "bulk (ArrowExamples)" if bulk else "rows (datasets dicts)"
                print(
                    f"| {name} | {workers} | {rate:,.0f} | {rate / need[0.5]:.2f} | {first:.2f} | {per_cpu:,.0f} | "
                    f"{need[0.5] / per_cpu:.2f} |",
                    flush=True,
                )
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} at the end")


# ------------------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------------------


def scale(sizes: list[float], workdir: str, cores: int) -> None:
    """The corpus-scale figures: preparation time and memory, cache size, start-up on a cache hit, streaming."""
    base = os.path.join(workdir, "corpus-50MB.txt")
    if not os.path.isfile(base):
        make_corpus(base, 50)
    tokenizer = os.path.join(workdir, "tokenizer")
    if not os.path.isdir(tokenizer):
        train_shared_tokenizer(base, tokenizer)
    print(
        "| corpus | prepare seconds (num_proc) | M tokens/s | peak anonymous MB over imports | peak anonymous MB, all "
        "processes | worker peak RSS MB | cache bytes / token | cache hit: start to 1st step | streaming M tokens/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        # Copies of the 50 MB corpus (generating text is slower than preparing it); documents repeat, costs do not.
        corpus = os.path.join(workdir, f"scale-{size:g}MB.txt")
        with open(base, "rb") as f:
            chunk = f.read()
        with open(corpus, "wb") as f:
            for _ in range(max(1, round(size / 50))):
                f.write(chunk)
        os.environ["BENCH_FIRST_STEP"] = "1"
        ours = measure("ours", corpus, tokenizer, cores, False, workdir)
        del os.environ["BENCH_FIRST_STEP"]
        stream = measure("stream", corpus, tokenizer, 1, False, workdir)
        os.remove(corpus)
        print(
            f"| {os.path.getsize(base) * round(size / 50) / 1e6:.0f} MB | {ours['seconds']:.0f} ({cores}) | "
            f"{ours['tokens'] / ours['seconds'] / 1e6:.2f} | {ours['anon_peak_mb'] - ours['imported_anon_mb']:.0f} | "
            f"{ours['tree_anon_peak_mb']:.0f} | {ours['worker_peak_mb']:.0f} | {ours['cache_bytes'] / ours['tokens']:.2f} | "
            f"{ours['first_step_seconds']:.1f} s | {stream['tokens'] / stream['seconds'] / 1e6:.3f} |",
            flush=True,
        )


def measure(kind: str, corpus: str, tokenizer: str, num_proc: int, one_core: bool, workdir: str) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT)
    env["TOKENIZERS_PARALLELISM"] = "false" if one_core else "true"
    if one_core:
        env["RAYON_NUM_THREADS"] = "1"
    cache = tempfile.mkdtemp(dir=workdir, prefix="cache-")
    command = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--corpus",
        corpus,
        "--tokenizer",
        tokenizer,
        "--num_proc",
        str(num_proc),
        "--cache",
        cache,
    ]
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{out.stderr[-3000:]}")
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    subprocess.run(["rm", "-rf", cache])
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[5, 50], help="corpus sizes in MB")
    parser.add_argument("--workdir", default=None, help="where corpora and caches go (default: a temp dir)")
    parser.add_argument(
        "--scale",
        type=float,
        nargs="+",
        default=None,
        help="instead: the scale benchmark on corpora of these sizes in MB (e.g. 1000)",
    )
    parser.add_argument(
        "--pipeline", action="store_true", help="instead: the input pipeline (collator, DataLoader) sequences/s"
    )
    parser.add_argument("--pipeline_mb", type=float, default=2, help="--pipeline: corpus size in MB")
    parser.add_argument("--seconds", type=float, default=3, help="--pipeline: seconds per collator figure")
    parser.add_argument("--epochs", type=int, default=1, help="--pipeline: epochs per DataLoader figure")
    parser.add_argument(
        "--baseline_collator", default=None, help="--pipeline: also time the collator of this git revision"
    )
    parser.add_argument("--child", choices=["ours", "baseline", "bare", "run_mlm", "stream"], help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    parser.add_argument("--num_proc", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-data-")
    os.makedirs(workdir, exist_ok=True)
    cores = os.cpu_count() or 1
    if args.scale:
        return scale(args.scale, workdir, cores)
    if args.pipeline:
        return pipeline(workdir, args.pipeline_mb, args.seconds, args.epochs, args.baseline_collator)
    print(f"machine: {cores} cores, {os.uname().machine}, Python {sys.version.split()[0]}; workdir {workdir}")
    corpora = {}
    for size in args.sizes:
        path = os.path.join(workdir, f"corpus-{size:g}MB.txt")
        if not os.path.isfile(path):
            start = time.perf_counter()
            make_corpus(path, size)
            print(f"generated {path} in {time.perf_counter() - start:.1f}s")
        corpora[size] = path
    tokenizer = os.path.join(workdir, "tokenizer")
    if not os.path.isdir(tokenizer):
        start = time.perf_counter()
        train_shared_tokenizer(corpora[min(args.sizes)], tokenizer)
        print(f"trained the shared WordPiece vocabulary (8192) in {time.perf_counter() - start:.1f}s (not timed below)")

    rows = []
    for corpus in corpora.values():
        mb = os.path.getsize(corpus) / 1e6
        for setting, one_core, num_proc in (("1 core", True, 1), (f"{cores} cores", False, cores)):
            ours = measure("ours", corpus, tokenizer, num_proc, one_core, workdir)
            base = measure("baseline", corpus, tokenizer, 1, one_core, workdir)
            bare = measure("bare", corpus, tokenizer, 1, one_core, workdir)
            mlm = measure("run_mlm", corpus, tokenizer, num_proc, one_core, workdir)
            rows.append((mb, setting, ours, base, bare, mlm))
            print(
                f"{mb:.3g} MB, {setting}: ours {ours['seconds']:.1f}s, baseline {base['seconds']:.1f}s, bare tokenizer "
                f"{bare['seconds']:.1f}s, run_mlm recipe {mlm['seconds']:.1f}s",
                flush=True,
            )

    print()
    print(
        "| corpus | setting | pipeline | seconds | MB/s | M tokens/s | instances | peak RSS MB | "
        "peak anonymous MB over imports | worker peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mb, setting, ours, base, bare, mlm in rows:
        named = (("minibert", ours), ("baseline", base), ("run_mlm recipe", mlm), ("bare tokenizer", bare))
        for name, r in named:
            workers = (
                f"{r['worker_peak_mb']:.0f}"
                if name in ("minibert", "run_mlm recipe") and "1 core" not in setting
                else "-"
            )
            print(
                f"| {mb:.3g} MB | {setting} | {name} | {r['seconds']:.1f} | {mb / r['seconds']:.2f} | "
                f"{r['tokens'] / r['seconds'] / 1e6:.2f} | {r['instances']} | {r['peak_mb']:.0f} | "
                f"{r['anon_peak_mb'] - r['imported_anon_mb']:.0f} | {workers} |"
            )
    print()
    print(
        "| corpus | setting | speed minibert/baseline | anonymous memory baseline/minibert | "
        "minibert again (cache hit) |"
    )
    print("|---|---|---|---|---|")
    for mb, setting, ours, base, *_ in rows:
        speed = base["seconds"] / ours["seconds"]
        ours_anon = ours["anon_peak_mb"] - ours["imported_anon_mb"]
        memory = (base["anon_peak_mb"] - base["imported_anon_mb"]) / max(ours_anon, 1)
        print(f"| {mb:.3g} MB | {setting} | {speed:.2f}x | {memory:.1f}x | {ours['warm_seconds']:.2f} s |")
    print()
    print(
        "| corpus | setting | minibert M tokens/s | bare tokenizer M tokens/s | minibert / bare | "
        "run_mlm recipe / minibert (time) |"
    )
    print("|---|---|---|---|---|---|")
    one = {}
    for mb, setting, ours, _base, bare, mlm in rows:
        ours_rate, bare_rate = ours["tokens"] / ours["seconds"], bare["tokens"] / bare["seconds"]
        one.setdefault(mb, ours_rate)
        print(
            f"| {mb:.3g} MB | {setting} | {ours_rate / 1e6:.2f} | {bare_rate / 1e6:.2f} | {ours_rate / bare_rate:.2f} | "
            f"{mlm['seconds'] / ours['seconds']:.2f}x |"
        )
    for mb, setting, ours, *_ in rows:
        if "1 core" not in setting:
            print(
                f"scaling of minibert, {mb:.3g} MB, 1 -> {cores} processes: "
                f"{ours['tokens'] / ours['seconds'] / one[mb]:.2f}x"
            )


if __name__ == "__main__":
    main()
