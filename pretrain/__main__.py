"""`minibert-pretrain` / `python -m pretrain` / `accelerate launch [options] -m pretrain`.

    minibert-pretrain                                   # the demo: a tiny BERT on Python's own docs, a few minutes on CPU
    minibert-pretrain --max_train_steps 100             # the demo recipe, changed by flags
    minibert-pretrain bert-base --train_file 'wiki/*.txt'   # a config shipped in pretrain/configs, by name
    minibert-pretrain my_run.yaml --seed 3              # a run config (YAML keys = flag names); flags override it
    minibert-pretrain --train_file 'corpus/*.txt' --model_size mini --max_train_steps 20000 --checkpointing_steps 1000
    accelerate launch --config_file pretrain/accelerate_configs/multi_gpu_8.yaml -m pretrain pretrain/configs/bert-base.yaml

Without a config file, --train_file or --dataset_name the run uses the demo corpus and the demo recipe
(pretrain/configs/demo.yaml) under the flags given; otherwise the defaults of `--help`.

Exit status: 0 when the run completed (also when --time_budget ended it), 2 for a user error (one `error:` line),
128 + signal (143 for SIGTERM, 130 for SIGINT) when a signal stopped it after saving a checkpoint; rerun with
`--resume_from_checkpoint latest` to continue.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib import resources

from minibert.cli import parse_args, run_cli

from .args import GROUPS, with_checkpoint_tokenizer
from .recipes import merge_config_overrides, recipe_defaults

DEMO_CONFIG = "demo"


def shipped_config(name: str) -> str | None:
    """The path of a run config that ships in pretrain/configs (`demo`, `bert-base`, ...), if there is one."""
    path = resources.files("pretrain").joinpath("configs", f"{name}.yaml")
    return str(path) if path.is_file() else None


def parse(argv: Sequence[str] | None, prog: str = "minibert-pretrain"):
    """Flags and run configs as `minibert-pretrain` reads them (`minibert-prepare` reads the same)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-") and "." not in argv[0] and shipped_config(argv[0]):
        argv[0] = shipped_config(argv[0])  # `minibert-pretrain bert-base ...`: a shipped config by name
    if _is_demo(argv):  # the demo corpus comes with the demo recipe; flags still override it
        argv = [shipped_config(DEMO_CONFIG), *argv]
    recipe: dict = {}

    def recipe_values(first_pass: dict) -> dict:  # --recipe: defaults under the file and flags
        recipe.update(recipe_defaults(first_pass))
        return recipe

    model_args, data_args, training_args, hub_args = parse_args(GROUPS, argv, prog=prog, defaults=recipe_values)
    model_args.overrides = merge_config_overrides(recipe.get("config_overrides"), model_args.overrides)
    return model_args, with_checkpoint_tokenizer(model_args, data_args), training_args, hub_args


def show_fill_mask(output_dir: str, prompts: list[str], top_k: int = 3) -> None:
    """Print the model's top predictions for each prompt, as `pipeline("fill-mask")` gives them."""
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    import minibert  # noqa: F401  (registers MiniBERT with the Auto classes)

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # not the list of pretraining-only weights a masked-LM model leaves unused
    try:
        fill = pipeline("fill-mask", model=output_dir, top_k=top_k)
    finally:
        hf_logging.set_verbosity(verbosity)
    print(f"\nfill-mask predictions of {output_dir}:")
    for prompt in prompts:
        guesses = ", ".join(f"{p['token_str']} ({p['score']:.2f})" for p in fill(prompt))
        print(f"  {prompt}\n      -> {guesses}")


def _is_demo(argv: list[str]) -> bool:
    """No config file and no data named: the run is the demo."""
    if argv and not argv[0].startswith("-"):
        return False  # a config file
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    return not given & {"--config", "--train_file", "--dataset_name"}


def _run(argv: Sequence[str] | None) -> dict:
    from .demo import uses_demo_corpus
    from .train import is_main_process, run

    model_args, data_args, training_args, hub_args = parse(argv)
    result = run(model_args, data_args, training_args, hub_args)
    if result.get("status") != "completed" or not is_main_process():
        return result
    _summarize(result, training_args)
    if training_args.dry_run:
        return result
    if training_args.fill_mask_prompts:
        show_fill_mask(training_args.output_dir, training_args.fill_mask_prompts)
    elif uses_demo_corpus(data_args):  # what the demo learnt: baselines, held-out sentences with the true word
        from .data import prepare
        from .demo import report_what_was_learnt

        data = prepare(data_args, seed=training_args.seed)  # the run's cache: read, not rebuilt
        result.update(report_what_was_learnt(training_args.output_dir, data, result))
    return result


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _summarize(result: dict, training_args) -> None:
    """The run's headline numbers, next to chance."""
    if "eval_mlm_accuracy" not in result:
        return
    vocab = result.get("vocab_size")
    chance = f" (chance 1/{vocab} = {1 / vocab:.4f})" if vocab else ""
    print(
        f"\n{result['train_steps']} steps, {result['train_tokens']:,} tokens in {_duration(result['train_runtime'])}: "
        f"held-out MLM accuracy {result['eval_mlm_accuracy']:.3f}{chance}, "
        + (f"NSP accuracy {result['eval_nsp_accuracy']:.3f} (chance 0.5), " if "eval_nsp_accuracy" in result else "")
        + f"perplexity {result['perplexity']:.1f}"
        + ("" if training_args.dry_run else f"; the model is in {training_args.output_dir}")
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
