"""What both CLIs' arguments and the library's keyword calls share through `minibert.cli`: one check (and one
wording) for the counts that must be positive; `argument_groups`, which turns keyword options named as the flags into
the argument groups the flags give (routed, typed and validated as the CLI's)."""

import pytest

from finetune import args as finetune_args
from minibert.cli import HubArguments, UserError, argument_groups, parse_args
from pretrain import args as pretrain_args

PRETRAIN = (pretrain_args.ModelArguments, pretrain_args.DataArguments, pretrain_args.PretrainingArguments)
FINETUNE = finetune_args.GROUPS  # minibert-finetune's groups, as finetune() routes them
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


# ----------------------------------------------------------------------------------------------------------------
# The library's keyword options (`finetune(...)`, `pretrain(...)`, `prepare_pretraining_data(...)`): the same groups
# as the flags give, through `argument_groups`
# ----------------------------------------------------------------------------------------------------------------
def test_each_option_goes_to_the_group_that_declares_it():
    options = dict(model_name_or_path="m", train_file="t.csv", output_dir="o", hub_model_id="me/x", seed=3)
    assert argument_groups(FINETUNE, options, "finetune()") == (
        finetune_args.ModelArguments(model_name_or_path="m"),
        finetune_args.DataArguments(train_file="t.csv"),
        finetune_args.FinetuneArguments(output_dir="o", seed=3),
        HubArguments(hub_model_id="me/x"),
    )
    assert argument_groups(FINETUNE, {}, "finetune()") == tuple(t() for t in FINETUNE)  # nothing given: defaults


def test_options_are_typed_as_their_flags_and_typed_values_are_kept():
    """A config-like source's strings ("3", "1e-3", "false", one path for a list flag) give what the flags give;
    values already of the flag's type give the same."""
    as_text = {"max_train_steps": "3", "learning_rate": "1e-3", "train_file": "a.txt", "lowercase": "false"}
    typed = {"max_train_steps": 3, "learning_rate": 1e-3, "train_file": ["a.txt"], "lowercase": False}
    flags = ["--max_train_steps", "3", "--learning_rate", "1e-3", "--train_file", "a.txt", "--lowercase", "false"]
    from_text = argument_groups(PRETRAIN, as_text, "pretrain()")
    assert from_text == argument_groups(PRETRAIN, typed, "pretrain()") == parse_args(PRETRAIN, flags)
    _, data, training = from_text
    assert type(training.max_train_steps) is int and training.max_train_steps == 3
    assert type(training.learning_rate) is float and data.train_file == ["a.txt"] and data.lowercase is False
    assert argument_groups(FINETUNE, {"export_bert": True}, "finetune()")[3].export_bert == "true"  # as the flag
    with pytest.raises(UserError, match=r"^finetune\(\): export_bert: 'yes' is not one of auto, true, false$"):
        argument_groups(FINETUNE, {"export_bert": "yes"}, "finetune()")
    model, *_ = argument_groups(PRETRAIN, {"config_overrides": "hidden_size=64"}, "pretrain()")
    assert model.overrides == {"hidden_size": 64}


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_train_steps": "three"}, r"^pretrain\(\): max_train_steps: invalid literal"),
        ({"max_train_steps": 2.5}, r"^pretrain\(\): max_train_steps: expected an integer, got 2.5"),
        ({"optimizer": "sgd"}, r"^pretrain\(\): optimizer: 'sgd' is not one of adamw, lamb"),
        ({"per_device_train_batch_size": 0}, r"^--per_device_train_batch_size must be a positive integer, not 0$"),
        ({"train_file": ["a.txt"], "dataset_name": "wiki"}, "give either --train_file or --dataset_name"),
    ],
)
def test_bad_values_are_refused_as_the_cli_refuses_them(options, message):
    with pytest.raises(UserError, match=message):
        argument_groups(PRETRAIN, options, "pretrain()")


def test_an_unknown_option_is_a_user_error_naming_the_closest_flags():
    from finetune.train import finetune
    from pretrain.data import prepare_pretraining_data
    from pretrain.train import pretrain

    with pytest.raises(UserError, match=r"^finetune\(\): unknown key 'trian_file' \(did you mean train_file"):
        finetune(trian_file="t.csv", output_dir="o")
    with pytest.raises(UserError, match=r"^pretrain\(\): unknown key 'max_steps' \(did you mean max_train_steps"):
        pretrain(max_steps=3)
    with pytest.raises(
        UserError, match=r"^prepare_pretraining_data\(\): unknown key 'vocab' \(did you mean vocab_size"
    ):
        prepare_pretraining_data(vocab=100, seed=0)
    with pytest.raises(UserError, match=r"^prepare_pretraining_data\(\): unknown key 'max_train_steps'$"):
        prepare_pretraining_data(max_train_steps=3, seed=0)  # a training flag: not a data option
    with pytest.raises(UserError, match=r"unknown key 'wibble'$"):
        argument_groups(FINETUNE, {"wibble": 1}, "finetune()")
