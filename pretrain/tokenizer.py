"""A BERT WordPiece tokenizer: trained on the corpus with `tokenizers`, or loaded from a path or Hub name.

A trained tokenizer is wrapped in transformers' `BertTokenizer` (in transformers v5 the fast, tokenizers-backed
class; `BertTokenizerFast` is the same class), so `save_pretrained` writes a tokenizer_config.json naming
`BertTokenizer` and `AutoTokenizer.from_pretrained(dir)` loads it anywhere, `[CLS] A [SEP] B [SEP]` with
token_type_ids 0/1 included. A bare `TokenizersBackend` would not load elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from itertools import chain

import numpy as np
import pyarrow as pa
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import AutoTokenizer, BertTokenizer, PreTrainedTokenizerBase

from minibert.cli import UserError, one_line
from pretrain.corpus import split_sentences
from pretrain.nsp import list_column

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def train_tokenizer(
    texts: Iterable[str | list[str]] | Callable[[], Iterable[str | list[str]]],
    vocab_size: int = 8192,
    lowercase: bool = True,
    min_frequency: int = 2,
    length: int | None = None,
    limit_alphabet: int = 1000,
    show_progress: bool = True,
) -> BertTokenizer:
    """Train a WordPiece vocabulary on `texts` (strings or batches of strings) and return a BERT tokenizer.

    The pipeline is BERT's: BertNormalizer (clean text, CJK characters split, accents stripped when lowercasing),
    BertPreTokenizer (whitespace and punctuation), WordPiece with `##` continuations, special tokens
    [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4. `limit_alphabet` keeps rare characters (emoji, a stray script)
    from eating the vocabulary; `length` (number of items) only feeds the progress bar.

    `texts` is read twice (pass a list, or a function returning a fresh iterator for a large corpus): once to
    fix the alphabet, once to train. The same corpus gives the same vocabulary in every run, which `tokenizers`
    alone does not promise (huggingface/tokenizers#1794): its trainer numbers the `##c` pieces in hash-map order
    and breaks ties between equally frequent merges by those numbers. Declaring every `##c` up front, in sorted
    order, and choosing the alphabet here (ties broken by character) leaves it nothing to number at random.
    """
    if not callable(texts) and iter(texts) is texts:
        raise TypeError("train_tokenizer reads `texts` twice: pass a list, or a function returning an iterator")
    iterate = texts if callable(texts) else (lambda: texts)
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    counting = tqdm(iterate(), total=length, desc="Counting characters", disable=not show_progress)
    alphabet = _alphabet(counting, normalizer, limit_alphabet)
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    # The same normalizer `BertTokenizer` builds below, so the vocabulary is learnt on the text it will see.
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[*SPECIAL_TOKENS, *(f"##{c}" for c in alphabet)],
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),
        continuing_subword_prefix="##",
        show_progress=show_progress,
    )
    backend.train_from_iterator(iterate(), trainer=trainer, length=length)
    # BertTokenizer(vocab=...) rebuilds normalizer, pre-tokenizer, WordPiece decoder and the
    # `[CLS] $A [SEP] $B [SEP]` template with segment ids around the learnt vocabulary (where the `##c` are plain
    # entries again, not special tokens).
    return BertTokenizer(vocab=backend.get_vocab(), do_lower_case=lowercase)


def _alphabet(texts: Iterable[str | list[str]], normalizer, limit: int) -> list[str]:
    """The `limit` most frequent characters of the normalized text, ties broken by code point; sorted."""
    raw: Counter[str] = Counter()
    for item in texts:
        for text in [item] if isinstance(item, str) else item:
            raw.update(text)
    counts: Counter[str] = Counter()
    for char, count in raw.items():
        for normalized in normalizer.normalize_str(char):
            if not normalized.isspace():
                counts[normalized] += count
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return sorted(char for char, _ in ranked)


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """Load an existing tokenizer (directory or Hub name); it must be fast and have BERT's special tokens."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load tokenizer {name_or_path!r}: {one_line(e)[:500]}") from None
    check_tokenizer(tokenizer, name_or_path)
    return tokenizer


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, name: str = "tokenizer") -> None:
    if not getattr(tokenizer, "is_fast", False) or getattr(tokenizer, "backend_tokenizer", None) is None:
        raise UserError(f"{name} is not a fast (tokenizers-backed) tokenizer; pretraining data needs one")
    missing = [
        role for role in ("cls_token", "sep_token", "mask_token", "pad_token") if getattr(tokenizer, role) is None
    ]
    if missing:
        raise UserError(f"{name} has no {', '.join(missing)}; BERT pretraining needs [CLS], [SEP], [MASK], [PAD]")


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Changes whenever the tokenizer would produce different ids (vocabulary, normalizer, special tokens)."""
    h = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode())
    h.update(
        json.dumps(
            [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id, tokenizer.pad_token_id]
        ).encode()
    )
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------
# Documents -> token-id segments (a batched datasets.map function)
# ----------------------------------------------------------------------------------------------------------


def split_long_line(ids: list[int], max_len: int, piece_len: int, is_continuation: Sequence[bool]) -> list[list[int]]:
    """Cut a line longer than `max_len` tokens into near-equal pieces of at most `piece_len` tokens.

    Pieces of half a sequence (not a whole one) let a long paragraph without sentence ends still give IsNext
    pairs: a piece that alone fills the sequence could only ever get a random B. A cut moves back a few tokens
    to a word start, so a word's `##` pieces stay together.
    """
    if len(ids) <= max_len:
        return [ids]
    size = math.ceil(len(ids) / math.ceil(len(ids) / piece_len))
    pieces, start = [], 0
    while len(ids) - start > size:
        end = start + size
        cut = end
        while cut > start + size // 2 and is_continuation[ids[cut]]:
            cut -= 1
        if is_continuation[ids[cut]]:
            cut = end  # one word longer than half a piece: cut inside it
        pieces.append(ids[start:cut])
        start = cut
    pieces.append(ids[start:])
    return pieces


class DocumentTokenizer:
    """The batched `datasets.map` function: documents (`text`, `presplit`) in, token-id segments out.

    Output per document: `segments` (one list of ids per sentence, overlong lines cut by `split_long_line`),
    `num_lines` (sentences before cutting), `lines_split`, `num_bytes` (UTF-8 size of the text). Documents
    with no tokens at all are dropped (the caller counts them from the row counts).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_seq_length: int):
        self.backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        # A tokenizer loaded from the Hub may carry truncation/padding settings; segments must be whole.
        self.backend.no_truncation()
        self.backend.no_padding()
        self.max_line = max_seq_length - 3
        self.piece_len = max(1, self.max_line // 2)
        vocab = tokenizer.get_vocab()
        is_continuation = [False] * (max(vocab.values()) + 1)
        for token, index in vocab.items():
            is_continuation[index] = token.startswith("##")
        self.is_continuation = is_continuation

    def table(self, batch: dict[str, list]) -> pa.Table:
        """`self(batch)` as one Arrow table (`segments` list<list<int32>>), built from flat arrays: what the cached
        map writes, without `datasets` converting every segment's Python list on its own."""
        out = self(batch)
        segments = [segment for document in out["segments"] for segment in document]
        segment_lengths = np.fromiter(map(len, segments), dtype=np.int64, count=len(segments))
        ids = np.fromiter(chain.from_iterable(segments), dtype=np.int32, count=int(segment_lengths.sum()))
        document_lengths = np.fromiter(map(len, out["segments"]), dtype=np.int64, count=len(out["segments"]))
        return pa.table(
            {
                "segments": list_column(document_lengths, list_column(segment_lengths, ids)),
                "num_lines": pa.array(out["num_lines"], type=pa.int32()),
                "lines_split": pa.array(out["lines_split"], type=pa.int32()),
                "num_bytes": pa.array(out["num_bytes"], type=pa.int64()),
            }
        )

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        texts = batch["text"]
        presplit = batch.get("presplit") or [False] * len(texts)
        doc_lines = [
            text.split("\n") if pre else split_sentences(text) if text else [] for text, pre in zip(texts, presplit)
        ]
        flat = [line for lines in doc_lines for line in lines]
        encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)  # no offsets: faster
        encodings = encode(flat, add_special_tokens=False) if flat else []
        out = {"segments": [], "num_lines": [], "lines_split": [], "num_bytes": []}
        position = 0
        for text, lines in zip(texts, doc_lines):
            segments, lines_split = [], 0
            for encoding in encodings[position : position + len(lines)]:
                ids = encoding.ids
                if len(ids) > self.max_line:
                    lines_split += 1
                    segments.extend(split_long_line(ids, self.max_line, self.piece_len, self.is_continuation))
                elif ids:
                    segments.append(ids)
            position += len(lines)
            if segments:
                out["segments"].append(segments)
                out["num_lines"].append(len(lines))
                out["lines_split"].append(lines_split)
                out["num_bytes"].append(len(text.encode("utf-8")))
        return out
