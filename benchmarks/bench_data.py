"""Pretraining-data throughput and peak memory: minibert's pipeline against what a user would write by hand.

    python benchmarks/bench_data.py                    # 5 MB and 50 MB corpora, 1 process and all cores
    python benchmarks/bench_data.py --sizes 2 20 --workdir /tmp/bench

Both sides turn the same synthetic BERT-format corpus (generated here, one sentence per line, blank line between
documents) into NSP instances (`[CLS] A [SEP] B [SEP]`, max_seq_length 128, dupe_factor 1) with the same
WordPiece vocabulary (trained once, beforehand, and not timed):

- ours:     `prepare_pretraining_data` from a cold cache: read -> tokenize (`datasets.map`) -> pair -> Arrow on disk;
- baseline: read the file into Python lists, `BertTokenizerFast(sentences)`, Google's
            `create_instances_from_document` in plain Python over the in-memory lists, instances kept in memory.

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


def run_ours(corpus: str, tokenizer: str, num_proc: int, cache: str) -> dict:
    sys.path.insert(0, ROOT)
    import datasets

    from pretrain.data import DataArguments, prepare_pretraining_data

    datasets.disable_progress_bars()
    imported = _rss_mb()
    imported_anon = _rss_mb("RssAnon")
    args = DataArguments(train_file=[corpus], tokenizer_name=tokenizer, max_seq_length=MAX_SEQ_LENGTH,
                         validation_split_percentage=0, preprocessing_num_workers=num_proc, data_cache_dir=cache)
    start = time.perf_counter()
    data = prepare_pretraining_data(args, seed=0)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    prepare_pretraining_data(args, seed=0)  # the same inputs again: a cache hit
    warm = time.perf_counter() - start
    return {"seconds": seconds, "warm_seconds": warm, "tokens": data.stats["tokens"],
            "instances": data.stats["instances"], "imported_mb": imported, "imported_anon_mb": imported_anon}


def run_baseline(corpus: str, tokenizer: str) -> dict:
    from transformers import BertTokenizerFast

    imported = _rss_mb()
    imported_anon = _rss_mb("RssAnon")
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
        instances += google_create_instances_from_document(all_documents, document_index, MAX_SEQ_LENGTH, 0.1, rng,
                                                           tok.cls_token_id, tok.sep_token_id)
    seconds = time.perf_counter() - start
    tokens = sum(len(s) for doc in all_documents for s in doc)
    return {"seconds": seconds, "tokens": tokens, "instances": len(instances), "imported_mb": imported,
            "imported_anon_mb": imported_anon}


def google_create_instances_from_document(all_documents, document_index, max_seq_length, short_seq_prob, rng,
                                          cls_id, sep_id):
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
                instances.append({
                    "input_ids": [cls_id, *tokens_a, sep_id, *tokens_b, sep_id],
                    "token_type_ids": [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1),
                    "next_sentence_label": int(is_random_next),
                })
            current_chunk = []
            current_length = 0
        i += 1
    return instances


def _rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _AnonymousPeak(threading.Thread):
    """Samples RssAnon: memory the process owns, unlike the pages of memory-mapped Arrow files, which VmHWM also
    counts but the kernel reclaims at will (they are the file cache)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = 0.0

    def run(self):
        while True:
            self.peak = max(self.peak, _rss_mb("RssAnon"))
            time.sleep(0.02)


def child(args) -> None:
    sampler = _AnonymousPeak()
    sampler.start()
    if args.child == "ours":
        result = run_ours(args.corpus, args.tokenizer, args.num_proc, args.cache)
    else:
        result = run_baseline(args.corpus, args.tokenizer)
    result["peak_mb"] = _rss_mb("VmHWM")
    result["anon_peak_mb"] = max(sampler.peak, _rss_mb("RssAnon"))
    # Workers of datasets.map (num_proc > 1) have exited and been waited for: their largest peak.
    result["worker_peak_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


# ------------------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------------------


def measure(kind: str, corpus: str, tokenizer: str, num_proc: int, one_core: bool, workdir: str) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT)
    env["TOKENIZERS_PARALLELISM"] = "false" if one_core else "true"
    if one_core:
        env["RAYON_NUM_THREADS"] = "1"
    cache = tempfile.mkdtemp(dir=workdir, prefix="cache-")
    command = [sys.executable, __file__, "--child", kind, "--corpus", corpus, "--tokenizer", tokenizer,
               "--num_proc", str(num_proc), "--cache", cache]
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{out.stderr[-3000:]}")
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    subprocess.run(["rm", "-rf", cache])
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[5, 50], help="corpus sizes in MB")
    parser.add_argument("--workdir", default=None, help="where corpora and caches go (default: a temp dir)")
    parser.add_argument("--child", choices=["ours", "baseline"], help=argparse.SUPPRESS)
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
    for size, corpus in corpora.items():
        mb = os.path.getsize(corpus) / 1e6
        for setting, one_core, num_proc in (("1 core", True, 1), (f"{cores} cores", False, cores)):
            ours = measure("ours", corpus, tokenizer, num_proc, one_core, workdir)
            base = measure("baseline", corpus, tokenizer, 1, one_core, workdir)
            rows.append((mb, setting, ours, base))
            print(f"{mb:.3g} MB, {setting}: ours {ours['seconds']:.1f}s, baseline {base['seconds']:.1f}s", flush=True)

    print()
    print("| corpus | setting | pipeline | seconds | MB/s | M tokens/s | instances | peak RSS MB | "
          "peak anonymous MB over imports | worker peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mb, setting, ours, base in rows:
        for name, r in (("minibert", ours), ("baseline", base)):
            workers = f"{r['worker_peak_mb']:.0f}" if name == "minibert" and "1 core" not in setting else "-"
            print(f"| {mb:.3g} MB | {setting} | {name} | {r['seconds']:.1f} | {mb / r['seconds']:.2f} | "
                  f"{r['tokens'] / r['seconds'] / 1e6:.2f} | {r['instances']} | {r['peak_mb']:.0f} | "
                  f"{r['anon_peak_mb'] - r['imported_anon_mb']:.0f} | {workers} |")
    print()
    print("| corpus | setting | speed minibert/baseline | anonymous memory baseline/minibert | "
          "minibert again (cache hit) |")
    print("|---|---|---|---|---|")
    for mb, setting, ours, base in rows:
        speed = base["seconds"] / ours["seconds"]
        ours_anon = ours["anon_peak_mb"] - ours["imported_anon_mb"]
        memory = (base["anon_peak_mb"] - base["imported_anon_mb"]) / max(ours_anon, 1)
        print(f"| {mb:.3g} MB | {setting} | {speed:.2f}x | {memory:.1f}x | {ours['warm_seconds']:.2f} s |")

if __name__ == "__main__":
    main()
