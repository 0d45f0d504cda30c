"""Named pretraining recipes (`--recipe`): sets of defaults that flags and config files still override.

`bert` is BERT's 2018 recipe, the defaults of `--help` (post-LN, GELU feed-forward, biases, dropout 0.1, MLM 15%
with 80/10/10 + NSP, linear decay over the steps). `fast` combines what the recipes since 2022 found to learn more
per second of compute, each choice with its source. `benchmarks/bench_recipe.py` measures the two side by side at
the same wall-clock budget (and each knob alone, `--ablate`); BENCHMARKS.md has the figures.
"""

from __future__ import annotations

from minibert.cli import UserError

from .args import parse_config_overrides

RECIPES: dict[str, dict] = {
    "bert": {},
    "fast": {
        # Architecture (shipped in the checkpoint's config; loads with remote code, not as a native BERT twin):
        # pre-LayerNorm with a final norm (GPT-2, Cramming: trains stably at higher learning rates), no biases in
        # the linear layers (Cramming, ModernBERT: fewer parameters to update, no quality lost), and no dropout in
        # pretraining (Cramming, MosaicBERT: one pass over the data does not overfit). Not the gated GEGLU
        # feed-forward (`gated_feed_forward=true`, MosaicBERT, ModernBERT): at the same intermediate size it makes
        # each step ~30% slower here, and taking it out of this recipe lowered the held-out loss at the same
        # training time (`bench_recipe.py --ablate remove`, BENCHMARKS.md); the knob stays for larger budgets.
        "config_overrides": "pre_layer_norm=true,attention_bias=false,mlp_bias=false,"
        "hidden_dropout_prob=0,attention_probs_dropout_prob=0",
        # Objective: MLM only (RoBERTa, Liu et al. 2019: NSP does not help; every later anchor drops it) at a
        # masking rate of 30% (Wettig et al. 2023 "Should you mask 15%?"; MosaicBERT, ModernBERT), evaluated at
        # BERT's 15% so that held-out figures compare with the faithful recipe's.
        "next_sentence_prediction": False,
        "mlm_probability": 0.3,
        "eval_mlm_probability": 0.15,
        # Optimisation: a higher peak LR that pre-LN tolerates, RoBERTa's beta2 0.98, a short warmup and a
        # warmup-stable-decay schedule with a 1-sqrt cool-down (Hägele et al. 2024; MiniCPM), gradients clipped
        # at 0.5 (Cramming). With --time_budget the schedule follows wall time (--schedule_by time, Cramming).
        "learning_rate": 1e-3,
        "adam_beta2": 0.98,
        "warmup_ratio": 0.06,
        "lr_scheduler_type": "warmup_stable_decay",
        "lr_decay_ratio": 0.3,
        "lr_decay_type": "1-sqrt",
        "max_grad_norm": 0.5,
    },
}


def recipe_of(argv: list[str], config: dict) -> str:
    """The recipe a command line names (`--recipe X`, `--recipe=X`), else its config file's, else `bert`."""
    name = config.get("recipe") or "bert"
    for i, arg in enumerate(argv):
        if arg == "--recipe" and i + 1 < len(argv):
            name = argv[i + 1]
        elif arg.startswith("--recipe="):
            name = arg.split("=", 1)[1]
    if name not in RECIPES:
        raise UserError(f"--recipe: {name!r} is not one of {', '.join(RECIPES)}")
    return name


def recipe_defaults(name: str, argv: list[str], config: dict) -> dict:
    """The recipe's values for the parser's defaults; a time budget given anywhere makes `fast` schedule by time."""
    defaults = dict(RECIPES[name])
    if name == "fast" and (config.get("time_budget") or any(a.split("=")[0] == "--time_budget" for a in argv)):
        defaults["schedule_by"] = "time"
    return defaults


def merge_config_overrides(recipe: str | None, given: str | None) -> str | None:
    """A user's --config_overrides on top of the recipe's, entry by entry (not instead of them)."""
    if not recipe or given == recipe:
        return given
    merged = {**parse_config_overrides(recipe), **parse_config_overrides(given)}
    return ",".join(f"{k}={v}" for k, v in merged.items())
