"""Attention on ragged batches: padded SDPA (what the model runs today) vs varlen vs flex, forward + backward.

The model's unpadded path packs every position-wise op into (T, hidden) but pads back to (B, S) for attention
(`minibert.modeling_minibert.MiniBertSelfAttention`). This measures whether attending on the packed tensors
directly would pay: on the same packed (T, heads, head_dim) queries, keys and values of BERT-shaped lengths,

- `sdpa_padded`: scatter to (B, heads, S, d), `scaled_dot_product_attention` with the padding mask, gather back —
  what the model does now;
- `varlen`: torch's own `torch.nn.attention.varlen.varlen_attn` on (T, heads, d) with cumulative lengths
  (torch >= 2.10, CUDA only);
- `flex`: `flex_attention` (compiled) on the packed sequence as one batch row, a block mask keeping each token
  inside its own sequence (document masking).

Reports milliseconds per forward + backward and the ratio to `sdpa_padded`; a backend that cannot run here gets a
row saying why. The evidence for whether varlen attention is worth wiring into the model next.

    python benchmarks/bench_attention.py --device cuda --seq_len 512 --batch_size 32 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F


def ragged_lengths(batch_size: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """BERT's lengths: 10% short pairs, the rest 85-100% of `seq_len`."""
    g = torch.Generator().manual_seed(seed)
    full = torch.randint(int(0.85 * seq_len), seq_len + 1, (batch_size,), generator=g)
    short = torch.randint(8, seq_len + 1, (batch_size,), generator=g)
    return torch.where(torch.rand(batch_size, generator=g) < 0.1, short, full)


def padded_sdpa(lengths: torch.Tensor, seq_len: int):
    batch_size = len(lengths)
    mask = torch.arange(seq_len)[None, :] < lengths[:, None]  # (B, S)
    flat = mask.reshape(-1).nonzero().squeeze(1)

    def attend(q, k, v):  # (T, h, d) each
        device = q.device
        index = flat.to(device)
        attn_mask = mask.to(device)[:, None, None, :]  # (B, 1, 1, S)

        def pad(x):
            out = x.new_zeros(batch_size * seq_len, *x.shape[1:]).index_copy(0, index, x)
            return out.view(batch_size, seq_len, *x.shape[1:]).transpose(1, 2)  # (B, h, S, d)

        out = F.scaled_dot_product_attention(pad(q), pad(k), pad(v), attn_mask=attn_mask)
        return out.transpose(1, 2).reshape(batch_size * seq_len, *q.shape[1:]).index_select(0, index)

    return attend


def varlen(lengths: torch.Tensor):
    from torch.nn.attention.varlen import varlen_attn

    cu = torch.cat([torch.zeros(1, dtype=torch.int32), lengths.cumsum(0).to(torch.int32)])
    longest = int(lengths.max())

    def attend(q, k, v):
        cu_device = cu.to(q.device)
        return varlen_attn(q, k, v, cu_device, cu_device, longest, longest)

    return attend


def flex(lengths: torch.Tensor):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    compiled = torch.compile(flex_attention)
    document = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    total = int(lengths.sum())

    def attend(q, k, v):
        doc = document.to(q.device)

        def same_document(b, h, q_idx, kv_idx):
            return doc[q_idx] == doc[kv_idx]

        block_mask = create_block_mask(same_document, None, None, total, total, device=q.device)
        out = compiled(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], block_mask=block_mask)
        return out[0].transpose(0, 1)

    return attend


def time_backend(attend, q, k, v, repeats: int) -> float:
    def once():
        for x in (q, k, v):
            x.grad = None
        out = attend(q, k, v)
        out.float().sum().backward()

    once()  # compile / warm up
    once()
    if q.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        once()
    if q.is_cuda:
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t0) / repeats


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head_dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--backends", default="sdpa_padded,varlen,flex")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    lengths = ragged_lengths(args.batch_size, args.seq_len)
    total = int(lengths.sum())
    g = torch.Generator().manual_seed(1)
    q, k, v = (
        torch.randn(total, args.heads, args.head_dim, generator=g).to(device, dtype).requires_grad_() for _ in range(3)
    )
    builders = {
        "sdpa_padded": lambda: padded_sdpa(lengths, args.seq_len),
        "varlen": lambda: varlen(lengths),
        "flex": lambda: flex(lengths),
    }
    results = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "torch": torch.__version__,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "real_tokens": total,
        "fill": total / (args.batch_size * args.seq_len),
        "rows": {},
    }
    reference = None
    for name in args.backends.split(","):
        if name == "varlen" and device.type != "cuda":
            results["rows"][name] = {"status": "skipped", "reason": "varlen_attn needs CUDA"}
            continue
        try:
            attend = builders[name]()
            out = attend(q, k, v).detach().float()
            if reference is None:
                reference = out
            error = float((out - reference).abs().max())
            ms = time_backend(attend, q, k, v, args.repeats)
            results["rows"][name] = {"status": "measured", "ms_fwd_bwd": ms, "max_abs_diff_vs_first": error}
        except Exception as e:  # a backend this torch or device lacks: say which and why, measure the others
            results["rows"][name] = {"status": "failed", "reason": f"{type(e).__name__}: {str(e)[:300]}"}
    base = results["rows"].get("sdpa_padded", {}).get("ms_fwd_bwd")
    for row in results["rows"].values():
        if base and "ms_fwd_bwd" in row:
            row["speedup_vs_sdpa_padded"] = base / row["ms_fwd_bwd"]
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
