"""Pretraining data: raw text -> WordPiece tokenizer -> NSP pairs -> dynamic MLM batches, at corpus scale.

`prepare_pretraining_data(seed=..., train_file=..., ...)` (keywords named as the flags) runs a `DataPipeline`, one
method per step:

1. read       text files / JSON Lines / a saved or named `datasets` dataset -> documents (`corpus.py`);
              no source: the demo corpus built from Python's own documentation (`demo.py`)
2. tokenizer  `--tokenizer_name`, or a WordPiece vocabulary trained on the training documents (`tokenizer.py`)
3. tokenize   sentences -> token ids, overlong lines cut (batched `datasets.map`, `num_proc` workers)
4. pair       validation documents held out, NSP instances made as Google's script makes them (`nsp.py`), or
              MLM-only examples packed from consecutive documents (`packing.py`)

Steps 2-4 are cached as Arrow under `data_cache_dir` (default `$MINIBERT_CACHE` or `~/.cache/minibert`), each
keyed on everything that can change its output (files' paths, sizes and mtimes, the tokenizer, max_seq_length,
seed, ...), so a second run with the same inputs only memory-maps the result, and changing the seed re-pairs
without re-tokenizing. Each entry is written to a work directory and published by a rename when complete, with
a manifest that a hit is checked against (`cache.py`): a failed or interrupted run never leaves a half-written
cache behind, two processes publishing the same entry keep one, and a damaged entry is rebuilt, never trained
on. Masking is not cached: the collator (`collator.py`) draws new masks every epoch. `minibert-prepare`
(`prepare.py`) runs the same pipeline ahead of training; in a launch of several processes or nodes,
`_prepare_distributed` decides who builds and bounds how long the others wait.

With `--streaming`, nothing is written for the training set: documents are read in shards (`streaming.py`),
tokenized and paired on the fly in blocks (`IterableDataset`), and a checkpoint holds the stream's position.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset, Features, IterableDataset, List, Value, load_dataset, load_from_disk
from datasets.exceptions import DatasetGenerationError
from tqdm.auto import tqdm
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from minibert.cli import UserError, argument_groups, one_line
from minibert.safety import disk_full_cause
from pretrain import streaming
from pretrain.args import STREAMING_TOKENIZER_DOCUMENTS, DataArguments  # noqa: F401 (also importable from here)
from pretrain.cache import CacheMiss, DataCache, digest, disk_full_error, read_json, write_json
from pretrain.corpus import CorpusSource, is_saved_dataset, read_documents, resolve_files
from pretrain.demo import build_demo_corpus
from pretrain.nsp import INSTANCE_SCHEMA, NSPInstanceMap, stable_int
from pretrain.packing import SEGMENT_SCHEMA, SegmentInstanceMap
from pretrain.tokenizer import (
    DocumentTokenizer,
    check_tokenizer,
    load_tokenizer,
    tokenizer_fingerprint,
    train_tokenizer,
)

logger = logging.getLogger(__name__)

# Bump when a change to this package changes the data it makes: every cache key includes it.
PIPELINE_VERSION = 2

RAW_FEATURES = Features({"text": Value("string"), "presplit": Value("bool")})
DOCUMENT_FEATURES = Features(
    {
        "segments": List(List(Value("int32"))),
        "num_lines": Value("int32"),
        "lines_split": Value("int32"),
        "num_bytes": Value("int64"),
    }
)
# The examples' columns, as the map functions write them (`nsp.INSTANCE_SCHEMA`, `packing.SEGMENT_SCHEMA`: MLM only)
INSTANCE_FEATURES = Features.from_arrow_schema(INSTANCE_SCHEMA)
SEGMENT_FEATURES = Features.from_arrow_schema(SEGMENT_SCHEMA)
# Documents per map batch. Pairing turns ~100 documents into a few thousand instances held as Python lists
# until written: small batches keep that (and so memory) bounded whatever the corpus size.
TOKENIZE_BATCH_SIZE = 256
PAIR_BATCH_SIZE = 64
STREAMING_EVAL_SAMPLES = 2_000
# A streamed saved dataset is cut into shards of this many rows (files: `streaming.SHARD_BYTES`), so that a
# resumed stream re-reads at most one shard's documents and re-tokenizes one block.
STREAM_SHARD_DOCUMENTS = 20_000
# Preparation speed (MB of text per second) that sizes the process group's timeout: a slow single core
# (bench_data.py measures ~1.6 MB/s per core).
PREPARE_WORST_MB_PER_S = 0.5


@dataclass
class PretrainingData:
    train_dataset: Dataset | IterableDataset
    eval_dataset: Dataset | None
    tokenizer: PreTrainedTokenizerBase
    stats: dict[str, Any]  # data_stats.json: counts, fill, what the cache held


def prepare_pretraining_data(*, seed: int, accelerator=None, **options) -> PretrainingData:
    """Build (or load from cache) the tokenizer and the training and evaluation pairs (the loop builds the
    collator: `pretrain.train.build_collator`).

    `options`: the data flags of `minibert-pretrain` by name (`train_file=["c.txt"], vocab_size=4096`), typed and
    checked as the CLI's (`minibert.cli.argument_groups`); `seed`: the run's --seed, which the pairing depends on.
    `accelerator`, in a multi-process run, decides who builds (see `_prepare_distributed`); without one (or with one
    process) this process builds what the cache lacks. The statistics are `stats` (a pretraining run
    writes them to output_dir/data_stats.json). Raises `UserError` for anything the user can fix (missing or
    non-UTF-8 files, too small a corpus, too large a corpus to prepare inside a multi-process launch).
    """
    (data_args,) = argument_groups([DataArguments], options, "prepare_pretraining_data()")
    return prepare(data_args, seed, accelerator)


def prepare(data_args: DataArguments, seed: int, accelerator=None) -> PretrainingData:
    """`prepare_pretraining_data` on `DataArguments` already parsed (the CLIs' path)."""
    data_args.validate()
    started = time.perf_counter()
    root = cache_root(data_args)
    os.makedirs(root, exist_ok=True)
    # Cheap checks (missing files, empty globs) run in every process, so every rank fails with the same message.
    train_source, eval_source = _resolve_sources(data_args, root)
    if accelerator is not None and accelerator.num_processes > 1:
        pipeline = _prepare_distributed(data_args, seed, train_source, eval_source, root, accelerator)
    else:
        pipeline = DataPipeline(data_args, seed, train_source, eval_source, DataCache(root, data_args.overwrite_cache))
        pipeline.run()
    evaluation, stats = pipeline.eval_dataset, pipeline.stats
    if evaluation is not None and data_args.max_eval_samples and len(evaluation) > data_args.max_eval_samples:
        keep = np.random.default_rng(seed).choice(len(evaluation), data_args.max_eval_samples, replace=False)
        evaluation = evaluation.select(np.sort(keep), keep_in_memory=True)
    stats["seconds"] = round(time.perf_counter() - started, 2)
    _log_stats(stats)
    return PretrainingData(pipeline.train_dataset, evaluation, pipeline.tokenizer, stats)


def _prepare_distributed(args: DataArguments, seed: int, train_source, eval_source, root: str, accelerator):
    """Who prepares the data in a multi-process (multi-node) launch, and how long the others may wait.

    1. Every process looks in the cache (read-only). A complete cache (`minibert-prepare`, an earlier run) is
       loaded at once by all: no barrier, no wait.
    2. Otherwise the corpus must be small enough to prepare while the other processes wait in a barrier (whose
       timeout `preparation_timeout` sized): past `--max_prepare_in_launch_mb` every process stops with the
       same message, to run `minibert-prepare` first.
    3. The global main process prepares (`main_process_first`); then each other node's first process
       (`local_main_process_first`) finds that cache (a shared filesystem) or, on a node-local disk, prepares its
       own copy; then the node's other processes load it. Two nodes publishing the same entry at once on a
       shared cache keep the first: entries are renamed into place whole (`DataCache.publish`).
    `--overwrite_cache` rebuilds on the global main process only.
    """

    def pipeline(cache: DataCache) -> DataPipeline:
        processes = (accelerator.num_processes, accelerator.process_index)  # a stream: this process's share
        return DataPipeline(args, seed, train_source, eval_source, cache, processes)

    if not args.overwrite_cache:
        try:
            return pipeline(DataCache(root, read_only=True)).run()
        except CacheMiss:
            pass
    limit = args.max_prepare_in_launch_mb
    size = None if args.streaming else _source_bytes(train_source)
    if size is not None and size > limit * 1e6:
        raise UserError(
            f"the data is not prepared yet ({train_source.describe()}, {size / 1e6:,.3g} MB, over "
            f"--max_prepare_in_launch_mb {limit:g}): {accelerator.num_processes} processes would wait while one "
            "prepares it; run `minibert-prepare` with the same arguments first (once per node if "
            "--data_cache_dir is on node-local disk), then launch again"
        )
    result = None
    with accelerator.main_process_first():
        if accelerator.is_main_process:
            result = pipeline(DataCache(root, overwrite=args.overwrite_cache)).run()
    with accelerator.local_main_process_first():
        if result is None:
            result = pipeline(DataCache(root)).run()
    return result


def preparation_timeout(args: DataArguments) -> datetime.timedelta:
    """The process group's timeout: long enough for the main process to prepare the largest corpus a launch
    prepares itself (`--max_prepare_in_launch_mb` at a slow `PREPARE_WORST_MB_PER_S`), never under torch's
    default of 30 minutes."""
    seconds = 600 + args.max_prepare_in_launch_mb / PREPARE_WORST_MB_PER_S
    return datetime.timedelta(seconds=max(1800, seconds))


def _source_bytes(source: CorpusSource) -> int | None:
    """Bytes of a source on disk (files, or a saved dataset's Arrow files); None when unknown (the Hub)."""
    if source.kind == "files":
        return sum(os.path.getsize(f) for f in source.files)
    if source.kind == "disk":
        return _tree_bytes(source.path)
    return None


def _tree_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


# ----------------------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------------------


def cache_root(data_args: DataArguments) -> str:
    root = data_args.data_cache_dir or os.environ.get("MINIBERT_CACHE") or os.path.join("~", ".cache", "minibert")
    return os.path.abspath(os.path.expanduser(root))


def _resolve_sources(args: DataArguments, cache_root: str) -> tuple[CorpusSource, CorpusSource | None]:
    column = args.dataset_text_column
    if args.train_file:
        if len(args.train_file) == 1 and is_saved_dataset(args.train_file[0]):
            train = CorpusSource("disk", path=args.train_file[0], text_column=column)
        else:
            train = CorpusSource("files", files=resolve_files(args.train_file, "train"), text_column=column)
    elif args.dataset_name:
        kind = "disk" if is_saved_dataset(args.dataset_name) else "hub"
        train = CorpusSource(kind, path=args.dataset_name, config=args.dataset_config_name, text_column=column)
    else:
        demo = build_demo_corpus(os.path.join(cache_root, "demo"))
        logger.info(
            "No --train_file or --dataset_name: using the demo corpus (Python's documentation and its dependencies' "
            "docstrings), %s",
            demo,
        )
        train = CorpusSource("files", files=[demo], text_column=column)

    evaluation = None
    if args.validation_file:
        if is_saved_dataset(args.validation_file):
            evaluation = CorpusSource("disk", path=args.validation_file, split="validation", text_column=column)
        else:
            evaluation = CorpusSource(
                "files", files=resolve_files([args.validation_file], "validation"), text_column=column
            )
    elif train.kind in ("disk", "hub"):
        evaluation = CorpusSource(
            train.kind, path=train.path, config=train.config, split="validation", text_column=column, optional=True
        )
    return train, evaluation


def _load_source(source: CorpusSource, streaming: bool):
    """The `datasets` dataset behind a "disk" or "hub" source, or None if it has no such (optional) split."""
    try:
        if source.kind == "disk":
            loaded = load_from_disk(source.path)
            if isinstance(loaded, Dataset):
                if source.optional:
                    return None  # a single saved Dataset is the training set; it has no validation split
                return loaded.to_iterable_dataset() if streaming else loaded
            splits = list(loaded)
            if source.split in loaded:
                dataset = loaded[source.split]
            elif len(splits) == 1 and not source.optional:
                dataset = loaded[splits[0]]
            elif source.optional:
                return None
            else:
                raise UserError(f"dataset {source.path} has no {source.split!r} split (splits: {', '.join(splits)})")
            return dataset.to_iterable_dataset() if streaming else dataset
        loaded = load_dataset(source.path, source.config, streaming=streaming)
    except UserError:
        raise
    except Exception as e:  # a missing file, no network, a bad name; datasets' DatasetNotFoundError and friends
        if not isinstance(e, (ValueError, OSError)) and not type(e).__module__.startswith("datasets"):
            raise
        raise UserError(f"cannot load dataset {source.path!r}: {one_line(e)[:500]}") from None
    if source.split not in loaded:
        if source.optional:
            return None
        raise UserError(f"dataset {source.path!r} has no {source.split!r} split (splits: {', '.join(loaded)})")
    return loaded[source.split]


def _text_only(dataset, source: CorpusSource):
    columns = dataset.column_names
    if columns is not None and source.text_column not in columns:
        raise UserError(
            f"{source.describe()} has no column {source.text_column!r} (columns: {', '.join(columns)}); "
            "set --dataset_text_column"
        )
    dataset = dataset.select_columns([source.text_column])
    if source.text_column != "text":
        dataset = dataset.rename_column(source.text_column, "text")
    return dataset


def _user_error_in(error: BaseException) -> UserError | None:
    """`datasets` wraps exceptions raised while generating; find the user's error inside."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return UserError(str(error))
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


# ----------------------------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------------------------


class DataPipeline:
    """One run's data, step by step: read -> tokenizer -> tokenize -> pair (or stream), each step's result loaded
    from the cache or built in a work directory and published there whole.

    `run()` fills `tokenizer`, `train_dataset`, `eval_dataset` and `stats` (with `stats["cache"]`: "hit",
    "built" or "given" per step). `minibert-prepare` and `minibert-pretrain` both run it through
    `prepare_pretraining_data`. `processes`: `(num_processes, process_index)` of the launch; a streamed
    training set is this process's share of the corpus (`instance_stream`).
    """

    def __init__(
        self,
        args: DataArguments,
        seed: int,
        train_source: CorpusSource,
        eval_source: CorpusSource | None,
        cache: DataCache,
        processes: tuple[int, int] = (1, 0),
    ):
        self.args, self.seed, self.cache = args, seed, cache
        self.num_processes, self.process_index = processes
        self.train_source, self.eval_source = train_source, eval_source
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.train_dataset: Dataset | IterableDataset | None = None
        self.eval_dataset: Dataset | None = None
        self.stats: dict[str, Any] = {}
        self.status: dict[str, str] = {}
        self._loaded: dict[tuple, Any] = {}  # datasets loaded by name, once per run
        self._raw: dict[str, Dataset] = {}
        self._work: str | None = None

    def run(self) -> DataPipeline:
        try:
            with self.cache.workdir() as self._work:
                self.tokenizer = self.build_tokenizer()
                if self.args.streaming:
                    self.stream()
                else:
                    self.pair()
        except Exception as e:  # the work directory is gone; published entries are untouched
            full = disk_full_cause(e)
            if full is None:
                raise
            raise disk_full_error(self.cache.root, full, _source_bytes(self.train_source)) from None
        self.stats["cache"] = self.status
        self.stats["cache_bytes"] = sum(_tree_bytes(path) for path in self.cache.used)
        return self

    # ---- read ---------------------------------------------------------------------------------------------
    def load(self, source: CorpusSource, streaming: bool = False):
        """The `datasets` dataset behind a "disk" or "hub" source (None: an optional split it lacks)."""
        key = (source.kind, source.path, source.config, source.split, streaming)
        if key not in self._loaded:
            self._loaded[key] = _load_source(source, streaming)
        return self._loaded[key]

    def source_key(self, source: CorpusSource) -> str:
        """The source's fingerprint; for a Hub dataset also the fingerprint `datasets` gives the version loaded."""
        dataset = self.load(source) if source.kind == "hub" else None
        if dataset is not None and getattr(dataset, "_fingerprint", None):
            return digest(source.fingerprint(), dataset._fingerprint)
        return source.fingerprint()

    def has_split(self, source: CorpusSource | None) -> bool:
        return source is not None and (source.kind == "files" or self.load(source) is not None)

    def read(self, source: CorpusSource, key: str) -> Dataset:
        """The documents of a source as a `text`/`presplit` Dataset, built at most once per run."""
        if key in self._raw:
            return self._raw[key]
        if source.kind != "files":
            self._raw[key] = _text_only(self.load(source), source)
            return self._raw[key]
        num_proc = min(self.args.preprocessing_num_workers or 1, len(source.files))
        try:
            self._raw[key] = Dataset.from_generator(
                read_documents,
                features=RAW_FEATURES,
                gen_kwargs={"files": source.files, "text_column": source.text_column},
                cache_dir=os.path.join(self._work, f"raw-{key}"),
                num_proc=num_proc if num_proc > 1 else None,
                fingerprint=f"raw-{key}",
            )
        except DatasetGenerationError as e:
            raise (_user_error_in(e) or e) from None
        except ValueError as e:
            if "corresponds to no data" not in str(e):
                raise
            self._raw[key] = Dataset.from_dict({"text": [], "presplit": []}, features=RAW_FEATURES)  # nothing read
        return self._raw[key]

    def iter_texts(self, source: CorpusSource) -> Iterator[dict]:
        """Documents of a source one at a time, without writing anything (streaming)."""
        if source.kind == "files":
            yield from read_documents(source.files, source.text_column)
            return
        for row in _text_only(self.load(source, streaming=True), source):
            if row["text"]:
                yield {"text": row["text"], "presplit": False}

    # ---- tokenizer ----------------------------------------------------------------------------------------
    def build_tokenizer(self) -> PreTrainedTokenizerBase:
        args, source, cache = self.args, self.train_source, self.cache
        if args.tokenizer_name:
            self.status["tokenizer"] = "given"
            return load_tokenizer(args.tokenizer_name)
        limit = args.tokenizer_train_documents or (STREAMING_TOKENIZER_DOCUMENTS if args.streaming else None)
        source_key = source.fingerprint() if args.streaming else self.source_key(source)
        key = digest(
            "tokenizer",
            PIPELINE_VERSION,
            source_key,
            args.vocab_size,
            args.lowercase,
            args.min_frequency,
            args.dataset_text_column,
            limit,
        )
        if cache.has("tokenizer", key):
            path = cache.path("tokenizer", key)
            tokenizer = cache.read(path, AutoTokenizer.from_pretrained, path)
            check_tokenizer(tokenizer, "cached tokenizer")
            self.status["tokenizer"] = "hit"
            return tokenizer

        # Functions, not iterators: the trainer reads the texts twice.
        if args.streaming:
            texts, length = (lambda: (d["text"] for _, d in zip(range(limit), self.iter_texts(source)))), None
        else:
            documents = self.read(source, source_key)
            if len(documents) == 0:
                raise UserError(f"the corpus is empty: no text in {source.describe()}")
            end = len(documents) if limit is None else min(limit, len(documents))
            texts, length = (lambda: _batched_texts(documents, end)), -(-end // 1000)
        logger.info("Training a WordPiece tokenizer (vocab_size=%d) on %s", args.vocab_size, source.describe())
        tokenizer = train_tokenizer(
            texts, vocab_size=args.vocab_size, lowercase=args.lowercase, min_frequency=args.min_frequency, length=length
        )
        if tokenizer.backend_tokenizer.get_vocab_size() <= len(tokenizer.all_special_ids):
            raise UserError(f"the corpus is empty: no text in {source.describe()}")
        with cache.publish("tokenizer", key) as directory:
            tokenizer.save_pretrained(directory)
        self.status["tokenizer"] = "built"
        # The published one: another process may have published its own first (trained on other threads, its
        # ties may break otherwise), and the later cache keys must name the tokenizer every process uses.
        path = cache.path("tokenizer", key)
        return cache.read(path, AutoTokenizer.from_pretrained, path)

    # ---- tokenize -----------------------------------------------------------------------------------------
    def tokenize(self, source: CorpusSource, name: str) -> tuple[Dataset, str, dict]:
        """(documents as token-id segments, their cache key, their statistics)."""
        args, cache = self.args, self.cache
        source_key = self.source_key(source)
        key = digest(
            "documents", PIPELINE_VERSION, source_key, tokenizer_fingerprint(self.tokenizer), args.max_seq_length
        )
        self.status[name] = "hit" if cache.has("documents", key) else "built"
        if self.status[name] == "built":
            documents = self.read(source, source_key)
            if len(documents) == 0:
                raise UserError(f"the corpus is empty: no text in {source.describe()}")
            with cache.workdir() as work, cache.publish("documents", key) as directory:
                tokenized = documents.map(
                    DocumentTokenizer(self.tokenizer, args.max_seq_length).table,
                    batched=True,
                    batch_size=TOKENIZE_BATCH_SIZE,
                    remove_columns=documents.column_names,
                    features=DOCUMENT_FEATURES,
                    num_proc=_num_proc(args.preprocessing_num_workers, len(documents), TOKENIZE_BATCH_SIZE),
                    cache_file_name=os.path.join(work, "documents.arrow"),
                    new_fingerprint=key,
                    desc=f"Tokenizing {name.replace('_', ' ')}",
                )
                if len(tokenized) == 0:
                    raise UserError(f"the corpus is empty: {source.describe()} holds no tokens")
                stats = _document_stats(tokenized, len(documents))
                tokenized.save_to_disk(os.path.join(directory, "data"))
                write_json(os.path.join(directory, "stats.json"), stats)
        directory = cache.path("documents", key)
        documents = cache.read(directory, load_from_disk, os.path.join(directory, "data"))
        return documents, key, cache.read(directory, read_json, os.path.join(directory, "stats.json"))

    # ---- pair ---------------------------------------------------------------------------------------------
    def pair(self) -> None:
        """Map-style: tokenized documents held out by a seeded draw, then NSP pairs, cached as Arrow."""
        args, seed, cache = self.args, self.seed, self.cache
        train_docs, train_doc_key, doc_stats = self.tokenize(self.train_source, "documents")
        eval_docs = eval_doc_key = None
        if self.has_split(self.eval_source):
            eval_docs, eval_doc_key, eval_doc_stats = self.tokenize(self.eval_source, "eval_documents")
            doc_stats.update({f"eval_{k}": v for k, v in eval_doc_stats.items() if k in ("sentences", "lines_split")})

        held_out = args.validation_split_percentage if eval_docs is None else 0
        key = digest(
            "pairs",
            PIPELINE_VERSION,
            train_doc_key,
            eval_doc_key,
            held_out,
            seed,
            args.short_seq_prob,
            args.dupe_factor,
            args.max_seq_length,
            self.tokenizer.cls_token_id,
            self.tokenizer.sep_token_id,
            *(() if args.next_sentence_prediction else ("mlm-only",)),
        )  # NSP runs keep their cache keys
        self.status["pairs"] = "hit" if cache.has("pairs", key) else "built"
        if self.status["pairs"] == "built":
            with cache.workdir() as work, cache.publish("pairs", key) as directory:
                where = self.train_source.describe()
                if held_out:
                    train_docs, eval_docs = _hold_out(train_docs, held_out, seed, work)
                    if eval_docs is not None:
                        where += f" after holding out {len(eval_docs)} validation documents"
                stats = self._pair_and_save(train_docs, where, "train", seed, work, directory)
                if eval_docs is not None:
                    # Another seed than training's, so an eval document never pairs the way a train one would.
                    stats.update(
                        self._pair_and_save(
                            eval_docs, "the validation documents", "validation", seed + 1, work, directory
                        )
                    )
                write_json(os.path.join(directory, "stats.json"), stats)
        directory = cache.path("pairs", key)
        self.train_dataset = cache.read(directory, load_from_disk, os.path.join(directory, "train"))
        if os.path.isdir(os.path.join(directory, "validation")):
            self.eval_dataset = cache.read(directory, load_from_disk, os.path.join(directory, "validation"))
        self.stats = {**doc_stats, **cache.read(directory, read_json, os.path.join(directory, "stats.json"))}

    def _pair_and_save(self, documents, where, name, seed, work, directory) -> dict:
        """Pair one split's documents, save them under `directory/name`, return that split's statistics."""
        role = "training" if name == "train" else "validation"
        prefix = "" if name == "train" else "eval_"
        if self.args.next_sentence_prediction:
            _check_pairable(documents, where, role)
            skipped = _single_segment_count(documents)  # one sentence: no pairs of their own
            stats = {f"{prefix}documents_used": len(documents) - skipped, f"{prefix}docs_skipped": skipped}
        elif len(documents) == 0:
            raise UserError(f"the {role} corpus is empty: {where} gave no documents")
        else:
            stats = {f"{prefix}documents_used": len(documents)}
        instances = _make_examples(documents, self.args, seed, self.tokenizer, work, name)
        instances.save_to_disk(os.path.join(directory, name))
        return {**stats, **_instance_stats(instances, prefix, self.args.max_seq_length)}

    # ---- stream -------------------------------------------------------------------------------------------
    def stream(self) -> None:
        """--streaming: the training pairs made on the fly (`instance_stream`); the validation pairs cached."""
        args, seed, cache = self.args, self.seed, self.cache
        has_eval_split = self.has_split(self.eval_source)
        held_out = not has_eval_split and args.validation_split_percentage > 0
        self.train_dataset = self.instance_stream("train" if held_out else "all", seed)
        self.stats = {"streaming": True, "streaming_buffer_size": args.streaming_buffer_size}
        if not (has_eval_split or held_out):
            return
        if has_eval_split:
            eval_docs, eval_doc_key, eval_doc_stats = self.tokenize(self.eval_source, "eval_documents")
            self.stats.update({f"eval_{k}": v for k, v in eval_doc_stats.items()})
            key = digest(
                "pairs",
                PIPELINE_VERSION,
                eval_doc_key,
                seed,
                args.short_seq_prob,
                args.dupe_factor,
                args.max_seq_length,
            )
        else:
            limit = args.max_eval_samples or STREAMING_EVAL_SAMPLES
            key = digest(
                "stream-eval",
                PIPELINE_VERSION,
                self.train_source.fingerprint(),
                tokenizer_fingerprint(self.tokenizer),
                seed,
                args.validation_split_percentage,
                args.max_seq_length,
                args.short_seq_prob,
                limit,
                # Split across processes, the documents are numbered per process (`instance_stream`), and so is
                # which are held out: the validation pairs of N processes are not those of one.
                *(("processes", self.num_processes) if self.num_processes > 1 else ()),
            )
        self.status["pairs"] = "hit" if cache.has("pairs", key) else "built"
        if self.status["pairs"] == "built":
            with cache.workdir() as work, cache.publish("pairs", key) as directory:
                if has_eval_split:
                    eval_stats = self._pair_and_save(
                        eval_docs, "the validation documents", "validation", seed + 1, work, directory
                    )
                else:
                    # The held-out documents are spread through the stream: read it until enough pairs exist.
                    stream = self.held_out_stream(seed + 1)
                    rows = [row for _, row in zip(range(limit), tqdm(stream, total=limit, desc="Validation pairs"))]
                    if not rows:
                        raise UserError(
                            f"no validation pairs: too few of the documents of {self.train_source.describe()} are "
                            "held out for validation; raise --validation_split_percentage or give --validation_file"
                        )
                    evaluation = Dataset.from_list(rows, features=INSTANCE_FEATURES)
                    evaluation.save_to_disk(os.path.join(directory, "validation"))
                    eval_stats = _instance_stats(evaluation, "eval_", args.max_seq_length)
                write_json(os.path.join(directory, "stats.json"), eval_stats)
        directory = cache.path("pairs", key)
        self.stats.update(cache.read(directory, read_json, os.path.join(directory, "stats.json")))
        self.eval_dataset = cache.read(directory, load_from_disk, os.path.join(directory, "validation"))

    def document_stream(self, process_index: int) -> IterableDataset:
        """Process `process_index`'s share of the training source's documents (all of them in a single process) as
        a many-shard `IterableDataset` (`text`, `presplit`), so that its `state_dict` names a shard and
        `load_state_dict` goes there without reading the others (`pretrain.streaming`).

        With N processes the shards are a multiple of N and each process reads only its own
        (`streaming.split_for_process`): the corpus is read once across the processes, not N times."""
        source, processes = self.train_source, self.num_processes
        if source.kind == "files":
            dataset = IterableDataset.from_generator(
                streaming.read_stream_shards,
                features=RAW_FEATURES,
                gen_kwargs={
                    "shards": streaming.stream_shards(source.files, num_processes=processes),
                    "text_column": source.text_column,
                },
            )
            return streaming.split_for_process(dataset, processes, process_index)
        dataset = self.load(source, streaming=source.kind == "hub")
        if source.kind == "disk":
            shards = max(1, len(dataset) // STREAM_SHARD_DOCUMENTS)
            if processes > 1:  # row ranges the processes share out evenly
                shards = min(len(dataset), -(-shards // processes) * processes) or 1
            dataset = dataset.to_iterable_dataset(num_shards=shards)
        dataset = (
            _text_only(dataset, source)
            .filter(bool, input_columns="text")
            .map(lambda batch: {"presplit": [False] * len(batch["text"])}, batched=True)
        )
        return streaming.split_for_process(dataset, processes, process_index)

    def instance_stream(self, keep: str, pair_seed: int, process_index: int | None = None) -> IterableDataset:
        """Instances of the training source, read, tokenized and paired on the fly in blocks of
        --streaming_buffer_size documents. `keep`: "all", or the "train" / "validation" side of
        --validation_split_percentage. `process_index`: whose share of the corpus (default: this process's).

        Documents are numbered as they come in a process's share: number i of process r is i * N + r, a number
        no other process gives a document, which keys whether it is held out and the RNG of its pairs (a stream
        read whole, as by one process: i, as before the split)."""
        process_index = self.process_index if process_index is None else process_index
        documents = self.document_stream(process_index)
        numbering = streaming.process_share(documents)
        if keep != "all":
            held_out = _HeldOut(self.seed, self.args.validation_split_percentage, keep == "validation", numbering)
            documents = documents.filter(held_out, with_indices=True, batched=True)
        return documents.map(
            _StreamBlocks(self.tokenizer, self.args, pair_seed, numbering),
            batched=True,
            batch_size=self.args.streaming_buffer_size,
            with_indices=True,
            remove_columns=["text", "presplit"],
            features=INSTANCE_FEATURES,
        )

    def held_out_stream(self, pair_seed: int) -> Iterator[dict]:
        """The held-out side of the stream, for the validation pairs: of every process's share, one instance of
        each in turn, so that a document is held out in validation exactly when its process's training stream
        leaves it out (`_HeldOut`)."""
        shares = [self.instance_stream("validation", pair_seed, r) for r in range(self.num_processes)]
        if streaming.process_share(shares[0]) == (1, 0):  # one process, or a stream every process reads whole
            return iter(shares[0])
        return streaming.round_robin(shares)


# ----------------------------------------------------------------------------------------------------------
# Map-style: documents and pairs cached as Arrow
# ----------------------------------------------------------------------------------------------------------


def _batched_texts(documents: Dataset, end: int) -> Iterator[list[str]]:
    """The texts of the first `end` documents, 1000 at a time (what the tokenizer is trained on)."""
    for start in range(0, end, 1000):
        yield documents[start : min(start + 1000, end)]["text"]


def _hold_out(documents: Dataset, percentage: float, seed: int, work: str):
    """Split documents (not pairs) into training and validation by a seeded draw; order is kept within each."""
    n = len(documents)
    k = max(2, round(n * percentage / 100))  # two at least: a NotNext B needs another document
    if n - k < 2:
        logger.warning("Only %d documents: not holding out %.4g%% for validation (no evaluation set)", n, percentage)
        return documents, None
    order = np.random.default_rng([seed, 0x5EED]).permutation(n)
    parts = []
    for name, indices in (("train", order[k:]), ("validation", order[:k])):
        part = documents.select(np.sort(indices), keep_in_memory=True)
        parts.append(part.flatten_indices(cache_file_name=os.path.join(work, f"{name}_documents.arrow")))
    return parts[0], parts[1]


def _check_pairable(documents: Dataset, where: str, role: str) -> None:
    n = len(documents)
    multi = n - _single_segment_count(documents)
    if n < 2 or multi < 1:
        sentences = int(pc.sum(documents.data.column("num_lines")).as_py() or 0)
        raise UserError(
            f"the {role} corpus is too small to make NSP pairs: {where} gave {n} document(s) with {sentences} "
            f"sentence(s), {multi} of them with 2 or more sentences; need at least 2 documents, one of them with "
            "2 or more sentences (BERT format: one sentence per line, a blank line between documents)"
        )


def _instance_map(cls: type[NSPInstanceMap], documents: Dataset | None, args, seed: int, tokenizer) -> NSPInstanceMap:
    """`cls` (`NSPInstanceMap`, or `SegmentInstanceMap` for MLM-only examples) with this run's settings."""
    return cls(
        documents,
        args.max_seq_length,
        args.short_seq_prob,
        seed,
        args.dupe_factor,
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
    )


def _make_examples(documents: Dataset, args, seed, tokenizer, work, name) -> Dataset:
    """One split's training examples, in `work`: NSP pairs (`nsp.NSPInstanceMap`), or with
    --next_sentence_prediction false the sentences of consecutive documents packed in order
    (`packing.SegmentInstanceMap`)."""
    if args.next_sentence_prediction:
        cls, features, kind, desc = NSPInstanceMap, INSTANCE_FEATURES, "pairs", "Creating NSP pairs"
    else:
        cls, features, kind, desc = SegmentInstanceMap, SEGMENT_FEATURES, "segments", "Packing MLM examples"
    return (
        documents.with_format("arrow")
        .map(
            _instance_map(cls, documents, args, seed, tokenizer),
            batched=True,
            batch_size=PAIR_BATCH_SIZE,
            with_indices=True,
            remove_columns=documents.column_names,
            features=features,
            num_proc=_num_proc(args.preprocessing_num_workers, len(documents), PAIR_BATCH_SIZE),
            cache_file_name=os.path.join(work, f"{name}_{kind}.arrow"),
            new_fingerprint=digest(name, seed, uuid.uuid4().hex),
            desc=f"{desc} ({name})",
        )
        .with_format(None)
    )


def _num_proc(requested: int | None, rows: int, batch_size: int) -> int | None:
    # More processes than batches only costs start-up time.
    n = min(requested or 1, max(1, -(-rows // batch_size)))
    return n if n > 1 else None


# ----------------------------------------------------------------------------------------------------------
# Streaming
# ----------------------------------------------------------------------------------------------------------


class _HeldOut:
    """`filter` with indices: the documents a stable hash of (seed, document number) puts on one side of the
    percentage split, so that the training stream and the validation pairs agree without a shared list.
    `numbering`: (N, r), document i of process r's share is number i * N + r (`instance_stream`)."""

    def __init__(self, seed: int, percentage: float, validation: bool, numbering: tuple[int, int] = (1, 0)):
        self.seed, self.threshold, self.validation = seed, percentage * 100, validation
        self.processes, self.process_index = numbering

    def __call__(self, _, indices: list[int]) -> list[bool]:
        n, r = self.processes, self.process_index
        return [
            (stable_int(self.seed, "validation", i * n + r) % 10_000 < self.threshold) == self.validation
            for i in indices
        ]


class _StreamBlocks:
    """Batched `map` over the document stream: a block of documents in, its NSP instances out, shuffled.

    Each block is tokenized, paired within itself (a NotNext B comes from another document of the block) and
    its instances are put in a seeded random order: a pure function of the block, so that `datasets` can
    resume in the middle of one (it re-reads the block and skips what was already yielded).
    """

    def __init__(self, tokenizer, args: DataArguments, seed: int, numbering: tuple[int, int] = (1, 0)):
        self.tokenize = DocumentTokenizer(tokenizer, args.max_seq_length)
        self.pairing = _instance_map(NSPInstanceMap, None, args, seed, tokenizer)
        self.seed = seed
        self.processes, self.process_index = numbering  # document i of the share is i * N + r (`_HeldOut`)

    def __call__(self, batch: dict, indices: list[int]) -> dict[str, list]:
        n, r = self.processes, self.process_index
        documents = [d for d in self.tokenize(batch)["segments"] if d]
        rows = []
        if len(documents) >= 2:  # a NotNext B needs another document
            for position in range(len(documents)):
                rows += self.pairing.instances(documents, position, (indices[0] + position) * n + r)
        random.Random(stable_int(self.seed, "block", indices[0] * n + r)).shuffle(rows)
        return {name: [row[name] for row in rows] for name in INSTANCE_FEATURES}


# ----------------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------------


def _document_stats(documents: Dataset, raw_count: int) -> dict:
    table = documents.data
    segments = table.column("segments")
    return {
        "documents": len(documents),
        "documents_empty": raw_count - len(documents),
        "sentences": int(pc.sum(table.column("num_lines")).as_py()),
        "lines_split": int(pc.sum(table.column("lines_split")).as_py()),
        "segments": int(pc.sum(pc.list_value_length(segments)).as_py()),
        "tokens": int(pc.sum(pc.list_value_length(pc.list_flatten(segments))).as_py()),
        "bytes": int(pc.sum(table.column("num_bytes")).as_py()),
    }


def _single_segment_count(documents: Dataset) -> int:
    lengths = pc.list_value_length(documents.data.column("segments"))
    return int(pc.sum(pc.less(lengths, 2)).as_py() or 0)


def _instance_stats(instances: Dataset, prefix: str, max_seq_length: int) -> dict:
    table = instances.data
    n = len(instances)
    lengths = pc.list_value_length(table.column("input_ids"))
    has_nsp = "next_sentence_label" in table.column_names
    not_next = int(pc.sum(table.column("next_sentence_label")).as_py() or 0) if n and has_nsp else 0
    tokens = int(pc.sum(lengths).as_py() or 0) if n else 0
    return {
        f"{prefix}instances": n,
        f"{prefix}instance_tokens": tokens,
        f"{prefix}is_next_fraction": round(1 - not_next / n, 4) if n and has_nsp else None,
        f"{prefix}mean_seq_length": round(tokens / n, 2) if n else None,
        f"{prefix}fill": round(tokens / (n * max_seq_length), 4) if n else None,
    }


def _log_stats(stats: dict) -> None:
    logger.info("Pretraining data: %s", json.dumps(stats, sort_keys=True))
    documents = stats.get("documents")
    if documents and stats.get("docs_skipped"):
        share = stats["docs_skipped"] / documents
        log = logger.warning if share > 0.1 else logger.info
        log(
            "%d of %d documents (%.0f%%) have a single sentence: they make no pairs of their own (they still give "
            "random NotNext B segments). Is the text one document per blank-line-separated block?",
            stats["docs_skipped"],
            documents,
            100 * share,
        )
    if stats.get("lines_split"):
        logger.info("%d lines longer than max_seq_length - 3 tokens were cut into pieces", stats["lines_split"])
