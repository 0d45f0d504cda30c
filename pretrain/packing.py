"""MLM-only examples (`--next_sentence_prediction false`): consecutive documents' sentences packed in order.

RoBERTa's FULL-SENTENCES layout: `[CLS] tokens [SEP]` runs of up to `max_seq_length` tokens, filled across document
boundaries (a [SEP] where one document ends and the next begins), so short documents still fill their examples;
no A/B split, no random B, no `next_sentence_label`, segment ids 0. Like the NSP pairs (`pretrain.nsp`), a share
`short_seq_prob` of the runs aims at a shorter length, and each dupe draws its own targets.

`SegmentInstanceMap` runs `pack_segments` over a batch of tokenized documents in a batched `datasets.map`, reading
them from the memory-mapped Arrow table as `NSPInstanceMap` does.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from pretrain.nsp import INSTANCE_SCHEMA, NSPInstanceMap, document_rng, list_column, stable_int

# Documents packed together (a [SEP] between them): consecutive documents' sentences fill one run after another.
GROUP_DOCUMENTS = 64


def pack_segments(
    documents: Sequence[Sequence[Sequence[int]]],
    max_seq_length: int,
    short_seq_prob: float,
    rng: random.Random,
    sep_id: int,
) -> list[list[int]]:
    """MLM-only examples: the sentences of consecutive documents packed in order into runs of up to
    `max_seq_length - 2` tokens, a [SEP] where one document ends and the next begins (RoBERTa's FULL-SENTENCES:
    short documents still fill their examples); no A/B split, no random B.

    As in `create_instances_from_document`, a share `short_seq_prob` of the runs aims at a shorter random length
    (fine-tuning sees short inputs too), and each dupe draws its own targets, so dupes split the text differently.
    A sentence longer than the room left starts the next run; one longer than a whole run is cut.
    """
    max_tokens = max_seq_length - 2  # [CLS] ... [SEP]

    def next_target() -> int:
        return rng.randint(2, max_tokens) if rng.random() < short_seq_prob else max_tokens

    runs, current, target = [], [], next_target()
    for d, segments in enumerate(documents):
        for s, segment in enumerate(segments):
            piece = ([sep_id] if d and not s and current else []) + list(segment)[:max_tokens]
            if current and len(current) + len(piece) > target:
                runs.append(current)
                current, target = [], next_target()
                piece = list(segment)[:max_tokens]  # no [SEP] at the start of a run
            current.extend(piece)
    if current:
        runs.append(current[:max_tokens])
    return runs


class SegmentInstanceMap(NSPInstanceMap):
    """The batched `datasets.map` function of an MLM-only run (`--next_sentence_prediction false`): a batch of
    documents in, `[CLS] tokens [SEP]` examples packed across them out (no `next_sentence_label`, segment ids 0),
    as one Arrow table."""

    def __call__(self, batch, indices: list[int]) -> pa.Table:
        arrow = self.arrow_documents()
        ids, lengths, example_ids = [], [], []
        # Packed in fixed groups of documents (k * GROUP_DOCUMENTS ...), each by the call holding its first one
        # (reading the rest from the table if the batch ends first): how `datasets.map` batches and shards the
        # documents (num_proc) cannot change the examples.
        for start in (i for i in indices if i % GROUP_DOCUMENTS == 0):
            documents = [arrow[i] for i in range(start, min(start + GROUP_DOCUMENTS, len(arrow)))]
            for dupe in range(self.dupe_factor):
                rng = document_rng(self.seed, dupe, start)
                for k, run in enumerate(
                    pack_segments(documents, self.max_seq_length, self.short_seq_prob, rng, self.sep_id)
                ):
                    ids.append(self.cls_id)
                    ids.extend(run)
                    ids.append(self.sep_id)
                    lengths.append(len(run) + 2)
                    example_ids.append(stable_int(start, dupe, k))
        lengths = np.asarray(lengths, dtype=np.int64)
        return pa.table(
            [
                list_column(lengths, np.asarray(ids, dtype=np.int32)),
                list_column(lengths, np.zeros(int(lengths.sum()), dtype=np.int8)),
                pa.array(np.asarray(example_ids, dtype=np.int64)),
            ],
            schema=SEGMENT_SCHEMA,
        )


SEGMENT_SCHEMA = pa.schema([field for field in INSTANCE_SCHEMA if field.name != "next_sentence_label"])
