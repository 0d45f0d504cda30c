"""Optimizers and the learning-rate schedule.

- `param_groups`: weight decay on matrices only (`p.dim() >= 2`): never on biases and LayerNorm gains.
- `Lamb`: LAMB, written out because torch ships none.
- `build_optimizer`: AdamW (fused on CUDA) or LAMB.
- `build_lr_scheduler`: transformers' schedules, stepped by the loop once per applied optimizer update whatever the
  number of processes (see the function for why accelerate's own wrapper is not used); `move_schedule_to` for a
  schedule that follows the time budget instead (`--schedule_by time`).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import SchedulerType, get_scheduler


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices (embeddings, projections) decay; vectors (biases, LayerNorm) do not, nor get LAMB's
    trust ratio (the LAMB paper excludes them: their norms say nothing about a useful step size)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay, "layer_adaptation": True},
        {"params": no_decay, "weight_decay": 0.0, "layer_adaptation": False},
    ]


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al., 2020, "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes").

    torch has no LAMB. It is Adam whose per-tensor step is rescaled by the trust ratio ||w|| / ||update||, which keeps
    every layer's relative change similar and lets BERT train with batches of 32k sequences. Groups with
    `layer_adaptation=False` (biases, LayerNorm) take the plain Adam(W) step. Everything stays on the device:
    no host synchronisation per parameter.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, layer_adaptation=True)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                state["step"] += 1
                grad, exp_avg, exp_avg_sq = p.grad.float(), state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias1, bias2 = 1 - beta1 ** state["step"], 1 - beta2 ** state["step"]
                update = (exp_avg / bias1) / ((exp_avg_sq / bias2).sqrt_().add_(group["eps"]))
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                if group["layer_adaptation"]:
                    w_norm, u_norm = p.norm(), update.norm()
                    trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                    update.mul_(trust)
                p.add_(update.to(p.dtype), alpha=-group["lr"])
        return loss


def build_optimizer(model: nn.Module, args, device: torch.device) -> torch.optim.Optimizer:
    groups = param_groups(model, args.weight_decay)
    betas = (args.adam_beta1, args.adam_beta2)
    if args.optimizer == "lamb":
        return Lamb(groups, lr=args.learning_rate, betas=betas, eps=args.adam_epsilon)
    for group in groups:
        group.pop("layer_adaptation")
    # Fused AdamW: one kernel for all parameters instead of a dozen per tensor.
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=args.learning_rate, betas=betas, eps=args.adam_epsilon, fused=fused)


# Schedules `get_scheduler` builds from these arguments alone: not the metric-driven ones (reduce_lr_on_plateau,
# greedy) nor those that need a minimum LR this CLI does not take (cosine_with_min_lr, ...).
SCHEDULERS = tuple(
    t.value for t in SchedulerType if t.value not in ("reduce_lr_on_plateau", "greedy") and "min_lr" not in t.value
)
DECAY_TYPES = ("linear", "cosine", "1-sqrt")  # the final decay of warmup_stable_decay

# Under --schedule_by time the schedule is written in these units of the time budget instead of optimizer steps.
SCHEDULE_TICKS = 10_000


def build_lr_scheduler(
    optimizer,
    name: str,
    num_warmup_steps: int,
    num_training_steps: int,
    decay_ratio: float = 0.2,
    decay_type: str = "1-sqrt",
) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' `get_scheduler`, on the bare optimizer, for the loop to step once per *applied* update.

    Not passed to `accelerator.prepare`: accelerate's `AcceleratedScheduler` steps the schedule `num_processes`
    times per update (accelerate #2318), so warmup and decay written in optimizer steps would end N times too early
    on N GPUs. Nor registered with accelerate's checkpointing (that pickles it): the loop saves its `state_dict()`
    as JSON with each checkpoint (`pretrain.checkpointing`).

    warmup_stable_decay: warmup, a constant learning rate, then a decay over the last `decay_ratio` of the steps
    (`decay_type` linear, cosine or 1-sqrt), as MiniCPM and Hägele et al. (2024) train.
    """
    base = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer  # unwrap AcceleratedOptimizer
    specific = None
    if name == "warmup_stable_decay":
        decay = min(max(round(decay_ratio * num_training_steps), 1), max(num_training_steps - num_warmup_steps, 1))
        specific = {"num_decay_steps": decay, "decay_type": decay_type}
    return get_scheduler(
        name,
        base,
        num_warmup_steps=num_warmup_steps,
        num_training_steps=num_training_steps,
        scheduler_specific_kwargs=specific,
    )


def move_schedule_to(lr_scheduler, tick: int) -> None:
    """--schedule_by time: put the schedule at `tick` (of SCHEDULE_TICKS, the share of the time budget spent).

    `LambdaLR.step()` computes the LR of `last_epoch + 1`; the position only moves forward (a resumed run restores it
    from its checkpoint and goes on from there)."""
    tick = min(max(tick, lr_scheduler.last_epoch), SCHEDULE_TICKS)
    if tick != lr_scheduler.last_epoch:
        lr_scheduler.last_epoch = tick - 1
        lr_scheduler.step()
