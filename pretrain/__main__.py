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

import os
import sys
from collections.abc import Sequence
from importlib import resources

from minibert.cli import HubArguments, parse_args, run_cli

from .args import ModelArguments, PretrainingArguments

DEMO_CONFIG = "demo"
# Sentences in the demo corpus's domain (Python's language reference), each with one [MASK].
DEMO_PROMPTS = [
    'The "for" statement is used to iterate over the [MASK] of a sequence.',
    'The "while" statement is used for repeated [MASK] as long as an expression is true.',
    'The return value of a [MASK] is determined by the last "return" statement.',
    "When an [MASK] is not handled at all, the interpreter terminates execution of the program.",
    'A "break" statement executed in the first suite terminates the [MASK].',
]


def shipped_config(name: str) -> str | None:
    """The path of a run config that ships in pretrain/configs (`demo`, `bert-base`, ...), if there is one."""
    path = resources.files("pretrain").joinpath("configs", f"{name}.yaml")
    return str(path) if path.is_file() else None


def parse(argv: Sequence[str] | None):
    from .data import DataArguments

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-") and "." not in argv[0] and shipped_config(argv[0]):
        argv[0] = shipped_config(argv[0])  # `minibert-pretrain bert-base ...`: a shipped config by name
    if _is_demo(argv):  # the demo corpus comes with the demo recipe; flags still override it
        argv = [shipped_config(DEMO_CONFIG), *argv]
    return parse_args(
        [ModelArguments, DataArguments, PretrainingArguments, HubArguments], argv, prog="minibert-pretrain"
    )


def show_fill_mask(output_dir: str, prompts: list[str], top_k: int = 3) -> None:
    """Print the model's top predictions for each prompt, as `pipeline("fill-mask")` gives them."""
    import minibert  # noqa: F401  (registers MiniBERT with the Auto classes)
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

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
    from .train import pretrain, uses_demo_corpus

    model_args, data_args, training_args, hub_args = parse(argv)
    result = pretrain(model_args, data_args, training_args, hub_args)
    prompts = training_args.fill_mask_prompts
    if prompts is None and uses_demo_corpus(data_args):
        prompts = DEMO_PROMPTS
    if result.get("status") == "completed" and not training_args.dry_run and prompts and _is_main_process():
        show_fill_mask(training_args.output_dir, prompts)
    return result


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def main(argv: Sequence[str] | None = None) -> int:
    outcome: dict = {}
    code = run_cli(lambda a: outcome.update(_run(a)), argv)
    if code == 0 and outcome.get("status") == "interrupted":
        return 128 + int(outcome["signal"])
    return code


if __name__ == "__main__":
    sys.exit(main())
