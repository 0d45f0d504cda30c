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

Several processes (and nodes) read the corpus once between them, not once each: the files are cut into a multiple
of N shards and process r reads only shards r, r + N, ... (`split_for_process`). accelerate would otherwise give
every process the whole stream and keep one micro-batch in N of it (`IterableDatasetShard`): N processes reading
and tokenizing the corpus N times. Each process then saves and restores its own position
(`stream_position_<r>.json`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

from datasets import IterableDataset
from datasets.distributed import split_dataset_by_node
from torch import distributed as dist
from torch.utils.data import IterableDataset as TorchIterableDataset

from minibert.cli import UserError
from minibert.safety import read_json_dict, write_json
from pretrain.corpus import MAX_DOCUMENT_CHARS, is_jsonl, jsonl_record_documents

# A resumed stream re-reads at most one shard: files are cut into byte ranges of this size.
SHARD_BYTES = 16 * 2**20
# With several processes, a corpus smaller than this many shards a process is cut finer, so that the processes'
# shares differ by about one small range (an epoch ends when the first process runs out: `loop.agree_on_epoch_end`).
SHARDS_PER_PROCESS = 8
POSITION_FILE = "stream_position.json"

logger = logging.getLogger(__name__)


def stream_shards(
    files: list[str], shard_bytes: int | None = None, num_processes: int = 1
) -> list[tuple[str, int, int]]:
    """Byte ranges `(path, start, end)` that cut `files` into shards of about `shard_bytes` (by size alone: no
    file is read). Each shard holds the documents whose first line starts in its range (`read_stream_shard`).

    `num_processes` > 1: each process reads only its own shards (`split_for_process`), so their number is made a
    multiple of it (empty ranges at the end of the last file, which hold no document), and a corpus under
    `SHARDS_PER_PROCESS` shards a process is cut into smaller ranges. One process: the cut is by `shard_bytes` only.
    """
    shard_bytes = shard_bytes or SHARD_BYTES
    sizes = [os.path.getsize(path) for path in files]
    if num_processes > 1:
        shard_bytes = max(1, min(shard_bytes, -(-sum(sizes) // (num_processes * SHARDS_PER_PROCESS))))
    shards = []
    for path, size in zip(files, sizes):
        shards += [(path, start, min(start + shard_bytes, size)) for start in range(0, max(size, 1), shard_bytes)]
    if shards:
        shards += [(files[-1], sizes[-1], sizes[-1])] * (-len(shards) % num_processes)
    return shards


def split_for_process(dataset: IterableDataset, num_processes: int, process_index: int) -> IterableDataset:
    """Process `process_index`'s share of a stream of `num_processes`: its shards only (shards r, r + N, ... of
    `datasets.distributed.split_dataset_by_node`), so that the processes read each shard once between them.

    A stream with fewer shards than processes (a Hub dataset of few files) cannot be split so: it is returned
    whole, every process reads all of it and accelerate keeps one batch in N (`ResumableStream`), as a warning
    says."""
    if num_processes == 1:
        return dataset
    if dataset.num_shards >= num_processes:
        return split_dataset_by_node(dataset, rank=process_index, world_size=num_processes, strategy="shards")
    if process_index == 0:
        logger.warning(
            "the streamed dataset has %d shard(s) for %d processes: every process reads all of it (give it at "
            "least as many files as processes to read it once)",
            dataset.num_shards,
            num_processes,
        )
    return dataset


def process_share(dataset) -> tuple[int, int]:
    """`(num_processes, process_index)` of the process whose share `dataset` is (`split_for_process`), or (1, 0)
    for a stream read whole."""
    split = getattr(dataset, "_distributed", None)  # `datasets`' record of `split_dataset_by_node`
    return (split.world_size, split.rank) if split is not None else (1, 0)


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


def round_robin(streams: list) -> Iterator:
    """One item of each stream in turn, until all are exhausted (the held-out side of every process's share)."""
    iterators = [iter(stream) for stream in streams]
    while iterators:
        for iterator in list(iterators):
            item = next(iterator, iterators)
            if item is iterators:
                iterators.remove(iterator)
            else:
                yield item


class ResumableStream(TorchIterableDataset):
    """The streamed training set as a DataLoader reads it (in this process), with positions a checkpoint can
    save: `datasets`' own `state_dict()` after every `record_every` examples read, kept for the last few, since
    the loader reads ahead of what was trained on. `resume` goes back to one through `load_state_dict`: the
    stream restarts in the shard and block of that position, whatever the number of examples before it.

    `record_every` is this process's batch size. A `dataset` that is process r's share of N
    (`split_for_process`) is laid out for the loader accelerate makes of it: with N processes accelerate's
    `IterableDatasetShard` groups N batches and keeps the r-th, so this process's batch is put in slot r and the
    others' slots are filled with `None`, which never leave it. accelerate then neither reads nor keeps anything
    of the other processes' shares, and the global batch stays N x `record_every`. Counts (`state_at`,
    `save_position`) are of this process's own examples.
    """

    KEEP = 256

    def __init__(self, dataset: IterableDataset, record_every: int = 1):
        self.dataset, self.record_every = dataset, record_every
        self.num_processes, self.process_index = process_share(dataset)
        if self.num_processes > 1 and dist.is_initialized() and dist.get_world_size() != self.num_processes:
            raise RuntimeError(
                f"a stream split for {self.num_processes} processes in a group of {dist.get_world_size()}"
            )
        self._states: dict[int, dict] = {}
        self._start = 0

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __iter__(self):
        read, self._start = self._start, 0
        self._states = {}
        batch, slot = self.record_every, self.process_index
        before, after = [None] * (slot * batch), [None] * ((self.num_processes - 1 - slot) * batch)
        for example in self.dataset:
            if read % batch == 0:
                yield from before  # the slots of the processes before this one
            read += 1  # the state `datasets` reports now is the one after this example
            if read % self.record_every == 0:
                self._states[read] = self.dataset.state_dict()
                self._states.pop(read - self.KEEP * self.record_every, None)
            yield example
            if read % batch == 0:
                yield from after

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

    @property
    def position_file(self) -> str:
        """One process: `stream_position.json`; several: each its own, `stream_position_<r>.json`."""
        return POSITION_FILE if self.num_processes == 1 else f"stream_position_{self.process_index}.json"

    def save_position(self, checkpoint_dir: str, epoch: int, examples: int) -> None:
        """Write this process's position into a checkpoint: the one after `examples` examples of `epoch`."""
        position = {"epoch": epoch, **(self.state_at(examples) or {})}
        if self.num_processes > 1:
            position["num_processes"] = self.num_processes
        write_json(os.path.join(checkpoint_dir, self.position_file), position)

    def load_position(self, checkpoint_dir: str, epoch: int, examples: int) -> bool:
        """Go to a checkpoint's saved position if it is the one after `examples` examples of `epoch` (else, e.g.
        a checkpoint written without one, or by another number of processes, False: the caller skips batches
        instead)."""
        position = read_json_dict(os.path.join(checkpoint_dir, self.position_file)) or {}
        if position.get("epoch") != epoch or position.get("examples") != examples:
            return False
        if self.num_processes > 1 and position.get("num_processes") != self.num_processes:
            return False
        return self.resume(position)
