"""Next-sentence-prediction pairs, made the way Google's `create_pretraining_data.py` makes them.

A document is a list of segments (sentences, as token ids). `create_instances_from_document` packs consecutive
segments up to a target length, cuts the chunk at a random point into A and B, and half of the time replaces B
with a span of a random other document (the unused segments then go back to the document: the loop rewinds).
`truncate_seq_pair` trims the longer side from a random end until the pair fits. Both are pure functions of
their inputs and a `random.Random`.

Three deliberate differences from Google's script:
- the random other document is drawn from the n-1 other documents; Google's ten tries could land on the same
  document and label consecutive text NotNext;
- a chunk always holds two segments or more: a segment that alone reaches the target takes the next one with
  it, and a document's lone last segment (left over after a NotNext put segments back) makes no instance.
  Google pairs a one-segment chunk with a random B unconditionally, which skews the labels toward NotNext
  (45-48% IsNext on typical corpora, about 40% on short documents); here every label is a fair coin. The cost
  is one unused sentence in some documents (other `dupe_factor` passes cut elsewhere). A one-sentence document
  makes no pairs of its own; it still serves as a random B for others;
- the RNG is seeded per document (`document_rng(seed, dupe, index)`), so the data does not depend on how
  `datasets.map` batches or shards the corpus (num_proc 1 and 8 give the same instances).

Like Google, the short target (probability `short_seq_prob`) is drawn once per document: the document's
instances are all packed to it.

`NSPInstanceMap` runs this over a tokenized-document `datasets.Dataset` in a batched `map`; the random other
document is read straight from the memory-mapped Arrow table (`ArrowDocuments`), so memory does not grow with
the corpus. A stream pairs each block of documents within itself with the same `instances` method
(`pretrain.data`'s `_StreamBlocks`). MLM-only examples (no pairs) are packed by `pretrain.packing`.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import pyarrow as pa

IS_NEXT, NOT_NEXT = 0, 1  # transformers' convention for `next_sentence_label`


class Instance(NamedTuple):
    tokens_a: list[int]
    tokens_b: list[int]
    is_random_next: bool


def stable_int(*keys: int | str) -> int:
    """A 63-bit hash of `keys` that is the same in every process and run (Python's `hash()` is salted)."""
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def document_rng(seed: int, dupe: int, document_key: int) -> random.Random:
    return random.Random(stable_int(seed, dupe, document_key))


def truncate_seq_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int, rng: random.Random) -> None:
    """Trim the pair in place to `max_num_tokens`, one token at a time from the longer side.

    The token comes off the front or the back at random, which adds noise: always cutting the end would teach
    the model that a sequence never starts mid-sentence.
    """
    # Google's loop deletes one token at a time from a list (quadratic on long pairs); the same loop over the
    # bounds of each side, with the same draws, then one slice per side, gives the same result.
    a_start, a_end, b_start, b_end = 0, len(tokens_a), 0, len(tokens_b)
    while (a_end - a_start) + (b_end - b_start) > max_num_tokens:
        front = rng.random() < 0.5
        if a_end - a_start > b_end - b_start:
            a_start, a_end = (a_start + 1, a_end) if front else (a_start, a_end - 1)
        else:
            assert b_end > b_start
            b_start, b_end = (b_start + 1, b_end) if front else (b_start, b_end - 1)
    if (a_start, a_end) != (0, len(tokens_a)):
        tokens_a[:] = tokens_a[a_start:a_end]
    if (b_start, b_end) != (0, len(tokens_b)):
        tokens_b[:] = tokens_b[b_start:b_end]


# Longer than this project's other functions on purpose: a port of Google's `create_instances_from_document`
# (create_pretraining_data.py) that keeps its steps, order and variable names, so that the two can be read side by
# side; it departs from Google only where the module docstring says (the random document, two-segment chunks).
def create_instances_from_document(
    documents: Sequence[Sequence[Sequence[int]]],
    document_index: int,
    max_seq_length: int,
    short_seq_prob: float,
    rng: random.Random,
) -> list[Instance]:
    """All NSP instances of `documents[document_index]`; `documents` supplies the random other documents.

    Every instance fits `[CLS] A [SEP] B [SEP]` in `max_seq_length` tokens; B is the true continuation or a
    span of another document with probability 1/2 each.
    """
    if len(documents) < 2:
        raise ValueError("NSP needs at least two documents (a random B comes from another document)")
    document = documents[document_index]
    max_num_tokens = max_seq_length - 3  # [CLS], [SEP], [SEP]

    # Mostly fill the sequence (pretraining compute is spent on full length), sometimes go shorter so the model
    # also sees the short sequences fine-tuning will give it.
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)

    instances: list[Instance] = []
    current_chunk: list[Sequence[int]] = []
    current_length = 0
    num_segments = len(document)
    i = 0
    while i < num_segments:
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        last = i == num_segments - 1
        if last and len(current_chunk) == 1:
            break  # a lone last segment has no B of its own (see the module docstring)
        if last or (current_length >= target_seq_length and len(current_chunk) >= 2):
            # A is the first `a_end` segments of the chunk; B (if it is the true continuation) is the rest.
            a_end = rng.randint(1, len(current_chunk) - 1)
            tokens_a: list[int] = []
            for seg in current_chunk[:a_end]:
                tokens_a.extend(seg)

            if rng.random() < 0.5:
                is_random_next = True
                target_b_length = target_seq_length - len(tokens_a)
                random_document = documents[_random_other_index(len(documents), document_index, rng)]
                random_start = rng.randint(0, len(random_document) - 1)
                tokens_b = []
                for j in range(random_start, len(random_document)):
                    tokens_b.extend(random_document[j])
                    if len(tokens_b) >= target_b_length:
                        break
                # The segments after A were not used: put them back so they start the next chunk.
                i -= len(current_chunk) - a_end
            else:
                is_random_next = False
                tokens_b = []
                for seg in current_chunk[a_end:]:
                    tokens_b.extend(seg)

            truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
            instances.append(Instance(tokens_a, tokens_b, is_random_next))
            current_chunk, current_length = [], 0
        i += 1
    return instances


