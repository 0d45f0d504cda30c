"""A/B training speed: MiniBertForPreTraining against transformers' BertForPreTraining (SDPA), one process.

Both models get the same config, the same batches (ragged lengths, 15% of real tokens masked, NSP labels), the
same dtype and AdamW; each step is forward + backward + optimizer step, as in pretraining. Rounds alternate
between the models so machine noise hits all alike; the reported figure is the median over rounds.

MiniBERT runs as the training loop runs it: the collator's `token_indices` / `masked_positions` (computed on the
CPU by `pretrain.collator.unpadding_inputs`, in the data-loader workers in a real run; here before timing, as the
batches themselves are) and `sparse_prediction=True`. A third row, `minibert_fused_qkv`, is the same model with
Q, K and V computed by one fused (H -> 3H) matmul, as minibert 0.1 did: what BERT's three separate projections cost.

    python benchmarks/bench_pretrain.py                       # CPU, mini config (L4 H256, vocab 30522, seq 128)
    python benchmarks/bench_pretrain.py --device cuda --size base --dtype bf16 --batch_size 128 --compile

Peak memory: on CUDA `max_memory_allocated` per model; on CPU the peak resident memory of a child process that
runs only that model (both children see identical work).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transformers import BertConfig, BertForPreTraining  # noqa: E402

from minibert import MiniBertConfig, MiniBertForPreTraining  # noqa: E402
from minibert.modeling_minibert import MiniBertSelfAttention  # noqa: E402
from pretrain.collator import unpadding_inputs  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16 tensor-core peaks


def make_batches(n, batch_size, seq_len, vocab_size, seed=0, mlm_probability=0.15):
    """Ragged NSP-like batches: lengths uniform in [seq_len/2, seq_len], [CLS] A [SEP] B [SEP], 15% masked."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        lengths = torch.randint(seq_len // 2, seq_len + 1, (batch_size,), generator=g)
        ids = torch.randint(5, vocab_size, (batch_size, seq_len), generator=g)
        pos = torch.arange(seq_len)
        attention_mask = (pos[None, :] < lengths[:, None]).long()
        ids = ids * attention_mask  # [PAD] = 0
        ids[:, 0] = 2  # [CLS]
        ids[torch.arange(batch_size), lengths - 1] = 3  # final [SEP]
        split = lengths // 2
        ids[torch.arange(batch_size), split] = 3
        token_type_ids = ((pos[None, :] > split[:, None]) & attention_mask.bool()).long()
        special = (ids <= 4) | ~attention_mask.bool()
        masked = (torch.rand(batch_size, seq_len, generator=g) < mlm_probability) & ~special
        labels = torch.where(masked, ids, torch.full_like(ids, -100))
        input_ids = torch.where(masked, torch.full_like(ids, 4), ids)  # [MASK]
        batches.append(
            dict(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                labels=labels,
                next_sentence_label=torch.randint(0, 2, (batch_size,), generator=g),
            )
        )
    return batches


def with_unpadding(batch):
    extra = unpadding_inputs(batch["attention_mask"].numpy(), batch["labels"].numpy())
    return {**batch, **extra}


def fuse_qkv(model):
    """Replace each layer's three Q/K/V projections by one (H -> 3H) matmul whose output is split in three."""

    def forward(self, hidden, attention_mask=None, unpadding=None, output_attentions=False):
        q, k, v = torch.nn.functional.linear(hidden, self.qkv_weight, self.qkv_bias).chunk(3, dim=-1)
        projections = iter((q, k, v))
        self.query, self.key, self.value = (lambda _: next(projections),) * 3
        try:
            return MiniBertSelfAttention.forward(self, hidden, attention_mask, unpadding, output_attentions)
        finally:
            del self.query, self.key, self.value

    for module in model.modules():
        if isinstance(module, MiniBertSelfAttention):
            weight = torch.cat([module.query.weight, module.key.weight, module.value.weight]).detach()
            bias = torch.cat([module.query.bias, module.key.bias, module.value.bias]).detach()
            del module.query, module.key, module.value
            module.qkv_weight, module.qkv_bias = torch.nn.Parameter(weight), torch.nn.Parameter(bias)
            module.forward = forward.__get__(module)
    return model


def build(kind, size, vocab_size, device, dtype):
    layers, hidden = {"mini": (4, 256), "small": (4, 512), "base": (12, 768), "tiny": (2, 128)}[size]
    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        intermediate_size=4 * hidden,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    if kind == "hf":
        model = BertForPreTraining(BertConfig(**common, attn_implementation="sdpa"))
    else:
        model = MiniBertForPreTraining(MiniBertConfig(**common))
        if kind == "minibert_fused_qkv":
            model = fuse_qkv(model)
    model = model.to(device=device, dtype=dtype).train()
    return model


def make_step(kind, model, device, compile_model):
    fused = device.type == "cuda"
    optimizer = (
        torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
        if fused
        else torch.optim.AdamW(model.parameters(), lr=1e-4)
    )
    fwd = torch.compile(model) if compile_model else model
    minibert = kind.startswith("minibert")
    extra = {"sparse_prediction": True} if minibert else {}

    def step(batch):
        if not minibert:  # the collator's fast-path inputs are MiniBERT's
            batch = {k: v for k, v in batch.items() if k not in ("token_indices", "masked_positions")}
        loss = fwd(**batch, **extra).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def non_embedding_params(model):
    return sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)


