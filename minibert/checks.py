"""What `minibert-pretrain` and `minibert-finetune` check of their inputs before the first training step.

Each check depends only on the flags and on the files they name, so a run that cannot end well is refused at its
start with one `UserError` line, before anything is written: not after a day of training.

- `check_input_path` / `check_input_paths`: a data file (or folder) a flag names is one, not /dev/null, a named
  pipe or a socket (which `os.path.isfile` calls missing, and which would block or read as empty).
- `check_tokenizer_folder`: a local folder used as a tokenizer holds tokenizer files. Without them `AutoTokenizer`
  builds a tokenizer of the special tokens alone from config.json's `tokenizer_class`, and every word becomes [UNK].
- `check_tokenizer_fits`: a loaded tokenizer has a vocabulary, the special tokens the task needs, and a size that
  fits the model's embedding table (neither more tokens than rows, nor far fewer than padding explains).
- `check_float32`: a number given on the command line survives the cast to float32 (the optimizer's dtype).
- `check_bert_export`: `--export_bert` on a model that transformers' BertModel cannot hold.
"""

from __future__ import annotations

import math
import os
import stat

from .configuration_minibert import ARCHITECTURE_FIELDS
from .errors import UserError

# What a saved tokenizer holds besides tokenizer_config.json: any one of these is a vocabulary.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
# A model's embedding table may be padded beyond its tokenizer (to a multiple of 64 or 128, for speed); more rows
# than that means the tokenizer is not the one the model was trained with.
VOCAB_PADDING = 128
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_SMALLEST = 1.401298464324817e-45  # the smallest positive (subnormal) float32; anything below rounds to 0

_SPECIAL_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
)


def check_input_path(path: str, flag: str, *, folders: bool = False, missing_ok: bool = False) -> None:
    """Refuse `path` (given as `flag`) unless it is a regular file (or, with `folders`, a directory).

    `missing_ok`: a missing path is left to the caller (a glob pattern, a Hub id)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if missing_ok:
            return
        raise UserError(f"{flag} {path}: no such file") from None
    except OSError as e:  # a permission on a parent folder, a name too long
        raise UserError(f"{flag} {path} cannot be read ({e.strerror or e})") from None
    if stat.S_ISREG(mode) or (folders and stat.S_ISDIR(mode)):
        return
    if stat.S_ISDIR(mode):
        raise UserError(f"{flag} {path} is a directory; give a data file")
    kind = next((name for test, name in _SPECIAL_KINDS if test(mode)), "not a regular file")
    raise UserError(f"{flag} {path} is {kind}, not a data file")


def check_input_paths(paths: str | list[str] | None, flag: str) -> None:
    """`check_input_path` on each of a flag's existing paths (files or folders; a glob or a missing name is left to
    the reader, which says so): a special file is named as such."""
    for path in [paths] if isinstance(paths, str) else paths or []:
        check_input_path(path, flag, folders=True, missing_ok=True)


def check_tokenizer_folder(path: str, flag: str, advice: str) -> None:
    """A local folder read as a tokenizer must hold tokenizer files (`TOKENIZER_FILES`); a Hub id is not checked
    here (`check_tokenizer_fits` checks what it loads). `advice` ends the message: what the user can do."""
    if not os.path.isdir(path):
        return
    if any(os.path.isfile(os.path.join(path, name)) for name in TOKENIZER_FILES):
        return
    raise UserError(f"{flag} {path} holds no tokenizer (none of {', '.join(TOKENIZER_FILES)}); {advice}")


def check_tokenizer_fits(tokenizer, config, where: str, needs: tuple[str, ...] = ("cls_token", "sep_token")) -> None:
    """Refuse a tokenizer that cannot feed `config`'s model: no vocabulary beyond its special tokens, a special
    token the task needs (`needs`: "cls_token", "sep_token", "pad_token", "mask_token") missing, more tokens than
    embedding rows, or fewer than padding to a multiple of `VOCAB_PADDING` explains. `where`: the model's path."""
    size, rows = len(tokenizer), config.vocab_size
    specials = set(tokenizer.all_special_tokens)
    if size <= len(specials):
        raise UserError(
            f"the tokenizer of {where} holds only its {size} special tokens ({', '.join(sorted(specials))}) and no "
            "vocabulary: every word would be [UNK]; use the tokenizer the model was trained with"
        )
    missing = [role for role in needs if getattr(tokenizer, role, None) is None]
    if missing:
        names = ", ".join(role.removesuffix("_token").upper() for role in missing)
        raise UserError(f"the tokenizer of {where} has no {names} token, which BERT's inputs need")
    if size > rows:
        raise UserError(
            f"the tokenizer of {where} has {size} tokens but the model only {rows} embeddings: use the tokenizer "
            "the model was trained with"
        )
    padded = -(-size // VOCAB_PADDING) * VOCAB_PADDING
    if rows > padded:
        raise UserError(
            f"the model {where} has {rows} token embeddings but its tokenizer only {size} tokens, more than padding "
            f"to a multiple of {VOCAB_PADDING} explains: it is not the tokenizer the model was trained with"
        )


def check_float32(value: float | None, flag: str) -> None:
    """`value` must be a finite number that float32 (the optimizer's dtype) holds: not above ~3.4e38, and a
    non-zero value not so small that it rounds to 0 (an epsilon of 0 divides by zero)."""
    if value is None:
        return
    if not math.isfinite(value):
        raise UserError(f"{flag} must be a finite number, not {value}")
    if abs(value) > FLOAT32_MAX:
        raise UserError(f"{flag} {value:g} does not fit in float32, the training dtype (at most {FLOAT32_MAX:.3g})")
    if value != 0 and abs(value) < FLOAT32_SMALLEST / 2:
        raise UserError(f"{flag} {value:g} rounds to 0 in float32, the training dtype")


def _not_bert(config) -> dict:
    """The architecture fields of `config` (a config, or a config dict) that transformers' BertModel lacks."""
    get = config.get if isinstance(config, dict) else lambda k, d: getattr(config, k, d)
    return {k: get(k, bert) for k, bert in ARCHITECTURE_FIELDS.items() if get(k, bert) != bert}


def is_plain_bert(config) -> bool:
    """Whether transformers' BertModel holds this architecture (a native twin exists)."""
    return not _not_bert(config)


def check_bert_export(
    config, flag: str | None = "--export_bert", advice: str = "drop the flag (the model loads with its remote code)"
) -> None:
    """`flag` asks for a native transformers BERT twin: `config` (a config, or a config dict) must be a BERT's.
    `flag` None: the caller converts without a flag (`minibert.twin`); `advice` ends the message."""
    other = ", ".join(f"{k}={v}" for k, v in _not_bert(config).items())
    if other:
        where = f"{flag}: " if flag else ""
        raise UserError(
            f"{where}this model is not a BERT ({other}): transformers' BertModel has no such layers, so it has no "
            f"native BERT twin; {advice}"
        )