def _random_other_index(num_documents: int, document_index: int, rng: random.Random) -> int:
    other = rng.randint(0, num_documents - 2)
    return other + 1 if other >= document_index else other


def instance_features(instance: Instance, cls_id: int, sep_id: int) -> dict:
    """`[CLS] A [SEP] B [SEP]`, segment ids 0 for `[CLS] A [SEP]` and 1 for `B [SEP]`, and the NSP label."""
    a, b = instance.tokens_a, instance.tokens_b
    return {
        "input_ids": [cls_id, *a, sep_id, *b, sep_id],
        "token_type_ids": [0] * (len(a) + 2) + [1] * (len(b) + 1),
        "next_sentence_label": NOT_NEXT if instance.is_random_next else IS_NEXT,
    }


# ----------------------------------------------------------------------------------------------------------
# Over a datasets.Dataset (map-style, and a stream's blocks)
# ----------------------------------------------------------------------------------------------------------


class ArrowDocuments(Sequence):
    """Tokenized documents in an Arrow `list<list<int>>` column, read lazily.

    `docs[k][j]` converts only segment j of document k to a Python list: drawing a random B touches a few
    segments of one document, not the whole corpus. The column's buffers are memory-mapped (a dataset loaded
    from disk), so they are never copied into the process.
    """

    def __init__(self, column: pa.ChunkedArray | pa.Array):
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        self._chunks = []
        starts = [0]
        for chunk in chunks:
            if len(chunk) == 0:
                continue
            segments = chunk.values
            self._chunks.append(
                (
                    chunk.offsets.to_numpy(),  # document k's segments: doc_offsets[k] .. doc_offsets[k+1]
                    segments.offsets.to_numpy(),  # segment s's tokens: seg_offsets[s] .. seg_offsets[s+1]
                    segments.values.to_numpy(),
                )
            )
            starts.append(starts[-1] + len(chunk))
        self._starts = np.asarray(starts)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, k: int) -> _ArrowDocument:
        if not 0 <= k < len(self):
            raise IndexError(k)
        c = int(np.searchsorted(self._starts, k, side="right")) - 1
        doc_offsets, seg_offsets, tokens = self._chunks[c]
        local = k - int(self._starts[c])
        return _ArrowDocument(seg_offsets, tokens, int(doc_offsets[local]), int(doc_offsets[local + 1]))


class _ArrowDocument(Sequence):
    """One document, read a segment at a time (a random B needs a few segments of a possibly long document)."""

    __slots__ = ("_seg_offsets", "_tokens", "_start", "_end")

    def __init__(self, seg_offsets: np.ndarray, tokens: np.ndarray, start: int, end: int):
        self._seg_offsets, self._tokens, self._start, self._end = seg_offsets, tokens, start, end

    def __len__(self) -> int:
        return self._end - self._start

    def __getitem__(self, j: int) -> list[int]:
        if not 0 <= j < len(self):
            raise IndexError(j)
        s = self._start + j
        return self._tokens[self._seg_offsets[s] : self._seg_offsets[s + 1]].tolist()

    def tolist(self) -> list[list[int]]:
        """All segments at once: one conversion of the document's tokens, then list slices (much faster)."""
        offsets = self._seg_offsets[self._start : self._end + 1]
        flat = self._tokens[offsets[0] : offsets[-1]].tolist()
        bounds = (offsets - offsets[0]).tolist()
        return [flat[a:b] for a, b in zip(bounds, bounds[1:])]


class _CurrentDocument(Sequence):
    """`documents` with the document being paired read whole: every one of its segments will be used."""

    def __init__(self, documents: Sequence, position: int):
        self.documents, self.position = documents, position
        current = documents[position]
        self.current = current.tolist() if isinstance(current, _ArrowDocument) else current

    def __len__(self) -> int:
        return len(self.documents)

    def __getitem__(self, k: int):
        return self.current if k == self.position else self.documents[k]


