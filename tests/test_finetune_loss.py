"""The heads' loss under transformers' `Trainer`: with gradient accumulation it is the global mean of one large batch.

The heads honour `num_items_in_batch` (transformers' convention), so the Trainer's step over two accumulated
micro-batches of 2 equals its step over one batch of 4, for sequence classification (single-label, regression,
multi-label) and token classification (a mean over tokens, whose count differs between the micro-batches). The
oracle is the same Trainer without accumulation; plain SGD, so the update is proportional to the gradient.
"""

import pytest
import torch
from conftest import TINY
from datasets import Dataset
from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding, Trainer, TrainingArguments

from minibert import MiniBertConfig, MiniBertForSequenceClassification, MiniBertForTokenClassification


class _Tokenizer:
    """What the collators need of a tokenizer: padding of lists of ids."""

    pad_token_id = 0
    padding_side = "right"
    model_input_names = ["input_ids", "attention_mask"]

    def pad(self, features, padding=True, max_length=None, pad_to_multiple_of=None, return_tensors="pt", **kwargs):
        length = max(len(f["input_ids"]) for f in features)
        out = {"input_ids": [], "attention_mask": []}
        for f in features:
            n = len(f["input_ids"])
            out["input_ids"].append(list(f["input_ids"]) + [0] * (length - n))
            out["attention_mask"].append([1] * n + [0] * (length - n))
        rest = {k: [f[k] for f in features] for k in features[0] if k not in out}
        batch = {k: torch.tensor(v) for k, v in out.items()}
        batch.update({k: torch.tensor(v) for k, v in rest.items()})
        return batch


def _examples(kind: str, n: int = 8) -> Dataset:
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n):
        length = 3 + (i * 5) % 9  # different lengths: the token count differs between micro-batches
        ids = torch.randint(5, 99, (length,), generator=g).tolist()
        if kind == "single_label":
            label = i % 3
        elif kind == "regression":
            label = float(i) / n
        elif kind == "multi_label":
            label = [float((i + j) % 2) for j in range(3)]
        else:  # tokens
            label = [-100] + torch.randint(0, 3, (length - 2,), generator=g).tolist() + [-100]
        rows.append({"input_ids": ids, "labels": label})
    return Dataset.from_list(rows)


def _trained(tmp_path, kind: str, per_device: int, accumulation: int) -> dict:
    num_labels = 1 if kind == "regression" else 3
    problem = {"regression": "regression", "multi_label": "multi_label_classification"}.get(kind)
    config = MiniBertConfig(
        **TINY,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=num_labels,
        problem_type=problem,
    )
    torch.manual_seed(0)
    model = (MiniBertForTokenClassification if kind == "tokens" else MiniBertForSequenceClassification)(config)
    tokenizer = _Tokenizer()
    collator = DataCollatorForTokenClassification(tokenizer) if kind == "tokens" else DataCollatorWithPadding(tokenizer)
    args = TrainingArguments(
        output_dir=str(tmp_path / f"{kind}-{per_device}x{accumulation}"),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=0.5,
        optim="sgd",
        weight_decay=0.0,
        lr_scheduler_type="constant",
        max_grad_norm=1e9,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=0,
        data_seed=0,
        dataloader_drop_last=True,
        logging_strategy="no",
    )
    Trainer(model=model, args=args, train_dataset=_examples(kind), data_collator=collator).train()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind", ["single_label", "regression", "multi_label", "tokens"])
def test_accumulated_micro_batches_take_the_step_of_one_large_batch(tmp_path, kind):
    start = _trained(tmp_path, kind, per_device=4, accumulation=1)
    accumulated = _trained(tmp_path, kind, per_device=2, accumulation=2)
    for name, tensor in start.items():
        torch.testing.assert_close(accumulated[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def test_without_num_items_the_heads_return_the_batch_mean():
    """Called directly (no Trainer), a head's loss is the mean over its own batch, as BERT's are."""
    config = MiniBertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37, num_labels=3
    )
    model = MiniBertForTokenClassification(config).eval()
    ids = torch.randint(5, 99, (2, 6))
    labels = torch.randint(0, 3, (2, 6))
    labels[0, :2] = -100
    out = model(input_ids=ids, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits.reshape(-1, 3), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    summed = model(input_ids=ids, labels=labels, num_items_in_batch=torch.tensor(20))
    torch.testing.assert_close(summed.loss, expected * 10 / 20)
