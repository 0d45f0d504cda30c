"""The pretraining loop: optimizer steps over windows of micro-batches, from one CPU to many GPUs and nodes.

`PretrainingLoop.train(stop)` runs epochs until `max_train_steps`, a stop signal, the time budget or too many
non-finite steps. It is `run_mlm_no_trainer.py`'s loop, with what a long run on shared hardware needs:

- The loss of an optimizer step is the mean over *all* masked tokens (and all sequences, for NSP) of the global
  batch, however it is split into processes and micro-batches: the step's micro-batches are fetched first, their
  global masked-token count is summed (one all-reduce, no host read) and passed to the model as transformers'
  `num_items_in_batch`. So one process with batch 2B and two with batch B take the same step, and gradient
  accumulation is exact, not "the mean of means".
- The schedule steps once per applied optimizer update on any number of processes (`optim.build_lr_scheduler`),
  or follows the training time spent (`--schedule_by time`, `optim.move_schedule_to`).
- Batch-size warmup (`--batch_size_warmup_ratio`): early steps take fewer micro-batches (1 up to
  `gradient_accumulation_steps`); the position in the data is counted in micro-batches (`Progress.batches_in_epoch`).
- The data order is a function of (seed, epoch) (accelerate's seedable sampler, `set_epoch` every epoch) and the
  masks of (seed, epoch, example) (`pretrain.collator`), so a resumed run sees what an uninterrupted run sees:
  `skip_first_batches` repositions the first epoch after a resume (a `datasets` stream goes straight back to its
  saved position, `pretrain.streaming.ResumableStream`), later epochs start from scratch.
- One small host read per optimizer step (not per micro-batch): the step's grad norm is checked for being finite
  and the stop flags (signal, time budget) and the clock are agreed by all processes in the same read. A
  non-finite step is skipped (no update, gradients zeroed); `MAX_NONFINITE_STEPS` in a row end the run. Losses and
  token counts stay on the device until a logging step.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from minibert.cli import UserError
from minibert.safety import StopRequest, non_finite_parameters

from .args import PretrainingArguments, RunPlan
from .checkpointing import Progress, save_checkpoint_state
from .evaluation import evaluate
from .optim import SCHEDULE_TICKS, move_schedule_to
from .report import MetricsLog
from .throughput import peak_tflops, step_flops

logger = logging.getLogger(__name__)

MAX_NONFINITE_STEPS = 20  # consecutive skipped steps that end the run
DRY_RUN_EVAL_BATCHES = 2


class TrainingDiverged(UserError):
    """The loss or the gradients stayed non-finite: lower the learning rate, use bf16 rather than fp16, check data."""


def host_read(tensor: torch.Tensor) -> list:
    """Device values as Python numbers: the loop's only way to read the device (a blocking device-to-host copy on a
    GPU). One call per optimizer step (`PretrainingLoop._agree`), more only on logging and checkpoint steps;
    tests/test_fast_path.py counts them."""
    return tensor.detach().to("cpu", copy=True).tolist()


@dataclass(eq=False)
class PretrainingLoop:
    """The state of one pretraining run between its set-up (`pretrain.train`) and its end. Not a framework: a place
    for the loop's pieces (a step, logging, evaluating, checkpointing) to share the objects they all use."""

    accelerator: object  # accelerate.Accelerator
    model: torch.nn.Module  # prepared (maybe compiled)
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    train_dataloader: object
    eval_dataloader: object | None
    collator: object
    args: PretrainingArguments
    progress: Progress
    metrics: MetricsLog
    max_train_steps: int
    plan: RunPlan  # the objective and the fast path (sparse MLM head, unpadded layout), decided once
    stream: object | None = None  # a `ResumableStream`: checkpoints save its position, a resume goes back to it
    stream_resumed: bool = False  # the stream was put back at the checkpoint's position: no batches to skip

    stop_reason: str | None = field(default=None, init=False)  # "signal" / "time_budget" once the loop stops early
    stop_signal: int | None = field(default=None, init=False)
    skipped_steps: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        accelerator, args = self.accelerator, self.args
        self.gas = args.gradient_accumulation_steps
        # Sequences per micro-batch, over all processes.
        self.per_window_batch = args.per_device_train_batch_size * accelerator.num_processes
        # Streamed shards can differ in length: every process ends an epoch when the first one runs out (else the
        # others would wait for it in the next all-reduce forever). Costs one host read per step, streamed only.
        self.agree_on_epoch_end = self.plan.streaming and accelerator.num_processes > 1
        self.checkpoint_every = args.checkpoint_interval()
        self.budget_s = args.time_budget * 60 if args.time_budget else None
        self.by_time = args.schedule_by == "time"
        self.last_saved_step = self.progress.completed_steps or None
        self.consecutive_skips = 0
        self.config = accelerator.unwrap_model(self.model).config
        # The share of the schedule done, the same on every process (steps, or the agreed clock under time).
        self.schedule_fraction = self._fraction_from_progress()
        device = accelerator.device
        self._zero = torch.zeros((), device=device)
        self._one = torch.ones((), device=device)
        # Running sums since the last log, on the device: [mlm loss, nsp loss, grad norm, applied steps].
        self._log_sums = torch.zeros(4, dtype=torch.float32, device=device)
        # [real tokens, sum of squared sequence lengths, masked tokens] since the last flush, on the device
        self._token_stats = torch.zeros(3, dtype=torch.int64, device=device)
        self._log_flops = 0.0  # model FLOPs since the last training record (`pretrain.throughput`)
        self.peak_tflops = peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
        self._unlogged_tokens = 0  # flushed into progress (by a checkpoint) but not yet in a training record
        self._log_samples = 0
        self._log_time = 0.0

    @property
    def batches_per_epoch(self) -> int | None:
        """Micro-batches of one process in an epoch (None when streamed)."""
        return None if self.plan.streaming else len(self.train_dataloader)

    def _fraction_from_progress(self) -> float:
        if self.by_time:
            return min(self.progress.train_runtime / self.budget_s, 1.0)
        return self.progress.completed_steps / max(self.max_train_steps, 1)

    def window_size(self) -> int:
        """Micro-batches of the next step: `gradient_accumulation_steps`, or fewer during batch-size warmup (a linear
        ramp from 1 over the first `batch_size_warmup_ratio` of the schedule, as Cramming does)."""
        ramp = self.args.batch_size_warmup_ratio
        if not ramp or self.schedule_fraction >= ramp:
            return self.gas
        return min(self.gas, 1 + math.floor((self.gas - 1) * self.schedule_fraction / ramp))

    # ---- one optimizer step -------------------------------------------------------------------------------
    def train_step(self, window: list[dict], signalled: bool, clock_s: float) -> tuple[bool, str | None]:
        """Forward/backward over the step's micro-batches, then clip, check and update.

        `clock_s`: the training time spent, this process's view (the processes agree on their mean). Returns
        (skipped, stop): whether the update was skipped (non-finite), and "signal" / "time_budget" when any process
        was signalled or ran out of time (all processes learn it in the same step).
        """
        accelerator = self.accelerator
        parts = self._forward_backward(window)
        grad_norm = self._clip_gradients()
        time_up = self.budget_s is not None and clock_s >= self.budget_s
        nonfinite, signalled, time_up, clock_s = self._agree(grad_norm, signalled, time_up, clock_s)
        stop = "signal" if signalled else "time_budget" if time_up else None

        if nonfinite and accelerator.scaler is None:
            skipped = True  # never let a nan/inf into the weights or the optimizer's moments
        else:  # under fp16 the grad scaler decides, and must see the overflow to lower its scale
            self.optimizer.step()
            skipped = accelerator.optimizer_step_was_skipped
        self.optimizer.zero_grad(set_to_none=True)
        self._advance_schedule(skipped, clock_s)
        if not skipped:
            self._log_sums += torch.cat([parts, grad_norm.view(1), self._one.view(1)])
        return skipped, stop

    def _agree(self, grad_norm: torch.Tensor, signalled: bool, time_up: bool, clock_s: float):
        """The step's one host read: (non-finite gradients, signalled, time up, clock), the flags of any process and
        the mean of their clocks. One process reads only the grad norm's finiteness (its own flags are host values);
        several send their flags to the device without blocking (pinned memory) and read the all-reduced sum."""
        accelerator = self.accelerator
        nonfinite = (~torch.isfinite(grad_norm)).float().view(1)
        n = accelerator.num_processes
        if n == 1:
            return bool(host_read(nonfinite)[0]), signalled, time_up, clock_s
        host = torch.tensor([float(signalled), float(time_up), float(clock_s)])
        if accelerator.device.type == "cuda":
            host = host.pin_memory()  # from torch's caching host allocator: reused, and safe while the copy runs
        flags = torch.cat([nonfinite, host.to(accelerator.device, non_blocking=True)])
        nonfinite, signalled, time_up, clock_sum = host_read(accelerator.reduce(flags, reduction="sum"))
        return bool(nonfinite), bool(signalled), bool(time_up), clock_sum / n

    def _forward_backward(self, window: list[dict]) -> torch.Tensor:
        """Gradients of the step's global-mean loss; returns its [mlm, nsp] parts (on the device)."""
        accelerator, model = self.accelerator, self.model
        # The global normaliser of the MLM loss: masked tokens over every micro-batch and process.
        n_masked = torch.stack([(b["labels"] != -100).sum() for b in window]).sum()
        if accelerator.num_processes > 1:
            n_masked = accelerator.reduce(n_masked, reduction="sum")
        n_masked = n_masked.clamp(min=1).float()
        n_sequences = float(self.per_window_batch * len(window))
        # DDP / FSDP / DeepSpeed average gradients over processes and `accelerator.backward` divides by the
        # accumulation steps: scale back up so that the step's gradient is that of the global mean.
        scale = accelerator.num_processes * self.gas
        parts = torch.zeros(2, device=accelerator.device)
        for i, batch in enumerate(window):
            last = i == len(window) - 1
            # Gradients are all-reduced on the window's last micro-batch only (its length varies under batch-size
            # warmup, so accelerate's fixed-length `accumulate` cannot decide it). A private switch of accelerate:
            # tests/test_accelerate_contract.py checks it against the installed version.
            accelerator.gradient_state._set_sync_gradients(last)
            with contextlib.nullcontext() if last else accelerator.no_sync(model):
                # transformers' `num_items_in_batch` convention: the MLM loss is summed over this micro-batch's
                # masked tokens and divided by the step's global count (0 when none is masked), the NSP loss summed
                # over its sequences and divided by the step's. The plan's sparse head: logits (M, vocab) at the
                # collator's `masked_positions` only.
                out = model(
                    **batch,
                    num_items_in_batch=n_masked,
                    num_sequences_in_batch=n_sequences,
                    sparse_prediction=self.plan.sparse_head,
                )
                accelerator.backward(out.loss * scale)
            mlm, nsp = (out.mlm_loss, out.nsp_loss) if self.plan.next_sentence_prediction else (out.loss, self._zero)
            parts += torch.stack([mlm, nsp]).detach().float()
            self._count_tokens(batch)
        return parts

    def _count_tokens(self, batch: dict) -> None:
        """Real tokens, the sum of squared sequence lengths and masked tokens, on the device (for tokens/s and MFU)."""
        lengths = batch["attention_mask"].sum(1)
        self._token_stats += torch.stack([lengths.sum(), (lengths * lengths).sum(), (batch["labels"] != -100).sum()])

    def _clip_gradients(self) -> torch.Tensor:
        max_norm = self.args.max_grad_norm if self.args.max_grad_norm > 0 else float("inf")
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm)
        if grad_norm is None:  # DeepSpeed clips (and checks) inside its engine
            return self._zero
        if not torch.is_tensor(grad_norm):  # DeepSpeed's global norm is a float
            grad_norm = torch.tensor(float(grad_norm), device=self.accelerator.device)
        return grad_norm.detach().float()

    def _advance_schedule(self, skipped: bool, clock_s: float) -> None:
        """One schedule step per applied update; under --schedule_by time the position of the agreed clock."""
        if self.by_time:
            self.schedule_fraction = min(clock_s / self.budget_s, 1.0)
            if not skipped:
                move_schedule_to(self.lr_scheduler, math.floor(self.schedule_fraction * SCHEDULE_TICKS))
            return
        if not skipped:
            self.lr_scheduler.step()
        self.schedule_fraction = (self.progress.completed_steps + 1) / max(self.max_train_steps, 1)

    # ---- bookkeeping around steps -------------------------------------------------------------------------
    def _flush_tokens(self) -> int:
        """Add the tokens counted on the device since the last flush to `progress`, and their model FLOPs to the next
        training record's (all processes call this)."""
        stats = self._token_stats
        if self.accelerator.num_processes > 1:
            stats = self.accelerator.reduce(stats, reduction="sum")
        tokens, squared_lengths, masked = host_read(stats)
        self._token_stats.zero_()
        self.progress.tokens_seen += tokens
        self._log_flops += step_flops(self.config, tokens, squared_lengths, masked)
        return tokens

    def log_training(self, bar) -> None:
        """Reduce the running sums over processes and write a training record (a logging step's host read)."""
        sums = self._log_sums
        if self.accelerator.num_processes > 1:
            # the loss parts are shares of a global mean: their sum over processes is the global mean.
            sums = torch.cat([self.accelerator.reduce(sums[:2], reduction="sum"), sums[2:]])
        mlm, nsp, grad_norm, applied = host_read(sums)
        tokens = self._flush_tokens() + self._unlogged_tokens
        elapsed = max(self._log_time, 1e-9)

        def mean(x: float) -> float:
            return x / applied if applied else float("nan")

        record = {
            "epoch": self.fractional_epoch(),
            "loss": mean(mlm + nsp),
            "mlm_loss": mean(mlm),
            **({"nsp_loss": mean(nsp)} if self.plan.next_sentence_prediction else {}),
            "learning_rate": self.lr_scheduler.get_last_lr()[0],
            "grad_norm": mean(grad_norm),
            "tokens_per_second": tokens / elapsed,  # real (non-padding) tokens
            "samples_per_second": self._log_samples / elapsed,
            "tokens_seen": self.progress.tokens_seen,
            "skipped_steps": self.skipped_steps,
        }
        if self.args.batch_size_warmup_ratio:
            record["batch_size"] = self.window_size() * self.per_window_batch
        tflops = self._log_flops / elapsed / 1e12 / self.accelerator.num_processes  # per device
        record["model_tflops_per_device"] = tflops
        if self.peak_tflops:  # against the device's dense bf16 peak, named in the first log line
            record["mfu"] = tflops / self.peak_tflops
        self.metrics.log(record, step=self.progress.completed_steps)
        if bar is not None:
            shown = {"loss": f"{record['loss']:.3f}", "tok_s": f"{record['tokens_per_second']:.0f}"}
            if "mfu" in record:
                shown["mfu"] = f"{record['mfu']:.1%}"
            bar.set_postfix(shown, refresh=False)
        self._log_sums.zero_()
        self._unlogged_tokens = 0
        self._log_flops = 0.0
        self._log_samples = 0
        self._log_time = 0.0

    def fractional_epoch(self) -> float:
        if not self.batches_per_epoch:
            return float(self.progress.epoch)
        return round(self.progress.epoch + self.progress.batches_in_epoch / self.batches_per_epoch, 4)

    def run_evaluation(self, max_batches: int | None = None) -> dict:
        if self.eval_dataloader is None:
            return {}
        results = evaluate(
            self.model,
            self.eval_dataloader,
            self.accelerator,
            seed=self.args.seed,
            next_sentence_prediction=self.plan.next_sentence_prediction,
            max_batches=max_batches,
            sparse_head=self.plan.sparse_head,
        )
        # train_runtime: the training time spent so far, for curves over time (benchmarks/bench_recipe.py)
        record = {"epoch": self.fractional_epoch(), "train_runtime": round(self.progress.train_runtime, 3), **results}
        self.metrics.log(record, step=self.progress.completed_steps)
        shown = ", ".join(f"{k.removeprefix('eval_')} {v:.4g}" for k, v in results.items())
        logger.info("step %d: %s", self.progress.completed_steps, shown)
        return results

    def save(self) -> str | None:
        if self.args.dry_run or self.last_saved_step == self.progress.completed_steps:
            return None
        self._check_finite_weights()
        self._unlogged_tokens += self._flush_tokens()
        path = save_checkpoint_state(
            self.accelerator,
            self.args.output_dir,
            self.progress,
            self.args.checkpoints_total_limit,
            lr_scheduler=self.lr_scheduler,
        )
        self.last_saved_step = self.progress.completed_steps
        # A stream split across the processes: each saves the position in its own share. Read whole by each
        # process (a stream given to `pretrain` as is), the main process saves the one position.
        stream = self.stream
        if stream is not None and (stream.num_processes > 1 or self.accelerator.is_main_process):
            stream.save_position(path, self.progress.epoch, self.stream_examples())
        logger.info("saved checkpoint %s", path)
        return path

    def stream_examples(self) -> int:
        """Examples of the current epoch this process has read from the stream for the steps taken: its own
        micro-batches from its share of a split stream (`streaming.ResumableStream`), or every global micro-batch
        from a stream each process reads whole (accelerate keeps its share)."""
        return self.progress.batches_in_epoch * self.per_window_batch // self.stream.num_processes

    def _check_finite_weights(self) -> None:
        """Never write a checkpoint (or, after the last one, an export) from weights holding NaN or inf."""
        bad = non_finite_parameters(self.model)
        flag = torch.tensor(float(bool(bad)), device=self.accelerator.device)
        if self.accelerator.num_processes > 1:  # FSDP shards: any process's part
            flag = self.accelerator.reduce(flag, reduction="sum")
        if host_read(flag) > 0:
            raise TrainingDiverged(
                f"the weights hold NaN or inf at step {self.progress.completed_steps}"
                + (f" ({', '.join(bad[:3])})" if bad else "")
                + ": nothing was saved or exported; every checkpoint in output_dir/checkpoints holds finite weights. "
                "Lower --learning_rate or raise --num_warmup_steps, and resume or start over"
            )

    # ---- epochs -------------------------------------------------------------------------------------------
    def _window(self, batches) -> list[dict] | None:
        """The next optimizer step's micro-batches, or None when the epoch has fewer left."""
        window = []
        for _ in range(self.window_size()):
            batch = next(batches, None)
            if batch is None:
                return None
            window.append(batch)
        return window

    def _epoch_has_room(self) -> bool:
        """Whether the counted epoch holds the next step's micro-batches (a shorter rest is dropped, as drop_last)."""
        if self.batches_per_epoch is None:
            return True
        return self.batches_per_epoch - self.progress.batches_in_epoch >= self.window_size()

    def train(self, stop: StopRequest) -> None:
        """Run epochs until `max_train_steps`, a stop signal, the time budget, or too many non-finite steps."""
        bar = tqdm(
            total=None if self.by_time else self.max_train_steps,
            initial=self.progress.completed_steps,
            disable=not self.accelerator.is_local_main_process,
            desc="pretraining",
            unit="step",
            dynamic_ncols=True,
            mininterval=1.0,
        )
        self.model.train()
        self._session_start = time.monotonic()
        self._session_runtime = self.progress.train_runtime
        try:
            while self.progress.completed_steps < self.max_train_steps and self.stop_reason is None:
                self._train_epoch(stop, bar)
        finally:
            bar.close()

    def _clock(self, step_start: float) -> float:
        """The clock the time budget is measured on: the training time of all sessions under --schedule_by time
        (a resumed run continues its schedule), else this session's wall clock."""
        if self.by_time:
            return self.progress.train_runtime + (time.perf_counter() - step_start)
        return time.monotonic() - self._session_start

    def _begin_epoch(self):
        """The batches of the current epoch from where the run stands."""
        progress = self.progress
        # The order of epoch e is a function of (seed, e), and so are its masks: a resumed run starting in a later
        # epoch does not replay epoch 0 (accelerate #2016).
        self.train_dataloader.set_epoch(progress.epoch)
        if hasattr(self.collator, "set_epoch"):
            self.collator.set_epoch(progress.epoch)
        dataloader = self.train_dataloader
        stream_resumed, self.stream_resumed = self.stream_resumed, False
        if progress.batches_in_epoch and not stream_resumed:  # resumed mid-epoch: skip what was trained on
            dataloader = self.accelerator.skip_first_batches(self.train_dataloader, progress.batches_in_epoch)
        return dataloader

    def _train_epoch(self, stop: StopRequest, bar) -> None:
        progress = self.progress
        dataloader = self._begin_epoch()
        batches = iter(dataloader)
        try:
            while progress.completed_steps < self.max_train_steps:
                t0 = time.perf_counter()
                window = self._window(batches) if self._epoch_has_room() else None
                if self.agree_on_epoch_end:
                    out_of_data = self._one if window is None else self._zero
                    if host_read(self.accelerator.reduce(out_of_data, reduction="sum")) > 0:
                        window = None
                if window is None:  # a streamed epoch ran out (counted epochs end below, before a short window)
                    if progress.step_in_epoch == 0:
                        raise UserError("the training data yields less than one global batch")
                    self._next_epoch()
                    if self.checkpoint_every == "epoch":
                        self.save()
                    return
                skipped, stop_now = self.train_step(window, stop.requested, self._clock(t0))
                self._count_step(len(window), time.perf_counter() - t0)
                epoch_done = not self._epoch_has_room()
                if epoch_done:  # before the step's checkpoint, which then resumes at the next epoch's start
                    self._next_epoch()
                bar.update(1)
                self._after_step(skipped, epoch_done, bar)
                if stop_now:
                    self._stop(stop_now, stop)
                    return
                if epoch_done:
                    return
        finally:
            getattr(batches, "close", lambda: None)()  # the epoch may stop before the dataloader's end
            dataloader.end()  # ... then accelerate's record of active dataloaders needs this

    def _count_step(self, micro_batches: int, step_time: float) -> None:
        progress = self.progress
        progress.train_runtime += step_time
        progress.samples_seen += micro_batches * self.per_window_batch
        progress.completed_steps += 1
        progress.step_in_epoch += 1
        progress.batches_in_epoch += micro_batches
        self._log_time += step_time
        self._log_samples += micro_batches * self.per_window_batch

    def _next_epoch(self) -> None:
        progress = self.progress
        progress.epoch, progress.step_in_epoch, progress.batches_in_epoch = progress.epoch + 1, 0, 0

    def _stop(self, reason: str, stop: StopRequest) -> None:
        self.stop_reason = reason
        if reason == "signal":  # a process the signal did not reach reports SIGTERM
            self.stop_signal = int(stop.signum or signal.SIGTERM)
        else:
            logger.warning(
                "time budget of %g minutes reached at step %d", self.args.time_budget, self.progress.completed_steps
            )

    def _after_step(self, skipped: bool, epoch_done: bool, bar) -> None:
        progress, args = self.progress, self.args
        if skipped:
            self.skipped_steps += 1
            self.consecutive_skips += 1
            log = logger.info if self.accelerator.scaler is not None else logger.warning
            log(
                "step %d: non-finite loss or gradient, update skipped (%d in a row)",
                progress.completed_steps,
                self.consecutive_skips,
            )
            if self.consecutive_skips >= MAX_NONFINITE_STEPS:
                raise TrainingDiverged(
                    f"{self.consecutive_skips} optimizer steps in a row had a non-finite loss or gradient (up to step "
                    f"{progress.completed_steps}); lower --learning_rate, raise --num_warmup_steps, prefer bf16 to "
                    "fp16, or check the data. The last checkpoint in output_dir/checkpoints is intact."
                )
        else:
            self.consecutive_skips = 0
        step = progress.completed_steps
        if step % args.logging_steps == 0 or step == self.max_train_steps:
            self.log_training(bar)
        if args.eval_steps and step % args.eval_steps == 0 and step < self.max_train_steps:
            self.run_evaluation(DRY_RUN_EVAL_BATCHES if args.dry_run else None)
        every = self.checkpoint_every
        if (isinstance(every, int) and step % every == 0) or (every == "epoch" and epoch_done):
            self.save()
