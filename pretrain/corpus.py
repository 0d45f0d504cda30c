"""Reading a pretraining corpus: where documents come from and how text becomes sentences.

Sources, all turned into documents (one row each, a `text` string):
- BERT-format text (`.txt`, or any file that is not `.jsonl`/`.json`): one sentence per line, a blank line
  between documents, as Google's `create_pretraining_data.py` reads it. The row's `presplit` flag says the
  lines already are the sentences.
- JSON Lines (`.jsonl`, `.json`): one document per record, its text in a column (`text` by default), split
  into sentences by `split_sentences`.
- A `datasets` dataset saved with `save_to_disk`, or any `load_dataset` name: one document per row.

Everything a user can get wrong here (a path that does not exist, a glob that matches nothing, bytes that are
not UTF-8, a record without the text column) ends in a `UserError` that names the file and line.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from minibert.cli import UserError
from minibert.text import split_sentences  # noqa: F401 (part of this module's interface)
from pretrain.cache import file_digest

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".text")
JSONL_SUFFIXES = (".jsonl", ".json")
# A "document" with more text than this (e.g. a whole book with no blank line) is cut into consecutive
# documents, so one row never holds gigabytes and Arrow's 2 GiB string limit is never near.
MAX_DOCUMENT_CHARS = 4_000_000


# ----------------------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------------------


@dataclass
class CorpusSource:
    """Where one split's documents come from: local files, a dataset saved on disk, or a `load_dataset` name."""

    kind: str  # "files" | "disk" | "hub"
    files: list[str] = field(default_factory=list)
    path: str | None = None  # "disk": the directory given to load_from_disk; "hub": the dataset name
    config: str | None = None
    split: str = "train"
    text_column: str = "text"
    optional: bool = False  # a split looked for (a dataset's "validation"), not one the user asked for

    def describe(self) -> str:
        if self.kind == "files":
            head = ", ".join(os.path.basename(f) for f in self.files[:3])
            more = f" and {len(self.files) - 3} more" if len(self.files) > 3 else ""
            return f"{len(self.files)} file(s) ({head}{more})"
        return f"dataset {self.path}" + (f" ({self.config})" if self.config else "") + f" split {self.split}"

    def fingerprint(self) -> str:
        """Changes when any input changes: file paths, sizes, modification times and a hash of a sample of each
        file's bytes (a file replaced by another of the same size and time, as `cp -p` or rsync leave it, is seen);
        the same for a saved dataset's files."""
        h = hashlib.sha256()
        h.update(json.dumps([self.kind, self.path, self.config, self.split, self.text_column]).encode())
        files = [(os.path.abspath(path), path) for path in self.files]  # (the name hashed, the file)
        if self.kind == "disk":
            for root, _, names in sorted(os.walk(self.path)):
                paths = [os.path.join(root, name) for name in sorted(names)]
                files += [(os.path.relpath(path, self.path), path) for path in paths]
        for name, path in files:
            st = os.stat(path)
            h.update(json.dumps([name, st.st_size, st.st_mtime_ns, content_sample(path)]).encode())
        return h.hexdigest()[:16]


def content_sample(path: str) -> str:
    """A hash of the whole file up to 1 MiB, else of 16 evenly spaced 64 KiB pieces (the first and last included):
    a few milliseconds whatever the size, and any change of content but one confined between the pieces shows."""
    return file_digest(path, with_size=False)


