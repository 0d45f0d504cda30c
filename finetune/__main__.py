"""`minibert-finetune` / `python -m finetune` / `accelerate launch -m finetune`: see `finetune.train`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from minibert.cli import run_cli


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 done, 2 a user error (one `error:` line), 128 + signal after SIGTERM / SIGINT (a checkpoint
    was saved: rerun with `--resume_from_checkpoint last`)."""
    from .train import cli_main

    return run_cli(cli_main, argv)


if __name__ == "__main__":
    sys.exit(main())
