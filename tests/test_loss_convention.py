"""The heads follow transformers' conventions end to end, so `Trainer` and our loop need no special case:

- every head's loss honours `num_items_in_batch` (the sum over this batch / the step's count): transformers'
  `Trainer` with `gradient_accumulation_steps=2` logs the same loss and makes the same update as with one batch of
  twice the size, for every head. The oracle is the second run; each data set is built so that the mean of the two
  micro-batches' means would differ from the global mean (labels ignored in some rows), so a head that ignored the
  convention would fail.
- attention kwargs reach the backend: a padding-free batch (`DataCollatorWithFlattening`: one row, `cu_seq_lens_*`)
  through a registered attention function that reads them equals the padded batch.
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, make_batch, real, tiny_config
from torch.utils.data import SequentialSampler
from transformers import (
    AttentionInterface,
    DataCollatorWithFlattening,
    Trainer,
    TrainingArguments,
)
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from minibert import (
    MiniBertForMaskedLM,
    MiniBertForMultipleChoice,
    MiniBertForNextSentencePrediction,
    MiniBertForPreTraining,
    MiniBertForQuestionAnswering,
    MiniBertForSequenceClassification,
    MiniBertForTokenClassification,
    MiniBertModel,
)

N, SEQ, CHOICES = 8, 12, 3
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


# --------------------------------------------------------------------------------------------------------------
# Data: N examples, each a dict of tensors (default_data_collator stacks them)
# --------------------------------------------------------------------------------------------------------------
def _sequences(n=N, seed=0) -> list[dict]:
    lengths = [SEQ - (i % 5) for i in range(n)]  # some rows padded
    batch = make_batch(lengths, seq_len=SEQ, seed=seed)
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def _masked(rows, per_row) -> list[dict]:
    """MLM labels at the first `per_row(i)` real positions after [CLS] of row i (the rest -100)."""
    out = []
    for i, row in enumerate(rows):
        labels = torch.full((SEQ,), -100)
        labels[1 : 1 + per_row(i)] = row["input_ids"][1 : 1 + per_row(i)]
        out.append({**row, "labels": labels})
    return out


def mlm_data():
    return _masked(_sequences(), lambda i: 1 if i < 4 else 5)  # first micro-batch masks 4 tokens, the second 20


def nsp_labels(i):
    return -100 if i in (1, 2, 3) else i % 2  # three of the first micro-batch's four are unlabelled


def nsp_data():
    return [{**row, "labels": torch.tensor(nsp_labels(i))} for i, row in enumerate(_sequences())]


def pretraining_data():
    # Trainer counts only the masked tokens (`labels`): the NSP count is estimated from them, exact when every
    # sequence masks as many tokens (here 3), which is what this test (and the docstring) states.
    rows = _masked(_sequences(), lambda i: 3)
    return [{**row, "next_sentence_label": torch.tensor(i % 2)} for i, row in enumerate(rows)]


def seq_data():
    return [
        {**row, "labels": torch.tensor(nsp_labels(i) if nsp_labels(i) < 0 else i % 3)}
        for i, row in enumerate(_sequences())
    ]


def regression_data():
    return [{**row, "labels": torch.tensor(0.5 * i - 1.0)} for i, row in enumerate(_sequences())]


def multi_label_data():
    return [
        {**row, "labels": torch.tensor([i % 2, i % 3 == 0, 1], dtype=torch.float)} for i, row in enumerate(_sequences())
    ]


def token_data():
    rows = _masked(_sequences(), lambda i: 1 if i < 4 else 6)
    return [
        {**row, "labels": row["labels"].clamp(min=-100).where(row["labels"] < 0, row["labels"] % 3)} for row in rows
    ]


def qa_data():
    return [
        {**row, "start_positions": torch.tensor(1 + i % 3), "end_positions": torch.tensor(2 + i % 3)}
        for i, row in enumerate(_sequences())
    ]


def mc_data():
    rows = _sequences(N * CHOICES)
    out = []
    for i in range(N):
        choices = rows[i * CHOICES : (i + 1) * CHOICES]
        example = {k: torch.stack([c[k] for c in choices]) for k in choices[0]}
        out.append({**example, "labels": torch.tensor(nsp_labels(i) if nsp_labels(i) < 0 else i % CHOICES)})
    return out


HEADS = {
    "masked_lm": (MiniBertForMaskedLM, mlm_data, {}),
    "next_sentence": (MiniBertForNextSentencePrediction, nsp_data, {}),
    "pretraining": (MiniBertForPreTraining, pretraining_data, {}),
    "sequence_classification": (MiniBertForSequenceClassification, seq_data, {"num_labels": 3}),
    "regression": (MiniBertForSequenceClassification, regression_data, {"num_labels": 1}),
    "multi_label": (
        MiniBertForSequenceClassification,
        multi_label_data,
        {"num_labels": 3, "problem_type": "multi_label_classification"},
    ),
    "token_classification": (MiniBertForTokenClassification, token_data, {"num_labels": 3}),
    "question_answering": (MiniBertForQuestionAnswering, qa_data, {"num_labels": 2}),
    "multiple_choice": (MiniBertForMultipleChoice, mc_data, {}),
}


class InOrder(Trainer):
    """The examples in their order, so that both runs see the same examples in each step."""

    def _get_train_sampler(self, *args, **kwargs):
        return SequentialSampler(self.train_dataset)


def train(head: str, tmp_path, batch_size: int, accumulation: int) -> tuple[list[float], dict]:
    cls, data, config = HEADS[head]
    torch.manual_seed(0)
    model = cls(tiny_config(**{**NO_DROPOUT, **config}))
    args = TrainingArguments(
        output_dir=str(tmp_path / f"{head}-{batch_size}x{accumulation}"),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=2,
        learning_rate=1.0,  # plain SGD: the update is the gradient, so a mis-scaled loss shows in the weights
        optim="sgd",
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )
    trainer = InOrder(model=model, args=args, train_dataset=data())
    trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("head", HEADS)
def test_trainer_gradient_accumulation_is_exact(head, tmp_path):
    losses_1, weights_1 = train(head, tmp_path, batch_size=4, accumulation=1)
    losses_2, weights_2 = train(head, tmp_path, batch_size=2, accumulation=2)
    assert len(losses_1) == len(losses_2) == 2
    torch.testing.assert_close(torch.tensor(losses_2), torch.tensor(losses_1), rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    cls, _, config = HEADS[head]
    initial = cls(tiny_config(**{**NO_DROPOUT, **config})).state_dict()
    assert any(not torch.equal(weights_1[k], initial[k]) for k in initial)  # the steps did change the model
    for name, tensor in weights_1.items():
        torch.testing.assert_close(weights_2[name], tensor, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


# --------------------------------------------------------------------------------------------------------------
# The convention itself, per head: two halves with the step's counts sum to the whole batch's loss
# --------------------------------------------------------------------------------------------------------------
def _stack(rows):
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def _count(batch: dict, head: str):
    if head == "question_answering":
        return batch["start_positions"].numel()
    return int((batch["labels"] != -100).sum())


@pytest.mark.parametrize("head", HEADS)
def test_halves_with_the_step_count_sum_to_the_whole(head):
    cls, data, config = HEADS[head]
    torch.manual_seed(0)
    model = cls(tiny_config(**{**NO_DROPOUT, **config})).eval()
    rows = data()
    whole, halves = _stack(rows), [_stack(rows[:3]), _stack(rows[3:])]  # unequal halves
    extra = {}
    if head == "pretraining":  # the loop's exact NSP normaliser
        extra = {"num_sequences_in_batch": len(rows)}
    with torch.no_grad():
        expected = model(**whole).loss
        parts = [model(**h, num_items_in_batch=_count(whole, head), **extra).loss for h in halves]
        alone = model(**whole, num_items_in_batch=_count(whole, head), **extra).loss
    torch.testing.assert_close(sum(parts), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(alone, expected, rtol=1e-5, atol=1e-6)  # one batch: the count changes nothing


def test_pretraining_nsp_parts_with_the_sequence_count():
    """What the pretraining loop passes: MLM over the step's masked tokens, NSP over its sequences, for any split and
    any masks (here: unequal halves, unequal masks per row)."""
    torch.manual_seed(0)
    model = MiniBertForPreTraining(tiny_config(**NO_DROPOUT)).eval()
    rows = [{**r, "next_sentence_label": torch.tensor(i % 2)} for i, r in enumerate(mlm_data())]
    whole = _stack(rows)
    counts = dict(num_items_in_batch=_count(whole, "pretraining"), num_sequences_in_batch=len(rows))
    with torch.no_grad():
        expected = model(**whole)
        parts = [model(**_stack(h), **counts) for h in (rows[:3], rows[3:])]
    for name in ("mlm_loss", "nsp_loss", "loss"):
        torch.testing.assert_close(sum(getattr(p, name) for p in parts), getattr(expected, name), rtol=1e-5, atol=1e-6)
    # Trainer's estimate (no sequence count) weights each half's NSP mean by its masked tokens: not exact here.
    with torch.no_grad():
        estimated = [model(**_stack(h), num_items_in_batch=counts["num_items_in_batch"]) for h in (rows[:3], rows[3:])]
    m = [int((_stack(h)["labels"] != -100).sum()) for h in (rows[:3], rows[3:])]
    nsp_means = [model(**_stack(h)).nsp_loss.detach() for h in (rows[:3], rows[3:])]
    weighted = sum(mean * k / sum(m) for mean, k in zip(nsp_means, m))
    torch.testing.assert_close(sum(e.nsp_loss for e in estimated), weighted, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------------------
# Attention kwargs reach the backend
# --------------------------------------------------------------------------------------------------------------
SEEN: list[dict] = []


def varlen_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """A test backend that, like flash attention's varlen kernel, reads the padding-free kwargs: each packed sequence
    attends only to itself. Records what it was given."""
    SEEN.append({k: v for k, v in kwargs.items() if k.startswith(("cu_seq_lens", "max_length"))})
    cu = kwargs.get("cu_seq_lens_q")
    mask = attention_mask
    if cu is not None:
        total = query.shape[2]
        sequence = torch.searchsorted(cu[1:], torch.arange(total), right=True)  # (T,) which sequence each token is in
        mask = (sequence[:, None] == sequence[None, :])[None, None]  # (1, 1, T, T) block diagonal
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register("test_varlen", varlen_attention)
AttentionMaskInterface.register("test_varlen", sdpa_mask)


def _with_backend(model, name):
    model.config._attn_implementation = name
    return model


@pytest.mark.parametrize(
    "cls",
    [MiniBertModel, MiniBertForMaskedLM, MiniBertForTokenClassification, MiniBertForQuestionAnswering],
    ids=lambda c: c.__name__,
)
def test_padding_free_kwargs_reach_the_attention_backend(cls):
    torch.manual_seed(0)
    model = cls(tiny_config(**NO_DROPOUT)).eval()
    rows = _sequences(4)
    padded = _stack(rows)
    features = [{"input_ids": r["input_ids"][r["attention_mask"].bool()].tolist()} for r in rows]
    flat = DataCollatorWithFlattening(return_flash_attn_kwargs=True, return_position_ids=True)(features)
    flat = {k: torch.as_tensor(v) for k, v in flat.items() if k != "labels"}
    assert flat["input_ids"].shape[0] == 1 and "cu_seq_lens_q" in flat
    flat["token_type_ids"] = padded["token_type_ids"][padded["attention_mask"].bool()][None]
    with torch.no_grad():
        expected = _with_backend(model, "sdpa")(**padded)[0]
        SEEN.clear()
        packed = _with_backend(model, "test_varlen")(**flat)[0]
    assert len(SEEN) == TINY["num_hidden_layers"]  # every layer's attention saw them
    for seen in SEEN:
        assert (
            torch.equal(seen["cu_seq_lens_q"], flat["cu_seq_lens_q"]) and seen["max_length_q"] == flat["max_length_q"]
        )
    torch.testing.assert_close(packed[0], real(expected, padded), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("head", HEADS)
def test_every_head_passes_attention_kwargs_on(head):
    cls, data, config = HEADS[head]
    model = _with_backend(cls(tiny_config(**{**NO_DROPOUT, **config})).eval(), "test_varlen")
    batch = _stack(data()[:2])
    marker = torch.tensor([0, 5])
    SEEN.clear()
    with torch.no_grad():
        model(**{k: v for k, v in batch.items()}, cu_seq_lens_k=marker)
    assert len(SEEN) == TINY["num_hidden_layers"] and all(torch.equal(s["cu_seq_lens_k"], marker) for s in SEEN)
