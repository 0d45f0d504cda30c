"""First-call cost of `torch.compile`: MiniBERT against transformers' BERT, each compiled from a cold cache.

Issue 22 reported minibert's first compiled training step at 57 s against BERT's 14 s. Inductor keeps compiled
graphs in a cache that outlives the process (`/tmp/torchinductor_$USER`), so a model whose graph an earlier process
compiled starts in seconds: a fair comparison gives every measurement a fresh cache directory. Each row is a fresh
process (same size, batch and threads), the models alternating; the figure is the median per model and the ratio.

    python benchmarks/bench_compile.py                      # training step and inference, 2 rounds
    python benchmarks/bench_compile.py --rounds 3 --warm    # also the second process on the same cache
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
SIZE = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)


def child(model_name: str, mode: str) -> None:
    """One first call of the compiled model, timed; prints seconds and the number of graphs dynamo made."""
    import torch
    from torch._dynamo.utils import counters
    from transformers import BertConfig, BertForPreTraining, BertModel

    sys.path.insert(0, ROOT)
    from minibert import MiniBertConfig, MiniBertForPreTraining, MiniBertModel

    torch.manual_seed(0)
    train = mode == "train"
    if model_name == "bert":
        config = BertConfig(**SIZE, attn_implementation="sdpa")
        model = (BertForPreTraining if train else BertModel)(config)
    else:
        model = (MiniBertForPreTraining if train else MiniBertModel)(MiniBertConfig(**SIZE))
    model.train(train)
    ids = torch.randint(5, SIZE["vocab_size"], (4, 32))
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    inputs = dict(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
    if train:
        inputs.update(labels=ids.masked_fill(mask == 0, -100), next_sentence_label=torch.zeros(4, dtype=torch.long))
    compiled = torch.compile(model)
    start = time.perf_counter()
    if train:
        compiled(**inputs).loss.backward()
    else:
        with torch.no_grad():
            compiled(**inputs)
    seconds = time.perf_counter() - start
    graphs = counters["stats"]["unique_graphs"]
    print(json.dumps({"seconds": seconds, "graphs": graphs, "graph_breaks": sum(counters["graph_break"].values())}))


def measure(model_name: str, mode: str, cache: str) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    cmd = [sys.executable, os.path.abspath(__file__), "--child", model_name, mode]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--modes", default="train,inference")
    p.add_argument("--warm", action="store_true", help="also time a second process on the same (now warm) cache")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(*args.child)
    results = {}
    for mode in args.modes.split(","):
        rows = {f"{m}{suffix}": [] for m in ("minibert", "bert") for suffix in ("", "_warm" if args.warm else "")}
        for _ in range(args.rounds):
            for model_name in ("minibert", "bert"):
                cache = tempfile.mkdtemp(prefix="inductor-cold-")
                rows[model_name].append(measure(model_name, mode, cache))
                if args.warm:
                    rows[f"{model_name}_warm"].append(measure(model_name, mode, cache))
        results[mode] = {name: statistics.median(r["seconds"] for r in runs) for name, runs in rows.items() if runs}
        results[mode]["graphs"] = {name: runs[0]["graphs"] for name, runs in rows.items() if runs}
        results[mode]["graph_breaks"] = {name: runs[0]["graph_breaks"] for name, runs in rows.items() if runs}
        m, b = results[mode]["minibert"], results[mode]["bert"]
        print(f"{mode}: first compiled call, cold cache: minibert {m:.1f} s, BERT {b:.1f} s ({m / b:.2f}x)", flush=True)
        if args.warm:
            mw, bw = results[mode]["minibert_warm"], results[mode]["bert_warm"]
            print(f"{mode}: the same on a warm cache: minibert {mw:.1f} s, BERT {bw:.1f} s", flush=True)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
