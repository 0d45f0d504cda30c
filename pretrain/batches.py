"""Examples read in bulk: a batch as flat token ids plus offsets, never one Python dict per example.

`ArrowExamples` wraps a prepared (memory-mapped) `datasets.Dataset` for torch's `DataLoader`: the loader's
fetcher calls `__getitems__(indices)` once per batch, which gathers the rows from the Arrow table in one `take`
and hands the collator an `ExampleBatch` (the Arrow buffers viewed as NumPy arrays). Compared with
`datasets.Dataset.__getitems__`, which builds a dict of Python lists per example, this removes the per-token
Python work from the data-loader workers: the collator then pads and masks the whole batch with NumPy.

`ExampleBatch.from_features` turns the usual list of feature dicts (what transformers' collators take) into the
same layout, so `DataCollatorForPreTraining` has one code path for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import numpy as np
import pyarrow as pa
import torch.utils.data


@dataclass
class ExampleBatch:
    """B examples as flat arrays: example b's tokens are `input_ids[offsets[b]:offsets[b + 1]]`."""

    input_ids: np.ndarray  # (T,) every example's ids, one example after another
    offsets: np.ndarray  # (B + 1,) int64, offsets[0] == 0, offsets[-1] == T
    token_type_ids: np.ndarray | None = None  # (T,), or None: all zeros
    next_sentence_label: np.ndarray | None = None  # (B,), or None: an MLM-only batch
    example_id: np.ndarray | None = None  # (B,), or None: the collator keys the masks on the ids' content

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_features(cls, features: list[dict]) -> ExampleBatch:
        """From a list of feature dicts (`input_ids` and optionally `token_type_ids`, `next_sentence_label`,
        `example_id`), converting each column with one NumPy call rather than one per example."""
        ids = [f["input_ids"] for f in features]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        first = features[0] if features else {}

        def flat(name: str) -> np.ndarray:
            column = [f[name] for f in features]
            if column and not isinstance(column[0], (list, tuple)):  # NumPy arrays or torch tensors
                return np.concatenate([np.asarray(x).reshape(-1) for x in column]).astype(np.int64, copy=False)
            return np.fromiter(chain.from_iterable(column), dtype=np.int64, count=int(offsets[-1]))

        def scalars(name: str) -> np.ndarray | None:
            if name not in first or first[name] is None:
                return None
            return np.array([int(f[name]) for f in features], dtype=np.int64)

        return cls(
            input_ids=flat("input_ids"),
            offsets=offsets,
            token_type_ids=flat("token_type_ids") if "token_type_ids" in first else None,
            next_sentence_label=scalars("next_sentence_label"),
            example_id=scalars("example_id"),
        )

    @classmethod
    def from_arrow(cls, table: pa.Table) -> ExampleBatch:
        """From the rows of a prepared cache (`input_ids` list<int32>, `token_type_ids` list<int8>, ...): the
        list columns' values buffers are viewed, not converted element by element."""
        ids, offsets = _flat_list(table.column("input_ids"))
        names = table.column_names
        token_types = _flat_list(table.column("token_type_ids"))[0] if "token_type_ids" in names else None

        def scalars(name: str) -> np.ndarray | None:
            if name not in names:
                return None
            return table.column(name).to_numpy().astype(np.int64, copy=False)

        return cls(
            input_ids=ids,
            offsets=offsets,
            token_type_ids=token_types,
            next_sentence_label=scalars("next_sentence_label"),
            example_id=scalars("example_id"),
        )


def _flat_list(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets from 0) of a list column: the values its rows span, without a per-row conversion."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(array) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(1, dtype=np.int64)
    offsets = array.offsets.to_numpy().astype(np.int64)  # into `array.values`, which a slice does not cut
    values = array.values.to_numpy()[offsets[0] : offsets[-1]]
    return values, offsets - offsets[0]


class ArrowExamples(torch.utils.data.Dataset):
    """A prepared `datasets.Dataset` for torch's `DataLoader`, read a batch at a time (`__getitems__`).

    Pickles cheaply into data-loader workers (the dataset is memory-mapped files, which pickle as their paths).
    `ds[i]` still gives one example's feature dict, for code that reads examples one by one.
    """

    def __init__(self, dataset):
        self.dataset = dataset
        self._arrow = dataset.with_format("arrow")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.dataset[int(index)]

    def __getitems__(self, indices: list[int]) -> ExampleBatch:
        return ExampleBatch.from_arrow(self._arrow[list(indices)])


def bulk_reader(dataset):
    """`ArrowExamples(dataset)` for a `datasets.Dataset` (what `prepare_pretraining_data` returns); any other
    dataset (a stream, a caller's own) unchanged."""
    import datasets

    return ArrowExamples(dataset) if isinstance(dataset, datasets.Dataset) else dataset
