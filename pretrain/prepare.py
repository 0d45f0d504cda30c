"""`minibert-prepare`: build a run's tokenizer and tokenized, paired Arrow cache before training, on all cores.

    minibert-prepare bert-base --train_file 'wiki/*.txt'      # the flags / run config of the minibert-pretrain run
    accelerate launch --config_file ... -m pretrain bert-base --train_file 'wiki/*.txt'   # then: starts in seconds

It reads the same flags and YAML files as `minibert-pretrain` (the data flags decide the cache entries; the
others are accepted and ignored, except --seed, which the pairing depends on, and --model_name_or_path, whose
tokenizer a continued run uses), runs `pretrain.data.prepare_pretraining_data` in this one process with
`--preprocessing_num_workers` defaulting to every core, and prints what it made. A later `minibert-pretrain` with
the same data settings finds every entry in the cache and tokenizes nothing.

Where to run it for a multi-node job: once, on any node, when --data_cache_dir is on a filesystem every node
sees; on every node when each node caches on its own local disk.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from minibert.cli import run_cli
from minibert.runs import usable_cores

logger = logging.getLogger(__name__)


def prepare(argv: Sequence[str] | None = None) -> dict:
    """Prepare the data of a `minibert-pretrain` command line; returns its statistics (data_stats.json's)."""
    import datasets

    from .__main__ import parse
    from .data import prepare as prepare_data

    model_args, data_args, training_args, _ = parse(argv, prog="minibert-prepare")  # the checkpoint's tokenizer too
    if data_args.preprocessing_num_workers is None:
        data_args.preprocessing_num_workers = usable_cores()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("pretrain").setLevel(logging.INFO)
    datasets.utils.logging.set_verbosity_warning()
    data = prepare_data(data_args, seed=training_args.seed)
    print(summary(data.stats, data_args))
    return data.stats


def summary(stats: dict, data_args) -> str:
    """The final report: what was read, made and written, and how fast."""
    from .data import cache_root

    cache = stats.get("cache", {})
    built = [name for name, status in cache.items() if status == "built"]
    seconds = stats.get("seconds", 0.0)
    lines = [f"\nminibert-prepare: {', '.join(f'{k} {v}' for k, v in cache.items())} in {seconds:.1f} s"]

    def row(name: str, value: str) -> None:
        lines.append(f"  {name:<11}{value}")

    if "documents" in stats:
        empty = stats.get("documents_empty", 0)
        row(
            "documents",
            f"{stats['documents']:,}"
            + (f" ({empty:,} empty, left out)" if empty else "")
            + (
                f"; {stats.get('docs_skipped', 0):,} with one sentence (no pairs of their own)"
                if stats.get("docs_skipped")
                else ""
            ),
        )
        row(
            "sentences",
            f"{stats['sentences']:,}"
            + (f" ({stats['lines_split']:,} long lines cut)" if stats.get("lines_split") else ""),
        )
        rate = ""
        if "documents" in built and seconds > 0:
            workers = data_args.preprocessing_num_workers or 1
            rate = f"; {stats['tokens'] / seconds:,.0f} tokens/s on {workers} process(es)"
        row("tokens", f"{stats['tokens']:,} from {_size(stats.get('bytes', 0))} of text{rate}")
    if "instances" in stats:
        row(
            "instances",
            f"{stats['instances']:,} training pairs, fill {stats['fill']:.1%} of "
            f"max_seq_length {data_args.max_seq_length}",
        )
    if stats.get("streaming"):
        row("training", "streamed (--streaming): read, tokenized and paired while training, not cached")
    if "eval_instances" in stats:
        row("validation", f"{stats['eval_instances']:,} pairs")
    row("on disk", f"{_size(stats.get('cache_bytes', 0))} in {cache_root(data_args)}")
    lines.append(
        "minibert-pretrain with the same data arguments (and --seed) now loads this cache instead of tokenizing."
    )
    return "\n".join(lines)


def _size(n: int) -> str:
    return f"{n / 1e3:,.1f} kB" if n < 1e6 else f"{n / 1e6:,.1f} MB"


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(prepare, argv)


if __name__ == "__main__":
    sys.exit(main())
