"""Training-step speed through the product: `PretrainingLoop.train_step` against transformers' BertForPreTraining.

What is timed is what `minibert-pretrain` runs, not the model called by hand:

- **minibert** — the loop's own optimizer step (`pretrain.loop.PretrainingLoop.train_step`: forward with the run
  plan's sparse MLM head on the unpadded layout, backward, clipping, the finite check, AdamW) on batches from the
  real `DataCollatorForPreTraining`, with the accelerator, optimizer and precision the CLI builds
  (`make_accelerator`, `build_optimizer`: fp32 on CPU; bf16 autocast with fp32 master weights and fused AdamW on
  CUDA). **minibert_dense** is the same step with the dense MLM head (`RunPlan(sparse_head=False)`): what the
  product ran while the sparse head was lost.
- **hf** — transformers' `BertForPreTraining` (SDPA) trained as `Trainer` would: batches from
  `DataCollatorForLanguageModeling` (padded to the longest, 15% masked), autocast bf16 over fp32 weights on CUDA,
  AdamW (fused on CUDA, as Trainer's default `adamw_torch_fused`), clipping at 1.0, the scheduler, and Trainer's
  per-step read of the loss (`logging_nan_inf_filter`).

Both see the same NSP-shaped examples (BERT's lengths: 90% of pairs fill 85-100% of `--seq_len`, 10% are short),
and the same vocabulary size. Rounds alternate between the rows so machine noise hits all alike; the figure is the
median over rounds of real (non-padding) tokens per second. On CUDA: MFU with each model's own FLOPs
(`pretrain.throughput`: ours on real tokens with the head at the masked positions; transformers' on every padded
position with the head everywhere), HFU (the FLOPs our step really computes, padding in attention and the bucketed
rows included), static and activation memory, and host syncs per step (`torch.cuda.set_sync_debug_mode`).

    python benchmarks/bench_pretrain.py                           # CPU, mini (L4 H256, vocab 30522, seq 128, batch 32)
    python benchmarks/bench_pretrain.py --device cuda --size base --batch_size 128 --compile --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transformers import BertConfig, BertForPreTraining, DataCollatorForLanguageModeling  # noqa: E402

from minibert import MiniBertConfig, MiniBertForPreTraining  # noqa: E402
from pretrain.args import PretrainingArguments, RunPlan  # noqa: E402
from pretrain.checkpointing import Progress  # noqa: E402
from pretrain.collator import DataCollatorForPreTraining  # noqa: E402
from pretrain.distributed import make_accelerator  # noqa: E402
from pretrain.loop import PretrainingLoop  # noqa: E402
from pretrain.optim import build_lr_scheduler, build_optimizer  # noqa: E402
from pretrain.report import MetricsLog  # noqa: E402
from pretrain.throughput import padded_step_flops, peak_tflops, step_flops  # noqa: E402

SIZES = {"tiny": (2, 128), "mini": (4, 256), "small": (4, 512), "medium": (8, 512), "base": (12, 768)}
ROWS = ("hf", "minibert_dense", "minibert")


def synthetic_tokenizer(vocab_size: int):
    """A WordPiece tokenizer of `vocab_size` tokens (BERT's five specials, words and `##` pieces): what the
    collators need (ids of [PAD]/[MASK], the special ids, the vocabulary) without a download."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = [f"w{i}" if i % 4 else f"##w{i}" for i in range(vocab_size - len(specials))]
    vocab = {token: i for i, token in enumerate(specials + words)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def nsp_examples(n: int, seq_len: int, vocab_size: int, seed: int = 0) -> list[dict]:
    """NSP pairs `[CLS] A [SEP] B [SEP]` with BERT's lengths: 10% short (`short_seq_prob`), the rest 85-100% full."""
    g = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(n):
        if torch.rand((), generator=g) < 0.1:
            length = int(torch.randint(8, seq_len + 1, (), generator=g))
        else:
            length = int(torch.randint(int(0.85 * seq_len), seq_len + 1, (), generator=g))
        ids = torch.randint(5, vocab_size, (length,), generator=g)
        split = length // 2
        ids[0], ids[split], ids[-1] = 2, 3, 3
        types = [0] * (split + 1) + [1] * (length - split - 1)
        examples.append(
            {
                "input_ids": ids.tolist(),
                "token_type_ids": types,
                "next_sentence_label": int(torch.randint(0, 2, (), generator=g)),
                "example_id": i,
            }
        )
    return examples


def config_kwargs(size: str, vocab_size: int) -> dict:
    layers, hidden = SIZES[size]
    return dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        intermediate_size=4 * hidden,
        max_position_embeddings=512,
    )


class MinibertStep:
    """The loop's step, built as `pretrain.train._build` builds it (accelerator, optimizer, prepare, compile)."""

    def __init__(self, args, plan: RunPlan, tokenizer, compile_model: bool):
        torch.manual_seed(0)
        training = PretrainingArguments(
            output_dir=tempfile.mkdtemp(), learning_rate=1e-4, mixed_precision=args.mixed_precision
        )
        self.accelerator = make_accelerator(training)
        self.config = MiniBertConfig(**config_kwargs(args.size, len(tokenizer)))
        model = MiniBertForPreTraining(self.config)
        optimizer = build_optimizer(model, training, self.accelerator.device)
        model, optimizer = self.accelerator.prepare(model, optimizer)
        self.model = model
        compiled = torch.compile(model, backend=args.compile_backend) if compile_model else model
        self.loop = PretrainingLoop(
            accelerator=self.accelerator,
            model=compiled,
            optimizer=optimizer,
            lr_scheduler=build_lr_scheduler(optimizer, "linear", 0, 10**6),
            train_dataloader=[],
            eval_dataloader=None,
            collator=None,
            args=training,
            progress=Progress(per_device_train_batch_size=args.batch_size, max_train_steps=10**6),
            metrics=MetricsLog(self.accelerator, None, tracking=False),
            max_train_steps=10**6,
            plan=plan,
        )
        self.collator = DataCollatorForPreTraining(
            tokenizer, seed=0, unpadded=plan.unpadded, group_attention=plan.grouped_attention
        )
        self.plan = plan

    def batch(self, examples: list[dict]) -> dict:
        from accelerate.utils import send_to_device

        return send_to_device(self.collator(examples), self.accelerator.device, non_blocking=True)

    def __call__(self, batch: dict) -> None:
        self.loop.train_step([batch], signalled=False, clock_s=0.0)

    def flops(self, batch: dict) -> tuple[float, float]:
        """(model FLOPs, hardware FLOPs) of a step on `batch`."""
        lengths = batch["attention_mask"].sum(1).double()
        masked = float((batch["labels"] != -100).sum())
        model = step_flops(self.config, float(lengths.sum()), float((lengths**2).sum()), masked)
        b, s = batch["input_ids"].shape
        rows = batch["masked_positions"].numel() if self.plan.sparse_head else b * s
        tokens = batch["token_indices"].numel() if self.plan.unpadded else b * s
        hardware = step_flops(self.config, tokens, b * s * s, rows)  # attention runs on the padded layout
        return model, hardware


class TransformersStep:
    """`BertForPreTraining` (SDPA) as `Trainer` trains it."""

    def __init__(self, args, tokenizer, compile_model: bool):
        torch.manual_seed(0)
        self.device = torch.device(args.device)
        self.config = BertConfig(**config_kwargs(args.size, len(tokenizer)), attn_implementation="sdpa")
        self.model = BertForPreTraining(self.config).to(self.device).train()
        cuda = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=cuda or None)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0)
        self.forward = torch.compile(self.model, backend=args.compile_backend) if compile_model else self.model
        bf16 = args.mixed_precision == "bf16"
        self.autocast = (
            (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
        )
        self.collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)

    def batch(self, examples: list[dict]) -> dict:
        features = [{k: v for k, v in e.items() if k != "example_id"} for e in examples]
        return {k: v.to(self.device, non_blocking=True) for k, v in self.collator(features).items()}

    def __call__(self, batch: dict) -> None:
        with self.autocast():
            loss = self.forward(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if torch.isnan(loss) or torch.isinf(loss):  # Trainer's logging_nan_inf_filter: a read per step
            pass

    def flops(self, batch: dict) -> tuple[float, float]:
        b, s = batch["input_ids"].shape
        flops = padded_step_flops(self.config, b, s)
        return flops, flops


def static_bytes(step) -> int:
    """Weights and optimizer state (fp32 master weights and AdamW's two moments under bf16 autocast)."""
    model = step.model
    optimizer = step.loop.optimizer if hasattr(step, "loop") else step.optimizer
    tensors = {id(p): p for p in model.parameters()}
    for state in optimizer.state.values():
        tensors.update({id(t): t for t in state.values() if torch.is_tensor(t) and t.device.type != "cpu"})
    return sum(t.numel() * t.element_size() for t in tensors.values())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def syncs_per_step(step, batch, device) -> int | None:
    """Host synchronisations of one step, as torch's CUDA sync debug mode reports them."""
    if device.type != "cuda":
        return None
    sync(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step(batch)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    sync(device)
    return sum("synchroniz" in str(w.message) for w in caught)


def measure(args) -> dict:
    device = torch.device(args.device)
    tokenizer = synthetic_tokenizer(args.vocab_size)
    examples = nsp_examples(args.batch_size * args.steps, args.seq_len, len(tokenizer))
    chunks = [examples[i : i + args.batch_size] for i in range(0, len(examples), args.batch_size)]
    steps, batches, setup = {}, {}, {}
    for row in args.rows:
        t0 = time.perf_counter()
        if row == "hf":
            steps[row] = TransformersStep(args, tokenizer, args.compile)
        else:
            # The plan `RunPlan.decide` makes for the CLI on this device (attention per length group on a CPU in
            # eager mode); the dense row is that plan with the head the product had lost.
            grouped = RunPlan.groups_attention(device, args.compile)
            plan = RunPlan("mlm+nsp", sparse_head=row == "minibert", grouped_attention=grouped)
            steps[row] = MinibertStep(args, plan, tokenizer, args.compile)
        batches[row] = [steps[row].batch(c) for c in chunks]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for b in batches[row][:2]:  # warm-up: compilation, allocator, the optimizer's state
            steps[row](b)
        sync(device)
        setup[row] = time.perf_counter() - t0
    real_tokens = {row: sum(float(b["attention_mask"].sum()) for b in batches[row]) for row in args.rows}
    times = {row: [] for row in args.rows}
    memory = {}
    for _ in range(args.rounds):
        for row in args.rows:
            if device.type == "cuda":
                sync(device)
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            for b in batches[row]:
                steps[row](b)
            sync(device)
            times[row].append(time.perf_counter() - t0)
            if device.type == "cuda":  # every row's weights are resident: its own static part is counted by hand
                peak = torch.cuda.max_memory_allocated()
                memory[row] = {"static_mb": static_bytes(steps[row]) / 2**20, "activation_mb": (peak - base) / 2**20}
    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    )
    peak = peak_tflops(device_name) if device.type == "cuda" else None
    import transformers

    results = {
        "device": device_name,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "size": args.size,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "precision": args.mixed_precision if args.mixed_precision != "no" else "fp32",
        "compile": args.compile,
        "rows": {},
    }
    for row in args.rows:
        t = statistics.median(times[row])
        model_flops, hardware_flops = (sum(x) for x in zip(*(steps[row].flops(b) for b in batches[row])))
        entry = {
            "tokens_per_s": real_tokens[row] / t,
            "step_ms": 1000 * t / len(batches[row]),
            "setup_and_warmup_s": setup[row],
            "model_tflops": model_flops / t / 1e12,
            "hardware_tflops": hardware_flops / t / 1e12,
            "syncs_per_step": syncs_per_step(steps[row], batches[row][0], device),
            **memory.get(row, {}),
        }
        if peak:
            entry["mfu"] = entry["model_tflops"] / peak
            entry["hfu"] = entry["hardware_tflops"] / peak
        results["rows"][row] = entry
    if args.compile:  # graphs dynamo compiled in this process (recompiles for new shapes included)
        from torch._dynamo.utils import counters

        results["graphs_compiled"] = counters["stats"]["unique_graphs"]
    rows = results["rows"]
    if "hf" in rows and "minibert" in rows:
        results["speedup"] = rows["minibert"]["tokens_per_s"] / rows["hf"]["tokens_per_s"]
    if "minibert_dense" in rows and "minibert" in rows:
        results["sparse_head_speedup"] = rows["minibert"]["tokens_per_s"] / rows["minibert_dense"]["tokens_per_s"]
    return results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", default=None, choices=list(SIZES), help="mini (CPU default) or base (GPU default)")
    p.add_argument("--vocab_size", type=int, default=30522)
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--mixed_precision", choices=["no", "bf16"], default=None, help="default: bf16 on CUDA, no on CPU")
    p.add_argument("--steps", type=int, default=None, help="steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--rows", default=",".join(ROWS), help=f"which of {', '.join(ROWS)}")
    p.add_argument("--compile", action="store_true", help="torch.compile every row (the CLI's --torch_compile)")
    p.add_argument(
        "--compile_backend",
        default="inductor",
        help="torch.compile's backend (`eager`: dynamo's tracing and graph breaks without code generation, which "
        "takes minutes on a CPU: what the CPU dry run of gpu_check.py uses)",
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    gpu = args.device.startswith("cuda")
    args.size = args.size or ("base" if gpu else "mini")
    args.batch_size = args.batch_size or (128 if gpu else 32)
    args.mixed_precision = args.mixed_precision or ("bf16" if gpu else "no")
    args.steps = args.steps or (10 if gpu else 3)
    args.rows = [r for r in args.rows.split(",") if r]
    if not set(args.rows) <= set(ROWS):
        p.error(f"--rows: {args.rows} not among {ROWS}")
    return args


def report(results: dict) -> str:
    lines = [
        f"{results['device']} | {results['size']} seq {results['seq_len']} batch {results['batch_size']} "
        f"{results['precision']}{' compiled' if results['compile'] else ''} | torch {results['torch']}"
    ]
    names = {
        "hf": "transformers BertForPreTraining (Trainer's step)",
        "minibert_dense": "minibert loop step, dense MLM head",
        "minibert": "minibert loop step (as minibert-pretrain)",
    }
    for row, r in results["rows"].items():
        extra = f", MFU {r['mfu']:.1%}, HFU {r['hfu']:.1%}" if "mfu" in r else ""
        extra += f", {r['syncs_per_step']} syncs/step" if r.get("syncs_per_step") is not None else ""
        extra += (
            f", static {r['static_mb']:.0f} MB + activations {r['activation_mb']:.0f} MB" if "static_mb" in r else ""
        )
        lines.append(f"  {names[row]:<50} {r['tokens_per_s']:10.0f} real tokens/s, {r['step_ms']:.1f} ms/step{extra}")
    if "speedup" in results:
        lines.append(f"  minibert / transformers: {results['speedup']:.2f}x")
    if "sparse_head_speedup" in results:
        lines.append(f"  sparse head / dense head: {results['sparse_head_speedup']:.2f}x")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = measure(args)
    print(json.dumps(results, indent=2))
    print("\n" + report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
