"""What a pretraining resume must match, derived from the argument dataclasses (pretrain.train.run_settings):
every field not on the commented `RESUMABLE` list is compared, so a new flag is checked by default."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import TINY

from minibert import MiniBertConfig
from minibert.cli import UserError
from pretrain.args import DataArguments, ModelArguments, PretrainingArguments
from pretrain.checkpointing import Progress, check_compatible
from pretrain.train import RESUMABLE, run_settings

GROUPS = (ModelArguments, DataArguments, PretrainingArguments)


def settings(groups, tokenizer) -> dict:
    return run_settings(MiniBertConfig(**TINY), *groups, tokenizer=tokenizer, train_sequences=100, mixed_precision="no")


def another(value):
    """A different value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 0.5
    if isinstance(value, list):
        return [*value, "x"]
    if value is None:
        return 7
    return f"{value}-other"


TEXTS = {"config_overrides": "hidden_dropout_prob=0.2"}  # typed when the arguments are made: another readable value


def progress(settings: dict) -> Progress:
    return Progress(per_device_train_batch_size=8, settings=settings)


def compared_fields():
    return [
        (group, f.name) for group in GROUPS for f in dataclasses.fields(group) if f.init and f.name not in RESUMABLE
    ]


def test_the_allowed_list_names_real_fields_only():
    names = {f.name for group in GROUPS for f in dataclasses.fields(group)}
    assert names >= RESUMABLE, RESUMABLE - names


@pytest.mark.parametrize("group, name", compared_fields(), ids=lambda x: x if isinstance(x, str) else x.__name__)
def test_a_resume_that_changes_a_compared_field_is_refused_naming_it(group, name, wordpiece_tokenizer):
    base = [g() for g in GROUPS]
    saved = settings(base, wordpiece_tokenizer)
    changed = [dataclasses.replace(g, **{name: another(getattr(g, name))}) if type(g) is group else g for g in base]
    with pytest.raises(UserError, match=rf"other settings than this run's: {name} "):
        check_compatible(progress(saved), progress(settings(changed, wordpiece_tokenizer)), "checkpoints/step_4")


@pytest.mark.parametrize("name", sorted(RESUMABLE - {"per_device_train_batch_size", "gradient_accumulation_steps"}))
def test_a_field_on_the_allowed_list_may_change(name, wordpiece_tokenizer):
    base = [g() for g in GROUPS]
    saved = settings(base, wordpiece_tokenizer)
    changed = [
        dataclasses.replace(g, **{name: TEXTS.get(name) or another(getattr(g, name))})
        if name in {f.name for f in dataclasses.fields(g)}
        else g
        for g in base
    ]
    check_compatible(progress(saved), progress(settings(changed, wordpiece_tokenizer)), "checkpoints/step_4")


def test_the_same_file_named_from_elsewhere_is_the_same_input(tmp_path, monkeypatch, wordpiece_tokenizer):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a b c\n")
    absolute = settings(
        [ModelArguments(), DataArguments(train_file=str(corpus)), PretrainingArguments()], wordpiece_tokenizer
    )
    monkeypatch.chdir(tmp_path)
    relative = settings(
        [ModelArguments(), DataArguments(train_file="corpus.txt"), PretrainingArguments()], wordpiece_tokenizer
    )
    check_compatible(progress(absolute), progress(relative), "checkpoints/step_4")
