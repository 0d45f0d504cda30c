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

With `unpadded=True` (the default) the batch also carries what the model's fast path needs, computed here on the
CPU (in the data-loader workers) so that the model's forward never reads the device: `token_indices`, the flat
positions of the real tokens, and `masked_positions`, those of the labelled ones (see `unpadding_inputs`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase


@dataclass
class DataCollatorForPreTraining:
    """Batch of `input_ids`, `attention_mask`, `token_type_ids`, `labels` and `next_sentence_label` tensors.

    `seed`: masks are drawn from `numpy.random.default_rng([seed, epoch, example_key])`, where the key is the
    example's `example_id` (added by `prepare_pretraining_data`) or, failing that, a hash of its `input_ids`.
    Call `set_epoch` at each epoch for new masks (and with a fixed value for evaluation). With `seed=None`
    each call draws its seed from torch's global RNG (reproducible under `torch.manual_seed`, not resumable).
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

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        ids = [np.asarray(f["input_ids"], dtype=np.int64) for f in features]
        length = max(len(x) for x in ids)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch_size = len(features)
        input_ids = np.full((batch_size, length), self.tokenizer.pad_token_id, dtype=np.int64)
        token_type_ids = np.zeros((batch_size, length), dtype=np.int64)
        attention_mask = np.zeros((batch_size, length), dtype=np.int64)
        labels = np.full((batch_size, length), -100, dtype=np.int64)
        call_seed = self.seed if self.seed is not None else int(torch.randint(0, 2**62, ()).item())
        for row, (feature, example_ids) in enumerate(zip(features, ids)):
            n = len(example_ids)
            if self.seed is None:
                key = row
            else:
                key = feature.get("example_id")
                key = _hash_ids(example_ids) if key is None else int(key)
            # SeedSequence takes non-negative integers only: fold negative seeds and epochs into that range.
            rng = np.random.default_rng([call_seed & _MASK63, self.epoch & _MASK63, key])
            input_ids[row, :n], labels[row, :n] = self.mask_tokens(example_ids, rng)
            if "token_type_ids" in feature:
                token_type_ids[row, :n] = np.asarray(feature["token_type_ids"], dtype=np.int64)
            attention_mask[row, :n] = 1
        batch = {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention_mask),
            "token_type_ids": torch.from_numpy(token_type_ids),
            "labels": torch.from_numpy(labels),
        }
        if self.unpadded:
            batch.update(unpadding_inputs(attention_mask, labels, self.bucket_size))
        if "next_sentence_label" in features[0]:
            batch["next_sentence_label"] = torch.tensor(
                [int(f["next_sentence_label"]) for f in features], dtype=torch.long
            )
        return batch

    def mask_tokens(self, ids: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Masked copy of one example's ids and its labels (-100 where not chosen)."""
        special = self._special[ids]
        if self.whole_word_mask:
            # A word starts at every non-special token that is not a `##` continuation of the token before it
            # (a `##` piece right after [CLS]/[SEP], left by truncation, starts its own word).
            follows_special = np.concatenate(([True], special[:-1]))
            starts = ~special & (~self._continuation[ids] | follows_special)
            word = np.cumsum(starts) - 1
            chosen_words = rng.random(int(starts.sum())) < self.mlm_probability
            chosen = ~special & chosen_words[np.maximum(word, 0)] if chosen_words.size else np.zeros_like(special)
        else:
            chosen = ~special & (rng.random(len(ids)) < self.mlm_probability)
        labels = np.where(chosen, ids, -100)
        draw = rng.random(len(ids))
        to_mask = chosen & (draw < self.mask_replace_prob)
        to_random = chosen & ~to_mask & (draw < self.mask_replace_prob + self.random_replace_prob)
        masked = ids.copy()
        masked[to_mask] = self.tokenizer.mask_token_id
        masked[to_random] = self._random_ids[rng.integers(0, len(self._random_ids), int(to_random.sum()))]
        return masked, labels


_MASK63 = 2**63 - 1


def unpadding_inputs(attention_mask: np.ndarray, labels: np.ndarray, bucket_size: int = 64) -> dict[str, torch.Tensor]:
    """`token_indices` and `masked_positions` for a (B, S) batch: flat positions in B * S of the real tokens and of
    the tokens with a label, each padded with the value B * S up to a multiple of `bucket_size`.

    The model reads the fill value as a scratch row (a zero hidden state with an ignored label). Fixed buckets
    make the shapes repeat from batch to batch, so a compiled model reuses its graphs instead of recompiling.
    """
    fill = attention_mask.size

    def bucketed(positions: np.ndarray) -> torch.Tensor:
        size = max(-(-len(positions) // bucket_size), 1) * bucket_size
        out = np.full(size, fill, dtype=np.int64)
        out[: len(positions)] = positions
        return torch.from_numpy(out)

    return {
        "token_indices": bucketed(np.flatnonzero(attention_mask)),
        "masked_positions": bucketed(np.flatnonzero(labels != -100)),
    }


def _hash_ids(ids: np.ndarray) -> int:
    return int.from_bytes(hashlib.blake2b(ids.tobytes(), digest_size=8).digest(), "little") >> 1