def is_saved_dataset(path: str) -> bool:
    """A directory written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    return os.path.isdir(path) and any(
        os.path.isfile(os.path.join(path, name)) for name in ("state.json", "dataset_dict.json")
    )


def resolve_files(patterns: list[str], role: str = "train") -> list[str]:
    """Expand files, directories (recursively: .txt, .text, .jsonl, .json) and globs into a sorted file list.

    Order is the order given, each directory or glob sorted, duplicates dropped: the corpus, and so the data,
    does not depend on the file system's listing order.
    """
    files: list[str] = []
    for given in patterns:
        pattern = os.path.expanduser(given)
        if glob.has_magic(pattern):
            matches = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
            if not matches:
                raise UserError(f"{role} file pattern {given!r} matches no files")
            files += matches
        elif os.path.isdir(pattern):
            found = sorted(
                os.path.join(root, name)
                for root, dirs, names in os.walk(pattern)
                for name in names
                if name.endswith(TEXT_SUFFIXES + JSONL_SUFFIXES)
                and not name.startswith(".")
                and not any(
                    part.startswith(".") for part in os.path.relpath(root, pattern).split(os.sep) if part != "."
                )
            )
            if not found:
                raise UserError(f"{role} directory {given} holds no .txt, .jsonl or .json files")
            files += found
        elif os.path.isfile(pattern):
            files.append(pattern)
        else:
            raise UserError(f"{role} file not found: {given}")
    seen: set[str] = set()
    unique = []
    for f in files:
        key = os.path.abspath(f)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def is_jsonl(path: str) -> bool:
    return path.lower().endswith(JSONL_SUFFIXES)


# ----------------------------------------------------------------------------------------------------------
# Reading documents from files
# ----------------------------------------------------------------------------------------------------------


def read_documents(files: list[str], text_column: str = "text") -> Iterator[dict]:
    """Yield `{"text": str, "presplit": bool}` per document of each file, in order.

    A generator for `Dataset.from_generator` / `IterableDataset.from_generator` (which shard `files` across
    processes), so reading never holds more than one document in memory.
    """
    for path in files:
        if is_jsonl(path):
            yield from _read_jsonl(path, text_column)
        else:
            yield from _read_bert_text(path)


def _text_lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of a text file, which must be strict UTF-8 (a byte-order mark, which some editors write,
    is dropped) without NUL bytes; else a UserError naming the line."""
    lineno = 0
    try:
        with open(path, encoding="utf-8-sig", errors="strict", newline=None) as f:
            for lineno, line in enumerate(f, 1):
                if "\x00" in line:
                    raise UserError(f"{path} looks like a binary file (NUL byte on line {lineno}), not UTF-8 text")
                yield lineno, line
    except UnicodeDecodeError as e:
        byte = e.object[e.start : e.start + 1].hex()
        raise UserError(
            f"{path} is not UTF-8 text (byte 0x{byte} near line {lineno + 1}); convert it first, e.g. "
            f"`iconv -f latin1 -t utf-8 {os.path.basename(path)}`"
        ) from None


def _read_bert_text(path: str) -> Iterator[dict]:
    lines: list[str] = []
    chars = 0
    cut = 0
    for _, line in _text_lines(path):
        line = line.strip()
        if not line:
            if lines:
                yield {"text": "\n".join(lines), "presplit": True}
                lines, chars = [], 0
            continue
        lines.append(line)
        chars += len(line) + 1
        if chars > MAX_DOCUMENT_CHARS:
            cut += 1
            yield {"text": "\n".join(lines), "presplit": True}
            lines, chars = [], 0
    if lines:
        yield {"text": "\n".join(lines), "presplit": True}
    if cut:
        logger.warning(
            "%s: %d document(s) longer than %d characters were cut into consecutive documents (is there a blank "
            "line between documents?)",
            path,
            cut,
            MAX_DOCUMENT_CHARS,
        )


def _read_jsonl(path: str, text_column: str) -> Iterator[dict]:
    for lineno, line in _text_lines(path):
        if line.strip():
            yield from jsonl_record_documents(line, f"{path}:{lineno}", text_column)


def jsonl_record_documents(line: str, where: str, text_column: str) -> Iterator[dict]:
    """The documents of one JSON Lines record: its `text_column` cut into pieces of `MAX_DOCUMENT_CHARS` (none for
    a null text). Each error is a `UserError` that starts with `where` (the file and line, or byte offset)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise UserError(
            f"{where}: not a JSON object ({e.msg}); .jsonl/.json files must hold one JSON object per line"
        ) from None
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object per line, got {type(record).__name__}")
    if text_column not in record:
        fields = ", ".join(sorted(record)[:10]) or "none"
        raise UserError(f"{where}: record has no {text_column!r} field (fields: {fields}); set --dataset_text_column")
    text = record[text_column]
    if text is None:
        return
    if not isinstance(text, str):
        raise UserError(f"{where}: field {text_column!r} is a {type(text).__name__}, not a string")
    for start in range(0, max(len(text), 1), MAX_DOCUMENT_CHARS):
        yield {"text": text[start : start + MAX_DOCUMENT_CHARS], "presplit": False}