def peak_rss_mb() -> float:
    """High-water resident memory of this process. Not ru_maxrss: Linux carries that across fork + exec, so a child
    started from a big parent would report the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(kind, args):
    """Child-process mode: run `kind` alone, print its peak memory (for CPU memory comparison)."""
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    batches = [
        {k: v.to(device) for k, v in b.items()}
        for b in map(with_unpadding, make_batches(args.steps, args.batch_size, args.seq_len, args.vocab_size))
    ]
    before = peak_rss_mb()
    model = build(kind, args.size, args.vocab_size, device, dtype)
    step = make_step(kind, model, device, args.compile)
    for b in batches:
        step(b)
    peak = peak_rss_mb()
    print(json.dumps({"kind": kind, "peak_rss_mb": peak, "delta_rss_mb": peak - before}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", default=None, help="mini (CPU default) or base (GPU default)")
    p.add_argument("--vocab_size", type=int, default=30522)
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default=None)
    p.add_argument("--steps", type=int, default=None, help="steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--child", choices=["hf", "minibert", "minibert_fused_qkv"], help=argparse.SUPPRESS)
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args()
    gpu = args.device.startswith("cuda")
    args.size = args.size or ("base" if gpu else "mini")
    args.batch_size = args.batch_size or (128 if gpu else 32)
    args.dtype = args.dtype or ("bf16" if gpu else "fp32")
    args.steps = args.steps or (20 if gpu else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return run_one(args.child, args)

    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    batches = [
        {k: v.to(device, non_blocking=True) for k, v in b.items()}
        for b in map(with_unpadding, make_batches(args.steps, args.batch_size, args.seq_len, args.vocab_size))
    ]
    real_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    kinds = ["hf", "minibert", "minibert_fused_qkv"]
    models = {k: build(k, args.size, args.vocab_size, device, dtype) for k in kinds}
    steps = {k: make_step(k, models[k], device, args.compile) for k in kinds}
    peaks = {}

    # Warm-up (compilation, allocator, kernels), and the equivalence of the starting losses.
    first = {}
    for k in kinds:
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        for b in batches[:2]:
            first.setdefault(k, float(steps[k](b)))
        sync(device)
    times = {k: [] for k in kinds}
    for _ in range(args.rounds):
        for k in kinds:
            if gpu:
                torch.cuda.reset_peak_memory_stats()
            sync(device)
            t0 = time.perf_counter()
            for b in batches:
                steps[k](b)
            sync(device)
            times[k].append(time.perf_counter() - t0)
            if gpu:
                peaks[k] = max(peaks.get(k, 0), torch.cuda.max_memory_allocated() / 2**20)

    if not gpu:  # peak resident memory of one child per model
        for k in kinds[:2]:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                k,
                "--device",
                args.device,
                "--size",
                args.size,
                "--vocab_size",
                str(args.vocab_size),
                "--seq_len",
                str(args.seq_len),
                "--batch_size",
                str(args.batch_size),
                "--dtype",
                args.dtype,
                "--steps",
                str(args.steps),
            ]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            peaks[k] = json.loads(out)["peak_rss_mb"]

    results = {
        "device": torch.cuda.get_device_name() if gpu else f"CPU ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "size": args.size,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "dtype": args.dtype,
        "compile": args.compile,
        "real_tokens_per_step": real_tokens / len(batches),
        "first_loss": first,
    }
    for k in kinds:
        t = statistics.median(times[k])
        results[k] = {
            "steps_per_s": len(batches) / t,
            "tokens_per_s": real_tokens / t,
            "peak_memory_mb": peaks.get(k),
        }
    results["speedup"] = results["minibert"]["tokens_per_s"] / results["hf"]["tokens_per_s"]
    results["memory_ratio"] = results["minibert"]["peak_memory_mb"] / results["hf"]["peak_memory_mb"]
    results["fused_qkv_speedup"] = results["minibert_fused_qkv"]["tokens_per_s"] / results["minibert"]["tokens_per_s"]
    if gpu:
        # MFU: 6 * non-embedding params per token (forward + backward) + attention's 12 * L * S * H per token.
        cfg = models["minibert"].config
        flops_per_token = (
            6 * non_embedding_params(models["minibert"]) + 12 * cfg.num_hidden_layers * args.seq_len * cfg.hidden_size
        )
        name = torch.cuda.get_device_name()
        peak = next((v for key, v in PEAK_BF16_TFLOPS.items() if key in name), None)
        for k in kinds:
            achieved = flops_per_token * results[k]["tokens_per_s"] / 1e12
            results[k]["model_tflops"] = achieved
            results[k]["mfu"] = achieved / peak if peak else None

    print(json.dumps(results, indent=2))
    print(
        f"\n{results['device']} | {args.size} seq {args.seq_len} batch {args.batch_size} {args.dtype}"
        f"{' compiled' if args.compile else ''}\n"
        f"  transformers BertForPreTraining: {results['hf']['tokens_per_s']:10.0f} tokens/s, "
        f"peak {results['hf']['peak_memory_mb']:.0f} MB\n"
        f"  minibert MiniBertForPreTraining: {results['minibert']['tokens_per_s']:10.0f} tokens/s, "
        f"peak {results['minibert']['peak_memory_mb']:.0f} MB\n"
        f"  minibert with a fused QKV matmul: {results['minibert_fused_qkv']['tokens_per_s']:10.0f} tokens/s "
        f"({results['fused_qkv_speedup']:.3f}x the separate Q, K, V)\n"
        f"  speed-up {results['speedup']:.2f}x, memory ratio {results['memory_ratio']:.2f}"
        + (
            f", MFU {results['minibert']['mfu']:.1%} (HF {results['hf']['mfu']:.1%})"
            if gpu and results["minibert"].get("mfu")
            else ""
        )
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
