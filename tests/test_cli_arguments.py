"""What both CLIs' arguments share through `minibert.cli`: one check (and one wording) for the counts that must be
positive."""

import pytest

from finetune import args as finetune_args
from minibert.cli import HubArguments, UserError, parse_args
from pretrain import args as pretrain_args

PRETRAIN = (pretrain_args.ModelArguments, pretrain_args.DataArguments, pretrain_args.PretrainingArguments)
FINETUNE = (finetune_args.ModelArguments, finetune_args.DataArguments, finetune_args.FinetuneArguments, HubArguments)
COUNTS = [
    (PRETRAIN, name)
    for name in (
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "num_train_epochs",
        "checkpoints_total_limit",
        "dupe_factor",
        "min_frequency",
        "streaming_buffer_size",
        "max_eval_samples",
        "pad_to_multiple_of",
    )
] + [
    (FINETUNE, name)
    for name in (
        "per_device_train_batch_size",
        "save_total_limit",
        "max_train_samples",
        "max_train_steps",
        "eval_steps",
    )
]


@pytest.mark.parametrize("types, name", COUNTS, ids=lambda x: x if isinstance(x, str) else "")
@pytest.mark.parametrize("value", [0, -3])
def test_one_wording_for_every_count_of_both_clis(types, name, value):
    with pytest.raises(UserError, match=rf"^--{name} must be a positive integer, not {value}$"):
        parse_args(types, [f"--{name}", str(value)])
