"""What a run leaves for people to read: metrics.jsonl, trackers, training_curves.png, all_results.json, the card.

Only the main process writes. `metrics.jsonl` holds one JSON object per line: training records
(`{"step", "epoch", "loss", "mlm_loss", "nsp_loss", "learning_rate", "grad_norm", "tokens_per_second", ...}`)
and evaluation records (`{"step", "eval_loss", "eval_mlm_accuracy", ...}`).
"""

from __future__ import annotations

import json
import math
import os
import platform

import torch

METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "all_results.json"
CURVES_FILE = "training_curves.png"


class MetricsLog:
    """Appends records to output_dir/metrics.jsonl and, with tracking on, to accelerate's trackers."""

    def __init__(self, accelerator, output_dir: str | None, tracking: bool):
        """`output_dir=None` keeps nothing on disk (a dry run)."""
        self.accelerator = accelerator
        self.path = os.path.join(output_dir, METRICS_FILE) if output_dir else None
        self.tracking = tracking

    def truncate_after(self, step: int) -> None:
        """On resume: drop records past the checkpoint (a crashed run may have logged steps it will redo)."""
        if not self.accelerator.is_main_process or not self.path or not os.path.isfile(self.path):
            return
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        with open(self.path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)

    def clear(self) -> None:
        if self.accelerator.is_main_process and self.path and os.path.isfile(self.path):
            os.remove(self.path)

    def log(self, record: dict, step: int) -> None:
        record = {"step": step, **record}
        if self.tracking:
            self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
        if self.accelerator.is_main_process and self.path:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


def read_metrics(path: str) -> list[dict]:
    records = []
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError:  # a line cut short by a crash
                        continue
    return records


def plot_training_curves(metrics_path: str, png_path: str) -> str | None:
    """Training and evaluation loss, evaluation accuracies, and the learning rate, against the step."""
    records = read_metrics(metrics_path)
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(15, 4))
    if train:
        steps = [r["step"] for r in train]
        ax_loss.plot(steps, [r["loss"] for r in train], label="train loss (MLM + NSP)")
        ax_loss.plot(steps, [r["mlm_loss"] for r in train], label="train MLM loss", alpha=0.6)
        ax_lr.plot(steps, [r["learning_rate"] for r in train])
    if evals:
        steps = [r["step"] for r in evals]
        ax_loss.plot(steps, [r["eval_loss"] for r in evals], "o-", label="eval loss")
        ax_acc.plot(steps, [r["eval_mlm_accuracy"] for r in evals], "o-", label="MLM accuracy")
        ax_acc.plot(steps, [r["eval_nsp_accuracy"] for r in evals], "o-", label="NSP accuracy")
        ax_acc.set_ylim(0, 1)
        ax_acc.legend()
    ax_loss.set_title("loss")
    ax_loss.legend()
    ax_acc.set_title("evaluation accuracy")
    ax_lr.set_title("learning rate")
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path


def write_json(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, default=str)
        f.write("\n")
    os.replace(tmp, path)


def hardware_description(accelerator) -> str:
    n = accelerator.num_processes
    if accelerator.device.type == "cuda":
        name = torch.cuda.get_device_name(accelerator.device)
        return f"{n} x {name}" + (f" ({accelerator.distributed_type.value})" if n > 1 else "")
    cpu = platform.processor() or platform.machine()
    mode = ", FSDP2" if getattr(accelerator, "is_fsdp2", False) else ""
    return f"{n} CPU process{'es' if n > 1 else ''} ({cpu}, {os.cpu_count()} cores{mode})"


def _fmt(value) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


def model_card(*, model_id: str | None, model_path: str, config, num_parameters: int, data_description: str,
               training: dict, results: dict, example: str = "Paris is the [MASK] of France.") -> str:  # fmt: skip
    """A Hub model card: what the model is, how it was trained, how it scored, how to use it."""
    title = model_id or "MiniBERT pretrained with minibert-pretrain"
    size = f"{config.num_hidden_layers} layers, hidden size {config.hidden_size}, {config.num_attention_heads} heads"
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: fill-mask",
        "tags:",
        "- minibert",
        "- bert",
        "- fill-mask",
        "---",
        "",
        f"# {title}",
        "",
        f"A BERT encoder ({size}; {num_parameters / 1e6:.1f}M parameters, vocabulary {config.vocab_size}) pretrained "
        "from scratch with masked-language modelling and next-sentence prediction by minibert's "
        "`minibert-pretrain`.",
        "",
        "## Training",
        "",
        f"- Data: {data_description}",
    ]
    lines += [f"- {k.replace('_', ' ').capitalize()}: {_fmt(v)}" for k, v in training.items()]
    lines += ["", "## Evaluation (held-out data)", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in results.items()]
    repo = model_id or model_path
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import minibert  # registers MiniBERT with transformers' Auto classes (or pass trust_remote_code=True)",
        "from transformers import pipeline",
        f'fill = pipeline("fill-mask", model="{repo}")',
        f"print(fill({example!r}))",
        "```",
        "",
    ]
    return "\n".join(lines)
