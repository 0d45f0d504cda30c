"""What a run leaves for people to read: metrics.jsonl, trackers, training_curves.png, all_results.json, the card.

Only the main process writes. `metrics.jsonl` holds one JSON object per line: training records
(`{"step", "epoch", "loss", "mlm_loss", "nsp_loss", "learning_rate", "grad_norm", "tokens_per_second", ...}`)
and evaluation records (`{"step", "eval_loss", "eval_mlm_accuracy", ...}`).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time

import torch

from minibert.runs import RESULTS_FILE
from minibert.safety import write_atomically, write_json

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
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
        write_atomically(self.path, "".join(json.dumps(r) + "\n" for r in kept))  # a crash keeps the old log whole

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
        nsp = "nsp_loss" in train[0]
        ax_loss.plot(steps, [r["loss"] for r in train], label="train loss (MLM + NSP)" if nsp else "train MLM loss")
        if nsp:
            ax_loss.plot(steps, [r["mlm_loss"] for r in train], label="train MLM loss", alpha=0.6)
        ax_lr.plot(steps, [r["learning_rate"] for r in train])
    if evals:
        steps = [r["step"] for r in evals]
        ax_loss.plot(steps, [r["eval_loss"] for r in evals], "o-", label="eval loss")
        ax_acc.plot(steps, [r["eval_mlm_accuracy"] for r in evals], "o-", label="MLM accuracy")
        if "eval_nsp_accuracy" in evals[0]:
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


def hardware_description(accelerator) -> str:
    n = accelerator.num_processes
    if accelerator.device.type == "cuda":
        name = torch.cuda.get_device_name(accelerator.device)
        return f"{n} x {name}" + (f" ({accelerator.distributed_type.value})" if n > 1 else "")
    cpu = platform.processor() or platform.machine()
    mode = ", FSDP2" if getattr(accelerator, "is_fsdp2", False) else ""
    return f"{n} CPU process{'es' if n > 1 else ''} ({cpu}, {os.cpu_count()} cores{mode})"


# ---- the end of a run: its results, the exported model and its card ---------------------------------------------
def final_results(loop, evaluation: dict, num_parameters: int, session_start: float) -> dict:
    """What all_results.json holds: the last evaluation, how much was trained, how fast, on what."""
    progress, accelerator = loop.progress, loop.accelerator
    runtime = max(progress.train_runtime, 1e-9)
    return {
        **evaluation,
        "train_steps": progress.completed_steps,
        "train_epochs": loop.fractional_epoch(),
        "train_samples": progress.samples_seen,
        "train_tokens": progress.tokens_seen,
        "train_runtime": round(progress.train_runtime, 3),  # seconds in training steps, all sessions
        "train_tokens_per_second": progress.tokens_seen / runtime,
        "train_samples_per_second": progress.samples_seen / runtime,
        "skipped_steps": loop.skipped_steps,
        "num_processes": accelerator.num_processes,
        "global_batch_size": loop.per_window_batch * loop.gas,
        "num_parameters": num_parameters,
        "vocab_size": loop.config.vocab_size,
        "mixed_precision": accelerator.mixed_precision,
        "stopped_by_time_budget": loop.stop_reason == "time_budget",
        "total_runtime": round(time.monotonic() - session_start, 3),
    }


def _training_summary(accelerator, data_args, args, results: dict, num_warmup_steps: int) -> dict:
    """How the model was trained, as the card lists it (the card states the objective itself)."""
    schedule = (
        f"{args.lr_scheduler_type} schedule over {'the time budget' if args.schedule_by == 'time' else 'the steps'}"
    )
    return {
        "steps": results["train_steps"],
        "epochs": results["train_epochs"],
        "global batch": f"{results['global_batch_size']} sequences of up to {data_args.max_seq_length} tokens",
        "tokens seen": results["train_tokens"],
        "optimizer": f"{args.optimizer} (lr {args.learning_rate:g}, weight decay {args.weight_decay:g}, {schedule}, "
        f"{num_warmup_steps} warmup {'ticks' if args.schedule_by == 'time' else 'steps'})",
        "masking": f"{data_args.mlm_probability:.0%} of tokens ({data_args.mask_replace_prob:.0%} [MASK] / "
        f"{data_args.random_replace_prob:.0%} random)" + (", whole words" if data_args.whole_word_mask else ""),
        "mixed precision": results["mixed_precision"],
        "hardware": hardware_description(accelerator),
        "training time": f"{results['train_runtime'] / 60:.1f} min ({results['train_tokens_per_second']:.0f} tokens/s)",
        "seed": args.seed,
    }


def write_outputs(
    accelerator, model, data, data_args, args, hub_args, results: dict, num_warmup_steps: int, plan
) -> None:
    """The Hub-ready model + card, all_results.json and the curves in output_dir; the upload if asked. `plan`: the
    run's `RunPlan` (the card states its objective)."""
    from minibert.card import PretrainingCardInfo, render_cards
    from minibert.hub import push_to_hub, remove_bert_twin, save_bert_twin, save_model_folder

    from .demo import describe_data, fill_mask_prompts
    from .distributed import export_model

    export = export_model(accelerator, model)  # a collective under FSDP / DeepSpeed: every process calls it
    if not accelerator.is_main_process:
        return
    eval_keys = ("eval_loss", "eval_mlm_loss", "eval_mlm_accuracy", "eval_nsp_accuracy", "perplexity")
    twin = hub_args.writes_twin(export.config)
    cards = render_cards(
        PretrainingCardInfo(
            hub_model_id=hub_args.hub_model_id,
            output_dir=args.output_dir,
            config=export.config,
            num_parameters=results["num_parameters"],
            data_description=describe_data(data_args),
            dataset_id=data_args.dataset_name,
            dataset_config=data_args.dataset_config_name,
            next_sentence_prediction=plan.next_sentence_prediction,
            training=_training_summary(accelerator, data_args, args, results, num_warmup_steps),
            results={k: results[k] for k in eval_keys if k in results},
            example=next(iter(fill_mask_prompts(args, data_args)), "Paris is the [MASK] of France."),
            export_bert=twin,
        )
    )
    save_model_folder(export, data.tokenizer, args.output_dir, model_card=cards.model)
    if twin:
        save_bert_twin(export, data.tokenizer, args.output_dir, model_card=cards.twin)
    else:
        remove_bert_twin(args.output_dir)
    write_json(os.path.join(args.output_dir, RESULTS_FILE), results)
    plot_training_curves(os.path.join(args.output_dir, METRICS_FILE), os.path.join(args.output_dir, CURVES_FILE))
    logger.info("wrote the model, %s and %s to %s", RESULTS_FILE, CURVES_FILE, args.output_dir)
    if hub_args.push_to_hub:
        url = push_to_hub(args.output_dir, hub_args.hub_model_id, hub_args.hub_token, hub_args.hub_private_repo)
        logger.info("uploaded to %s", url)