class NSPInstanceMap:
    """The batched `datasets.map` function: tokenized documents in, NSP instances out.

    Use on `documents.with_format("arrow")` with `with_indices=True`: the batch itself is not read (each worker
    reads documents from the memory-mapped table of `documents`, which pickles as a file path).
    """

    def __init__(
        self,
        documents,  # datasets.Dataset with a list<list<int>> `segments` column, backed by files on disk
        max_seq_length: int,
        short_seq_prob: float,
        seed: int,
        dupe_factor: int,
        cls_id: int,
        sep_id: int,
        column: str = "segments",
    ):
        self.documents = documents
        self.max_seq_length, self.short_seq_prob = max_seq_length, short_seq_prob
        self.seed, self.dupe_factor = seed, dupe_factor
        self.cls_id, self.sep_id, self.column = cls_id, sep_id, column
        self._docs: ArrowDocuments | None = None

    def __getstate__(self):
        return {**self.__dict__, "_docs": None}

    def arrow_documents(self) -> ArrowDocuments:
        """The documents' memory-mapped column, opened on first use in each worker process."""
        if self._docs is None:
            self._docs = ArrowDocuments(self.documents.data.column(self.column))
        return self._docs

    def __call__(self, batch, indices: list[int]) -> pa.Table:
        documents = self.arrow_documents()
        columns = InstanceColumns(self.cls_id, self.sep_id)
        for index in indices:
            for instance, example_id in self.made(documents, index, index):
                columns.add(instance, example_id)
        return columns.table()

    def made(self, documents: Sequence, position: int, key: int) -> Iterator[tuple[Instance, int]]:
        """(instance, example_id) of every instance of `documents[position]`, for each dupe; `key` seeds its RNG."""
        if len(documents[position]) < 2:
            return  # one segment cannot make an IsNext pair; the document still serves as a random B
        documents = _CurrentDocument(documents, position)
        for dupe in range(self.dupe_factor):
            rng = document_rng(self.seed, dupe, key)
            made = create_instances_from_document(documents, position, self.max_seq_length, self.short_seq_prob, rng)
            for k, instance in enumerate(made):
                yield instance, stable_int(key, dupe, k)

    def instances(self, documents: Sequence, position: int, key: int) -> Iterator[dict]:
        """Features of every instance of `documents[position]` (`instance_features` plus `example_id`)."""
        for instance, example_id in self.made(documents, position, key):
            yield {**instance_features(instance, self.cls_id, self.sep_id), "example_id": example_id}


INSTANCE_SCHEMA = pa.schema(
    [
        ("input_ids", pa.list_(pa.int32())),
        ("token_type_ids", pa.list_(pa.int8())),
        ("next_sentence_label", pa.int8()),
        ("example_id", pa.int64()),
    ]
)


def list_column(lengths: np.ndarray, values: np.ndarray | pa.Array) -> pa.ListArray:
    """An Arrow list column from its rows' lengths and their values laid end to end (no per-row conversion);
    `values` may be a list column itself (a document's segments)."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


class InstanceColumns:
    """Instances gathered as flat columns and returned as one Arrow table (`instance_features`' layout): `datasets`
    would otherwise convert every row's Python lists one by one (a fifth of the preparation time)."""

    def __init__(self, cls_id: int, sep_id: int):
        self.cls_id, self.sep_id = cls_id, sep_id
        self.ids: list[int] = []  # [CLS] A [SEP] B [SEP] of every instance, end to end
        self.a_lengths: list[int] = []
        self.b_lengths: list[int] = []
        self.labels: list[int] = []
        self.example_ids: list[int] = []

    def add(self, instance: Instance, example_id: int) -> None:
        ids = self.ids
        ids.append(self.cls_id)
        ids.extend(instance.tokens_a)
        ids.append(self.sep_id)
        ids.extend(instance.tokens_b)
        ids.append(self.sep_id)
        self.a_lengths.append(len(instance.tokens_a))
        self.b_lengths.append(len(instance.tokens_b))
        self.labels.append(NOT_NEXT if instance.is_random_next else IS_NEXT)
        self.example_ids.append(example_id)

    def table(self) -> pa.Table:
        first = np.asarray(self.a_lengths, dtype=np.int64) + 2  # [CLS] A [SEP]: segment 0
        second = np.asarray(self.b_lengths, dtype=np.int64) + 1  # B [SEP]: segment 1
        n = len(first)
        types = np.repeat(np.tile(np.array([0, 1], dtype=np.int8), n), np.column_stack([first, second]).ravel())
        return pa.table(
            [
                list_column(first + second, np.asarray(self.ids, dtype=np.int32)),
                list_column(first + second, types),
                pa.array(np.asarray(self.labels, dtype=np.int8)),
                pa.array(np.asarray(self.example_ids, dtype=np.int64)),
            ],
            schema=INSTANCE_SCHEMA,
        )
