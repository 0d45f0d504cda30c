"""Streamed pretraining text: files read in byte-range shards, and a position in the stream a checkpoint can hold.

A streamed corpus is never read whole before training. `stream_shards` cuts every file into byte ranges by its
size alone; `read_stream_shard` reads the documents whose first line starts in one range (BERT text: the tail of a
document that began in the previous range is skipped up to the next blank line, and the range's last document is
read to its end; JSON Lines: whole lines), so that shard k is read without reading shards 0..k-1. `pretrain.data`
turns the shards into a `datasets.IterableDataset`, whose `state_dict()` then names a shard and a position in it.

`ResumableStream` is that dataset as the training loop's DataLoader reads it: it records `datasets`' state after
every `record_every` examples (the loader reads ahead of what was trained on), writes the one a checkpoint needs to
`stream_position.json`, and on resume hands it to `load_state_dict`: the stream restarts in that shard (re-reading
at most one shard and re-pairing one block) instead of replaying everything before it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

from datasets import IterableDataset
from torch.utils.data import IterableDataset as TorchIterableDataset

from minibert.cli import UserError
from minibert.safety import write_json
from pretrain.corpus import MAX_DOCUMENT_CHARS, is_jsonl, jsonl_record_documents

# A resumed stream re-reads at most one shard: files are cut into byte ranges of this size.
SHARD_BYTES = 16 * 2**20
POSITION_FILE = "stream_position.json"


def stream_shards(files: list[str], shard_bytes: int | None = None) -> list[tuple[str, int, int]]:
    """Byte ranges `(path, start, end)` that cut `files` into shards of about `shard_bytes` (by size alone: no
    file is read). Each shard holds the documents whose first line starts in its range (`read_stream_shard`)."""
    shard_bytes = shard_bytes or SHARD_BYTES
    shards = []
    for path in files:
        size = os.path.getsize(path)
        shards += [(path, start, min(start + shard_bytes, size)) for start in range(0, max(size, 1), shard_bytes)]
    return shards


def read_stream_shard(path: str, start: int, end: int, text_column: str = "text") -> Iterator[dict]:
    """`{"text", "presplit"}` per document of `path` whose first line starts at a byte in [start, end).

    A shard is read without reading the ones before it: it seeks to `start`, skips the tail of the document
    that began in the previous range (BERT text: up to the next blank line; JSON Lines: the partial line), and
    reads past `end` to finish its own last document. Errors name the file and the byte offset.
    """
    jsonl = is_jsonl(path)
    with open(path, "rb") as f:
        position = 0
        if start > 0:
            f.seek(start - 1)
            f.readline()  # now at the first line that starts at or after `start`
            position = f.tell()
        previous_blank = start == 0 or jsonl or _line_before_is_blank(f, position)
        f.seek(position)
        lines: list[str] = []
        chars, owned = 0, False
        for raw in iter(f.readline, b""):
            line_start, position = position, position + len(raw)
            if b"\x00" in raw:
                raise UserError(f"{path} looks like a binary file (NUL byte near byte {line_start}), not UTF-8 text")
            try:
                line = raw.decode("utf-8-sig" if line_start == 0 else "utf-8").strip()
            except UnicodeDecodeError:
                raise UserError(
                    f"{path} is not UTF-8 text (near byte {line_start}); convert it first, e.g. "
                    f"`iconv -f latin1 -t utf-8 {os.path.basename(path)}`"
                ) from None
            if jsonl:
                if line_start >= end:
                    return
                if line:
                    yield from jsonl_record_documents(line, f"{path} (byte {line_start})", text_column)
                continue
            if not line:
                if lines:
                    yield {"text": "\n".join(lines), "presplit": True}
                lines, chars, previous_blank = [], 0, True
                continue
            if previous_blank:  # a document starts on this line
                if line_start >= end:
                    return
                owned = True
            previous_blank = False
            if owned:
                lines.append(line)
                chars += len(line) + 1
                if chars > MAX_DOCUMENT_CHARS:  # as corpus.read_documents cuts it
                    yield {"text": "\n".join(lines), "presplit": True}
                    lines, chars = [], 0
        if lines:
            yield {"text": "\n".join(lines), "presplit": True}


def _line_before_is_blank(f, position: int) -> bool:
    window = max(0, position - 65536)
    f.seek(window)
    before = f.read(position - window)[:-1]  # without the newline that ends the line before `position`
    return not before[before.rfind(b"\n") + 1 :].strip()


def read_stream_shards(shards: list[tuple[str, int, int]], text_column: str) -> Iterator[dict]:
    for path, start, end in shards:
        yield from read_stream_shard(path, start, end, text_column)


class ResumableStream(TorchIterableDataset):
    """The streamed training set as a DataLoader reads it (in this process), with positions a checkpoint can
    save: `datasets`' own `state_dict()` after every `record_every` examples read, kept for the last few, since
    the loader reads ahead of what was trained on. `resume` goes back to one through `load_state_dict`: the
    stream restarts in the shard and block of that position, whatever the number of examples before it."""

    KEEP = 256

    def __init__(self, dataset: IterableDataset, record_every: int = 1):
        self.dataset, self.record_every = dataset, record_every
        self._states: dict[int, dict] = {}
        self._start = 0

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __iter__(self):
        read, self._start = self._start, 0
        self._states = {}
        for example in self.dataset:
            read += 1  # the state `datasets` reports now is the one after this example
            if read % self.record_every == 0:
                self._states[read] = self.dataset.state_dict()
                self._states.pop(read - self.KEEP * self.record_every, None)
            yield example

    def state_at(self, examples: int) -> dict | None:
        """The saved position after `examples` examples of the current epoch (None: the epoch's start)."""
        if examples == 0:
            return None
        if examples not in self._states:
            raise RuntimeError(f"no stream position recorded after {examples} examples")
        return {"examples": examples, "state": self._states[examples]}

    def resume(self, position: dict | None) -> bool:
        """Continue the next iteration of the position's epoch from `position`; False if there is none."""
        if not position:
            return False
        self.dataset.load_state_dict(position["state"])
        self._start = position["examples"]
        return True

    def save_position(self, checkpoint_dir: str, epoch: int, examples: int) -> None:
        """Write `stream_position.json` into a checkpoint: the position after `examples` examples of `epoch`."""
        write_json(os.path.join(checkpoint_dir, POSITION_FILE), {"epoch": epoch, **(self.state_at(examples) or {})})

    def load_position(self, checkpoint_dir: str, epoch: int, examples: int) -> bool:
        """Go to a checkpoint's saved position if it is the one after `examples` examples of `epoch` (else, e.g.
        a checkpoint written without one, False: the caller skips batches instead)."""
        try:
            with open(os.path.join(checkpoint_dir, POSITION_FILE), encoding="utf-8") as f:
                position = json.load(f)
        except (OSError, ValueError):
            return False
        if not isinstance(position, dict) or position.get("epoch") != epoch or position.get("examples") != examples:
            return False
        return self.resume(position)
