"""Held-out evaluation: MLM loss / accuracy / perplexity and NSP loss / accuracy, over all processes.

Each batch yields per-sequence sums (not logits), gathered with `gather_for_metrics`, which drops the duplicate
sequences accelerate adds to even out the last batch across processes. Masks are drawn under a fixed seed, so
every evaluation of a run scores the same masked tokens and the curve compares like with like.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random

import numpy as np
import torch
import torch.nn.functional as F

# Columns of the per-sequence statistics.
MLM_LOSS, MLM_COUNT, MLM_CORRECT, NSP_LOSS, NSP_CORRECT = range(5)
EVAL_EPOCH = 0  # the `epoch` given to a collator with `set_epoch` during evaluation (fixed: same masks every time)


def masked_lm_targets(prediction_logits: torch.Tensor, labels: torch.Tensor, masked_positions=None):
    """(logits, targets, row of each target) at the masked positions, for dense (B, S, V) or sparse (M, V) logits.

    Sparse logits have one row per entry of the collator's `masked_positions` (flat positions in B * S, the bucket's
    fill rows past the end), or, without them, come in the order of `labels[labels != -100]` (row-major).
    """
    if prediction_logits.dim() == 2 and masked_positions is not None:
        real = masked_positions < labels.numel()  # (M,) False on the bucket's fill
        positions = masked_positions[real]
        return prediction_logits[real], labels.reshape(-1)[positions], positions // labels.size(1)
    masked = labels != -100  # (B, S)
    rows = masked.nonzero()[:, 0]  # (M,) sequence index of each masked token
    targets = labels[masked]  # (M,)
    logits = prediction_logits if prediction_logits.dim() == 2 else prediction_logits[masked]  # (M, V)
    return logits, targets, rows


def per_sequence_stats(outputs, batch, next_sentence_prediction: bool) -> torch.Tensor:
    """(B, 5) float32: MLM loss sum, masked tokens, correct predictions, NSP loss, NSP correct, per sequence.
    `next_sentence_prediction`: the run's objective (`RunPlan`); without it the NSP columns stay 0."""
    labels = batch["labels"]
    batch_size = labels.size(0)
    # MiniBertForPreTraining's `prediction_logits`, MiniBertForMaskedLM's `logits` (an MLM-only run)
    prediction_logits = outputs.prediction_logits if next_sentence_prediction else outputs.logits
    logits, targets, rows = masked_lm_targets(prediction_logits, labels, batch.get("masked_positions"))
    token_loss = F.cross_entropy(logits.float(), targets, reduction="none")  # (M,)
    stats = torch.zeros(batch_size, 5, dtype=torch.float32, device=labels.device)
    stats[:, MLM_LOSS].index_add_(0, rows, token_loss)
    stats[:, MLM_COUNT].index_add_(0, rows, torch.ones_like(token_loss))
    stats[:, MLM_CORRECT].index_add_(0, rows, (logits.argmax(-1) == targets).float())
    if next_sentence_prediction:
        nsp_labels = batch["next_sentence_label"].view(-1)
        nsp_logits = outputs.seq_relationship_logits.float()  # (B, 2)
        stats[:, NSP_LOSS] = F.cross_entropy(nsp_logits, nsp_labels, reduction="none")
        stats[:, NSP_CORRECT] = (nsp_logits.argmax(-1) == nsp_labels).float()
    return stats


def summarize(totals, num_sequences: int, next_sentence_prediction: bool = True) -> dict[str, float]:
    """Metrics from summed statistics (a sequence of 5 floats); without NSP, the MLM ones only."""
    mlm_loss_sum, mlm_count, mlm_correct, nsp_loss_sum, nsp_correct = (float(x) for x in totals)
    mlm_loss = mlm_loss_sum / max(mlm_count, 1.0)
    nsp_loss = nsp_loss_sum / max(num_sequences, 1)
    try:
        perplexity = math.exp(mlm_loss)
    except OverflowError:
        perplexity = float("inf")
    metrics = {
        "eval_loss": mlm_loss + nsp_loss,
        "eval_mlm_loss": mlm_loss,
        "eval_nsp_loss": nsp_loss,
        "eval_mlm_accuracy": mlm_correct / max(mlm_count, 1.0),
        "eval_nsp_accuracy": nsp_correct / max(num_sequences, 1),
        "perplexity": perplexity,
        "eval_masked_tokens": int(mlm_count),
        "eval_samples": num_sequences,
    }
    if not next_sentence_prediction:
        del metrics["eval_nsp_loss"], metrics["eval_nsp_accuracy"]
    return metrics


@contextlib.contextmanager
def seeded_rng(seed: int):
    """Run the block under fixed python / numpy / torch seeds, then put every RNG back where it was, so
    evaluation neither depends on nor disturbs the training stream (dropout, masks)."""
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def eval_collator(collator, mlm_probability: float | None = None):
    """A copy of the training collator fixed to `EVAL_EPOCH`, so evaluation never changes the training one;
    `mlm_probability` (--eval_mlm_probability) masks another share than training does, so that runs trained at
    different rates are compared at the same one."""
    collator = copy.copy(collator)
    if hasattr(collator, "set_epoch"):
        collator.set_epoch(EVAL_EPOCH)
    if mlm_probability is not None:
        collator.mlm_probability = mlm_probability
    return collator


@torch.no_grad()
def evaluate(
    model,
    dataloader,
    accelerator,
    seed: int,
    next_sentence_prediction: bool,
    max_batches: int | None = None,
    sparse_head: bool = True,
) -> dict[str, float]:
    """Metrics of `model` on a prepared evaluation dataloader (every process calls this); `next_sentence_prediction`
    is the run's objective (an MLM-only run's model has no NSP head, and its metrics no NSP entries), `sparse_head`
    its MLM head (`RunPlan.sparse_head`: logits at the masked positions only; the metrics are the same)."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(5, dtype=torch.float64, device=accelerator.device)
    num_sequences = 0
    with seeded_rng(seed):
        for i, batch in enumerate(dataloader):
            if max_batches is not None and i >= max_batches:
                break
            outputs = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                token_type_ids=batch["token_type_ids"],
                labels=batch["labels"],
                token_indices=batch.get("token_indices"),
                masked_positions=batch.get("masked_positions"),
                attention_groups=batch.get("attention_groups"),
                sparse_prediction=sparse_head,
            )
            stats = accelerator.gather_for_metrics(per_sequence_stats(outputs, batch, next_sentence_prediction))
            totals += stats.sum(0).double()
            num_sequences += stats.size(0)
    if hasattr(dataloader, "end"):
        dataloader.end()  # also when stopped early: leave accelerate's record of active dataloaders clean
    model.train(was_training)
    return summarize(totals.tolist(), num_sequences, next_sentence_prediction)
