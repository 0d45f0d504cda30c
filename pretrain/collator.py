"""`DataCollatorForPreTraining`: pads NSP instances into a batch and masks them for MLM, anew at every call.

Why not transformers' `DataCollatorForLanguageModeling` as is: it draws every mask of a batch from one global
(or one seeded) stream, so a mask depends on which batch, rank and dataloader worker an example lands in. The
training loop needs a mask that depends only on `(seed, epoch, example)`: then a run resumed from a checkpoint
sees the masks an uninterrupted run sees, two processes with batch B see what one process with batch 2B sees,
and evaluation uses the same masks every time. Its whole-word masking also needs offset mappings and drops
the 80/10/10 rule; here words come from `##` pieces, as in Google's BERT, and 80/10/10 stays.

The argument names and the masking rule are the same as `DataCollatorForLanguageModeling`'s (the tests
compare the two statistically): each maskable token (or word) is chosen with `mlm_probability`; a chosen token
becomes [MASK] with `mask_replace_prob`, a random token with `random_replace_prob`, else stays; labels are the
original ids where chosen and -100 elsewhere. Special tokens and padding are never chosen, and random
replacements are never special tokens.

The random numbers are counter-based, computed for the whole batch at once: token t of an example draws two
64-bit words, outputs 2t and 2t+1 of the splitmix64 sequence (Steele et al., "Fast splittable pseudorandom
number generators", 2014; Java's `SplittableRandom`) started at a key mixed from (seed, epoch, example). No
generator object per example and no Python loop over rows: a few NumPy passes over the batch's tokens. NumPy's
`Philox` would also be counter-based, but it is seeded per stream (one object per example), which is the cost
this design removes.

With `unpadded=True` (the default) the batch also carries what the model's fast path needs, computed here on the
CPU (in the data-loader workers) so that the model's forward never reads the device: `token_indices`, the flat
positions of the real tokens, and `masked_positions`, those of the labelled ones (see `unpadding_inputs`). With
`group_attention=True` also `attention_groups`: the sequences in groups of similar lengths, which the model attends
one group at a time (see `attention_groups`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.utils.data
from transformers import PreTrainedTokenizerBase

from .batches import ExampleBatch


@dataclass
class DataCollatorForPreTraining:
    """Batch of `input_ids`, `attention_mask`, `token_type_ids`, `labels` and `next_sentence_label` tensors.

    Takes a list of feature dicts or an `ExampleBatch` (what `batches.ArrowExamples` reads in bulk).

    `seed`: the masks are a function of `(seed, epoch, example_key, position)`, where the key is the example's
    `example_id` (added by `prepare_pretraining_data`) or, failing that, a hash of its `input_ids`. Call
    `set_epoch` at each epoch for new masks (and with a fixed value for evaluation). With `seed=None` each call
    draws its seed from torch's global RNG (reproducible under `torch.manual_seed`, not resumable).
    """

    tokenizer: PreTrainedTokenizerBase
    mlm_probability: float = 0.15
    whole_word_mask: bool = False
    pad_to_multiple_of: int | None = None
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    seed: int | None = None
    epoch: int = 0
    unpadded: bool = True
    bucket_size: int = 64
    group_attention: bool = False
    # The run's objective (`RunPlan`): True, every example must carry `next_sentence_label`; False, the batch has
    # none (an MLM-only run reading NSP pairs); None (library use), the labels are kept where the examples have them.
    next_sentence_prediction: bool | None = None

    def __post_init__(self):
        if not 0.0 <= self.mlm_probability <= 1.0:
            raise ValueError(f"mlm_probability must be in [0, 1], got {self.mlm_probability}")
        if not (0 <= self.mask_replace_prob <= 1 and 0 <= self.random_replace_prob <= 1) or (
            self.mask_replace_prob + self.random_replace_prob > 1
        ):
            raise ValueError("mask_replace_prob and random_replace_prob must be in [0, 1] and sum to at most 1")
        if self.tokenizer.mask_token_id is None or self.tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs a mask token and a pad token")
        vocab_size = len(self.tokenizer)
        special_ids = [i for i in self.tokenizer.all_special_ids if i is not None and i < vocab_size]
        self._special = np.zeros(vocab_size, dtype=bool)
        self._special[special_ids] = True
        self._random_ids = np.flatnonzero(~self._special)
        self._continuation = np.zeros(vocab_size, dtype=bool)
        if self.whole_word_mask:
            for token, index in self.tokenizer.get_vocab().items():
                if index < vocab_size and token.startswith("##"):
                    self._continuation[index] = True

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __call__(self, features: list[dict] | ExampleBatch) -> dict[str, torch.Tensor]:
        examples = features if isinstance(features, ExampleBatch) else ExampleBatch.from_features(features)
        batch_size, lengths = len(examples), examples.lengths
        length = int(lengths.max()) if batch_size else 0
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        ids = examples.input_ids.astype(np.int64, copy=False)
        if self.seed is None:
            seed, keys = int(torch.randint(0, 2**62, ()).item()), np.arange(batch_size, dtype=np.uint64)
        elif examples.example_id is not None:
            seed, keys = self.seed, examples.example_id.astype(np.uint64)
        else:
            seed, keys = self.seed, _content_keys(ids, examples.offsets)
        masked, labels = self.mask_tokens(ids, examples.offsets, _example_streams(seed, self.epoch, keys))

        # Scatter the flat tokens into the padded (B, S) batch: row-major order puts each example in its row.
        real = np.arange(length) < lengths[:, None]  # (B, S)
        flat_positions = np.flatnonzero(real)  # the real tokens' positions in B * S, in token order
        sizes = {"input_ids": real.size, "attention_mask": real.size, "token_type_ids": real.size, "labels": real.size}
        groups = []
        if self.unpadded:
            sizes["token_indices"] = _bucket(len(flat_positions), self.bucket_size)
            sizes["masked_positions"] = _bucket(int((labels != -100).sum()), self.bucket_size)
            if self.group_attention:
                groups = attention_groups(lengths, sizes["token_indices"])
                sizes.update((f"attention_groups.{i}", g.size) for i, g in enumerate(groups))
        nsp = self.next_sentence_prediction
        if nsp is None:
            nsp = examples.next_sentence_label is not None
        elif nsp and examples.next_sentence_label is None:
            raise ValueError("the objective is masked-LM + next-sentence prediction, but the examples have no labels")
        if nsp:
            sizes["next_sentence_label"] = batch_size
        batch, arrays = _one_buffer(sizes, (batch_size, length))  # 1-D views of the buffer, filled in place
        if groups:
            names = [f"attention_groups.{i}" for i in range(len(groups))]
            for name, group in zip(names, groups):
                arrays[name][...] = group.reshape(-1)
            batch["attention_groups"] = [batch.pop(name).view(group.shape) for name, group in zip(names, groups)]
        arrays["input_ids"].fill(self.tokenizer.pad_token_id)
        arrays["input_ids"][flat_positions] = masked
        arrays["labels"].fill(-100)
        arrays["labels"][flat_positions] = labels
        arrays["attention_mask"][...] = real.reshape(-1)
        arrays["token_type_ids"].fill(0)
        if examples.token_type_ids is not None:
            arrays["token_type_ids"][flat_positions] = examples.token_type_ids
        if self.unpadded:  # what `unpadding_inputs` computes, from the positions known here
            _fill_bucket(arrays["token_indices"], flat_positions, real.size)
            _fill_bucket(arrays["masked_positions"], flat_positions[labels != -100], real.size)
        if nsp:
            arrays["next_sentence_label"][...] = examples.next_sentence_label
        return batch

    def mask_tokens(self, ids: np.ndarray, offsets: np.ndarray, streams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Masked copy of a batch's flat ids (example b: `ids[offsets[b]:offsets[b+1]]`) and its labels (-100
        where not chosen). `streams`: one uint64 key per example (`_example_streams`)."""
        lengths = np.diff(offsets)
        starts = np.repeat(offsets[:-1], lengths)
        position = np.arange(len(ids), dtype=np.int64) - starts  # each token's position in its example
        state = np.repeat(streams, lengths) + (2 * position.astype(np.uint64) + 1) * _GAMMA
        choose = _mix64(state)  # draw 2t: is token t (or the word starting at t) chosen
        replace = _mix64(state + _GAMMA)  # draw 2t+1: high half [MASK] / random / keep, low half which token

        special = self._special[ids]
        choose = choose >> np.uint64(11)  # 53 bits, so that a probability of 1 is a threshold too
        threshold = _fraction_of(53, self.mlm_probability)
        if self.whole_word_mask:
            # A word starts at every non-special token that is not a `##` continuation of the token before it
            # (a `##` piece right after [CLS]/[SEP], left by truncation, starts its own word). Its first token's
            # draw decides the whole word.
            follows_special = np.empty_like(special)
            follows_special[1:] = special[:-1]
            follows_special[position == 0] = True  # a row's first token follows nothing
            word_starts = ~special & (~self._continuation[ids] | follows_special)
            word = np.cumsum(word_starts) - 1  # a special token's value is unused, a word never crosses rows
            chosen_words = choose[word_starts] < threshold
            chosen = ~special & chosen_words[np.maximum(word, 0)] if chosen_words.size else np.zeros_like(special)
        else:
            chosen = ~special & (choose < threshold)
        labels = np.where(chosen, ids, -100)

        high, low = replace >> np.uint64(32), replace & np.uint64(0xFFFFFFFF)
        to_mask = chosen & (high < _fraction_of(32, self.mask_replace_prob))
        to_random = chosen & ~to_mask & (high < _fraction_of(32, self.mask_replace_prob + self.random_replace_prob))
        masked = ids.copy()
        masked[to_mask] = self.tokenizer.mask_token_id
        # A uniform index below n from 32 random bits by multiply-and-shift (Lemire): bias < n / 2**32.
        pick = (low[to_random] * np.uint64(len(self._random_ids))) >> np.uint64(32)
        masked[to_random] = self._random_ids[pick.astype(np.int64)]
        return masked, labels


