"""Named pretraining recipes (`--recipe`): shipped defaults files (pretrain/configs/recipes/<name>.yaml) that sit
under a run's config file and flags, read through the same layering as any config file (`minibert.cli.parse_args`).

`bert` is BERT's 2018 recipe, the defaults of `--help`; `fast` combines what the recipes since 2022 found to learn
more per second of compute (its file says why, choice by choice). The recipe a run names is read from one first
pass over its config file and flags (no scanning of argv by hand).
"""

from __future__ import annotations

from importlib import resources

import yaml

from minibert import MiniBertConfig
from minibert.cli import UserError

from .args import typed_config_overrides


def _load_recipes() -> dict[str, dict]:
    folder = resources.files("pretrain").joinpath("configs", "recipes")
    recipes = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            recipes[entry.name.removesuffix(".yaml")] = yaml.safe_load(entry.read_text(encoding="utf-8")) or {}
    return recipes


RECIPES: dict[str, dict] = _load_recipes()


def recipe_defaults(first_pass: dict) -> dict:
    """The values of the recipe a run names (`first_pass`: its flags over its config file over the dataclasses'
    defaults); under `fast`, a time budget makes the schedule follow the time spent (Cramming)."""
    name = first_pass.get("recipe") or "bert"
    if name not in RECIPES:
        raise UserError(f"--recipe: {name!r} is not one of {', '.join(RECIPES)}")
    defaults = dict(RECIPES[name])
    if name == "fast" and first_pass.get("time_budget"):
        defaults["schedule_by"] = "time"
    return defaults


def merge_config_overrides(recipe: str | None, given: dict) -> dict:
    """A user's --config_overrides (typed) on top of the recipe's, entry by entry (not instead of them)."""
    return {**typed_config_overrides(recipe, MiniBertConfig()), **given}
