"""What `pretrain/`, `finetune/` and `minibert-convert` share on the command line.

- `UserError`: an error the user caused (bad file, wrong column, mismatched checkpoint). `run_cli` turns it into
  one line on stderr and exit status 2, never a traceback.
- `parse_args`: `HfArgumentParser` over argument dataclasses; a single `.yaml`/`.json` argument (or
  `--config FILE`) supplies the same keys from a file, and flags given beside it override the file.
- `argument_groups`: the same dataclasses from a library call's keyword options, named and typed as the flags.
"""

from __future__ import annotations

import dataclasses
import difflib
import errno
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from transformers import HfArgumentParser

from .checks import check_bert_export, check_input_path, is_plain_bert
from .errors import UserError


def run_cli(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> int:
    """Run `main(argv)`; turn user errors into one line on stderr and a non-zero exit code. A run that returns
    `{"status": "interrupted", "signal": N}` (stopped by SIGTERM / SIGINT after saving its state) exits 128 + N."""
    try:
        outcome = main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in ENVIRONMENT_ERRORS:
            raise  # a bug: keep its traceback
        where = f"{e.filename}: " if e.filename else ""
        hint = " (the disk is full: free space and rerun)" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        print(f"error: {where}{e.strerror or e}{hint}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise  # a bug: keep its traceback
        detail = " ".join(str(e).split())[:160]
        print(
            f"error: out of memory{f' ({detail})' if detail else ''}: lower the model size, batch size or "
            "sequence length, or free memory",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if isinstance(outcome, dict) and outcome.get("status") == "interrupted":
        return 128 + int(outcome["signal"])
    return 0


# What the machine, not the program, causes: a full disk, a read-only filesystem, a permission, a file in the way.
ENVIRONMENT_ERRORS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
    errno.ENAMETOOLONG,
    errno.EMFILE,
    errno.EIO,
}


def one_line(error: BaseException) -> str:
    """An exception's message on one line (transformers', the Hub's and torch's span several), for `error: ...`."""
    return " ".join(str(error).split()) or type(error).__name__


def _out_of_memory(error: BaseException) -> bool:
    """What sizes too large for the machine raise: MemoryError, torch's OutOfMemoryError, a failed CPU allocation."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error)
    return "can't allocate memory" in text or "CUDA out of memory" in text


def load_config_file(path: str, name: str = "config file") -> dict:
    """The mapping a YAML/JSON file holds (`null` or empty: {}); anything else is a `UserError` naming the file as
    `name` (e.g. the flag that gave it)."""
    check_input_path(path, name)  # missing, a folder, /dev/null or a named pipe: said as such
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise UserError(f"{name} {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise UserError(f"cannot read {name} {path}: {e.strerror or e}") from None
    try:
        if path.endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # yaml.YAMLError / json.JSONDecodeError
        raise UserError(f"cannot parse {name} {path}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{name} {path} must hold a mapping of argument names to values")
    return data


def typed_values(parser: HfArgumentParser, data: dict, where: str) -> dict:
    """A config file's values typed and checked as `parser`'s flags would give them; errors start with `where`
    (e.g. "config file a.yaml").

    `parse_args` sets them as the parser's defaults (not turned back into flags), so that the flags given on the
    command line win and a `null` says "None" (e.g. `checkpoints_total_limit: null`: keep every checkpoint)."""
    # A field's first action: `--lowercase` (typed), not the `--no_lowercase` switch HfArgumentParser adds after it.
    actions = {a.dest: a for a in reversed(parser._actions) if a.dest != "help"}
    out = {}
    for key, value in data.items():
        action = actions.get(key)
        if action is None:
            close = difflib.get_close_matches(key, actions, n=3)
            raise UserError(f"{where}: unknown key {key!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        try:
            out[key] = _typed_value(action, value)
        except (TypeError, ValueError) as e:
            raise UserError(f"{where}: {key}: {e}") from None
        action.required = False  # given by the file
        values = out[key] if isinstance(out[key], list) else [out[key]]
        if action.choices is not None and any(v is not None and v not in action.choices for v in values):
            raise UserError(f"{where}: {key}: {value!r} is not one of {', '.join(map(str, action.choices))}")
    return out


def _typed_value(action, value):
    """`value` as `action`'s flag would give it (YAML reads `1e-3` as a string, a list field wants a list, ...)."""
    if value is None:
        return None
    convert = action.type or (lambda v: v)
    if action.nargs in ("+", "*"):
        return [convert(v) if isinstance(v, str) else v for v in (value if isinstance(value, list) else [value])]
    if action.type is str and isinstance(value, bool):  # YAML's `true`, a library's True: as the flag spells it
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        if action.type is not str:
            raise ValueError(f"expected a single value, got {value!r}")
        return json.dumps(value)
    if action.type in (int, float) and isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if action.type is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, str) or action.type in (int, float, str):
        return convert(value)
    return value


def parse_args(
    dataclass_types: Sequence[type],
    argv: Sequence[str] | None = None,
    prog: str | None = None,
    defaults: Callable[[list[str], dict], dict] | None = None,
):
    """Parse flags (and an optional YAML/JSON config file with the same keys) into the given dataclasses.

    `prog a.yaml --seed 3` and `prog --config a.yaml --seed 3` both read a.yaml, then apply `--seed 3` on top.
    Unknown keys and bad values end in a `UserError` naming them. `defaults(first_pass)`, when given, returns values
    that come before the file's (a named recipe), from the values a first pass over the file and the flags gives:
    flags > file > `defaults` > the dataclasses' defaults.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise UserError("--config needs a file path")
        config_path = argv[i + 1]
        del argv[i : i + 2]
    elif argv and argv[0].endswith((".yaml", ".yml", ".json")) and not argv[0].startswith("-"):
        config_path = argv.pop(0)
    parser = HfArgumentParser(dataclass_types, prog=prog)
    from_file = {}
    if config_path is not None:
        from_file = typed_values(parser, load_config_file(config_path), f"config file {config_path}")
    parser.set_defaults(**from_file)
    if defaults is not None:
        # A first pass over the file and the flags says which defaults apply (the recipe a run names); they go
        # under the file's values, which are set again on top of them.
        first_pass, _ = parser.parse_known_args(argv)
        parser.set_defaults(**typed_values(parser, defaults(vars(first_pass)), "config file (recipe)"))
        parser.set_defaults(**from_file)
    # argparse exits with status 2 and a usage line on bad flags: that is already one clear message.
    outputs = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    *parsed, remaining = outputs
    if remaining:
        raise UserError(f"unrecognized arguments: {' '.join(remaining)}")
    return _validated(parsed)


def argument_groups(types: Sequence[type], options: dict, where: str) -> tuple:
    """Keyword options named as the flags (a library call: `finetune(train_file="t.csv", num_train_epochs=3)`) as
    instances of the argument dataclasses `types`, in their order: each name goes to the group that declares it, each
    value is typed and checked as a config file's (`typed_values`: "3" for an int flag is 3, a value of the flag's
    type is kept), each group is validated as `parse_args` validates the CLI's. An unknown name is a `UserError`
    starting with `where` (e.g. "finetune()") that names the closest flags."""
    values = typed_values(HfArgumentParser(types), options, where)
    return _validated([t(**{f.name: values[f.name] for f in dataclasses.fields(t) if f.name in values}) for t in types])


def _validated(groups: list) -> tuple:
    for group in groups:
        getattr(group, "validate", lambda: None)()
    return tuple(groups)


@dataclass
class HubArguments:
    """What the finished checkpoint becomes besides itself: a native BERT twin, an upload to the Hugging Face Hub
    (shared by pretraining and fine-tuning)."""

    export_bert: str = field(
        default="auto",
        metadata={
            "help": "Also write output_dir/bert/: the same weights as a plain transformers BERT checkpoint "
            "(model_type bert, no remote code), for stacks that forbid remote code and clients that look a model up "
            "by its type (optimum, GLiNER, sentence-transformers' ONNX backend). auto: whenever the model is a plain "
            "BERT (--recipe bert); true: required (a model that is not a BERT is refused before training); false: "
            "never.",
            "choices": ["auto", "true", "false"],
        },
    )

    push_to_hub: bool = field(default=False, metadata={"help": "Upload the output directory to the Hub at the end."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repository name, e.g. `user/my-bert`."})
    hub_token: str | None = field(default=None, metadata={"help": "Token; defaults to the logged-in one."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the repository as private."})

    def check_twin(self, config) -> None:
        """Before training: `--export_bert true` of a model that is not a BERT is refused (one line)."""
        if self.export_bert == "true":
            check_bert_export(config)

    def writes_twin(self, config) -> bool:
        """Whether the finished model gets its plain-BERT twin in output_dir/bert: asked for, or by default (auto)
        whenever transformers' BertModel can hold it."""
        if self.export_bert == "auto":
            return is_plain_bert(config)
        return self.export_bert == "true"

    def validate(self) -> None:
        if self.push_to_hub and not self.hub_model_id:
            raise UserError("--push_to_hub needs --hub_model_id (e.g. `your-name/minibert-small`)")
        if self.hub_model_id:  # checked now, not after hours of training (and the card names it)
            from huggingface_hub.utils import HFValidationError, validate_repo_id

            try:
                validate_repo_id(self.hub_model_id)
            except HFValidationError as e:
                raise UserError(f"--hub_model_id {self.hub_model_id!r} is not a Hub repository id: {e}") from None


def check_positive(arguments, *names: str) -> None:
    """Each named field of `arguments` (an argument dataclass) is unset (None) or a positive integer."""
    for name in names:
        value = getattr(arguments, name)
        if value is not None and value < 1:
            raise UserError(f"--{name} must be a positive integer, not {value}")


def check_report_to(value: str, trainer: bool) -> None:
    """--report_to names trackers the Trainer (`trainer`) or accelerate knows, comma-separated; `all`, `none` too."""
    if trainer:
        from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK as known
    else:
        from accelerate.utils import LoggerType

        known = [t.value for t in LoggerType]
    names = [n.strip() for n in str(value).split(",") if n.strip()]
    unknown = [n for n in names if n not in {*known, "all", "none"}]
    if unknown or not names:
        choices = ", ".join(sorted(k for k in known if k != "all"))
        raise UserError(f"--report_to {value!r}: not a tracker; choose from none, all, {choices}")