_GAMMA = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's increment (2**64 / the golden ratio, odd)


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's output function: a bijection of uint64 that scrambles every input bit into every output bit
    (NumPy's uint64 arithmetic wraps, as the algorithm needs)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _example_streams(seed: int, epoch: int, keys: np.ndarray) -> np.ndarray:
    """One splitmix64 starting state per example, from (seed, epoch, its key): chained mixes, so that nearby seeds,
    epochs and keys give unrelated streams. Negative seeds and epochs wrap to uint64 (any integer is valid)."""
    base = _mix64(np.array([seed % 2**64], dtype=np.uint64) + _GAMMA)
    base = _mix64(base ^ np.uint64(epoch % 2**64))
    return _mix64(base ^ _mix64(keys.astype(np.uint64) + _GAMMA))


def _content_keys(ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """A 64-bit key per example from its ids alone (for examples without an `example_id`): a position-weighted
    sum of mixed ids, so that the same ids in another order, or another example's, key other masks."""
    lengths = np.diff(offsets)
    position = np.arange(len(ids), dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    mixed = _mix64(ids.astype(np.uint64) * _GAMMA + position.astype(np.uint64))
    sums = np.add.reduceat(np.append(mixed, np.uint64(0)), offsets[:-1]) if len(lengths) else mixed[:0]
    return np.where(lengths > 0, sums, 0).astype(np.uint64) ^ lengths.astype(np.uint64)


def _fraction_of(bits: int, probability: float) -> np.uint64:
    """The integer a uniform `bits`-bit draw is compared with: P(draw < it) == probability (to 2**-bits)."""
    return np.uint64(round(min(max(probability, 0.0), 1.0) * 2**bits))


def unpadding_inputs(attention_mask: np.ndarray, labels: np.ndarray, bucket_size: int = 64) -> dict[str, torch.Tensor]:
    """`token_indices` and `masked_positions` for a (B, S) batch: flat positions in B * S of the real tokens and of
    the tokens with a label, each padded with the value B * S up to a multiple of `bucket_size`.

    The model reads the fill value as a scratch row (a zero hidden state with an ignored label). Fixed buckets
    make the shapes repeat from batch to batch, so a compiled model reuses its graphs instead of recompiling.
    """
    out = {}
    for name, chosen in (("token_indices", attention_mask), ("masked_positions", labels != -100)):
        positions = np.flatnonzero(chosen)
        out[name] = torch.empty(_bucket(len(positions), bucket_size), dtype=torch.int64)
        _fill_bucket(out[name].numpy(), positions, attention_mask.size)
    return out


# What one more group costs, in (query, key) pairs of attention: a group's fixed work (a dozen small kernels forward
# and backward per layer, ~0.25 ms on a CPU core) is worth about 3,000 pairs (~85 ns each, per layer, at BERT-mini).
GROUP_COST_PAIRS = 4096


def attention_groups(lengths: np.ndarray, rows: int, group_cost: int = GROUP_COST_PAIRS) -> list[np.ndarray]:
    """The batch's sequences in groups of similar lengths, for attention one group at a time.

    Each group is an (n, m) array: n sequences (shortest first), padded to the group's longest, m, and holding rows
    of the packed (T, H) layout (sequence b's token p is row `sum(lengths[:b]) + p`), with `rows` (= T) at padding.
    The grouping minimises sum(n * m**2) + `group_cost` per group, attention's pairs (exact dynamic programme over the
    sorted lengths; B numpy passes). A batch of equal lengths stays one group; on BERT's lengths (90% of rows nearly
    full) the short tenth is split off; on ragged text (half the positions padding) attention's work about halves.
    """
    order = np.argsort(lengths, kind="stable")
    sorted_lengths = lengths[order].astype(np.int64)
    n = len(order)
    best = np.zeros(n + 1, dtype=np.float64)  # best[j]: the cost of grouping the j shortest sequences
    cut = np.zeros(n + 1, dtype=np.int64)  # where the last group of those j starts
    starts = np.arange(n)
    for j in range(1, n + 1):
        costs = best[:j] + (j - starts[:j]) * float(sorted_lengths[j - 1]) ** 2 + group_cost
        cut[j] = int(np.argmin(costs))
        best[j] = costs[cut[j]]
    bounds, j = [], n
    while j > 0:
        bounds.append((cut[j], j))
        j = cut[j]
    first_row = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    groups = []
    for i, j in reversed(bounds):
        members = order[i:j]
        width = int(sorted_lengths[j - 1])
        position = np.arange(width)
        group = first_row[members][:, None] + position  # (n, m)
        group[position >= lengths[members][:, None]] = rows
        groups.append(group)
    return groups


def _bucket(n: int, bucket_size: int) -> int:
    return max(-(-n // bucket_size), 1) * bucket_size


def _fill_bucket(out: np.ndarray, positions: np.ndarray, fill: int) -> None:
    out[: len(positions)] = positions
    out[len(positions) :] = fill


def _one_buffer(sizes: dict[str, int], shape: tuple[int, int]) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """The batch's int64 tensors as views of one buffer, and flat NumPy views of them to fill in place.

    In a data-loader worker a batch crosses to the main process through shared memory, one segment per storage:
    one buffer makes that one segment (and one file descriptor) per batch instead of seven, and it is allocated
    there from the start, as torch's `default_collate` does, so nothing is copied on the way.
    """
    total = sum(sizes.values())
    if torch.utils.data.get_worker_info() is not None:
        buffer = torch.empty(total, dtype=torch.int64).share_memory_()
        flat = buffer.numpy()
    else:  # the same memory, made from the NumPy side (no tensor is read back into NumPy)
        flat = np.empty(total, dtype=np.int64)
        buffer = torch.from_numpy(flat)
    tensors, arrays, start = {}, {}, 0
    for name, size in sizes.items():
        view = buffer[start : start + size]
        tensors[name] = view.view(shape) if size == shape[0] * shape[1] and name not in _FLAT else view
        arrays[name] = flat[start : start + size]
        start += size
    return tensors, arrays


_FLAT = {"token_indices", "masked_positions", "next_sentence_label"}
