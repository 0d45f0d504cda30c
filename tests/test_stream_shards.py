"""--streaming on several processes: each reads only its own shards, so the corpus is read once, not once each.

- the split: for 1-4 processes, the shards (`stream_shards`) are a multiple of the processes, the byte ranges each
  process reads (`split_for_process`) are disjoint and together cover every byte of every file once, and every
  document is read by exactly one process (oracle: `corpus.read_documents` of the whole files);
- the loader: accelerate's own sharding of the loader (`prepare_data_loader`, as `accelerator.prepare` calls it)
  keeps exactly this process's share of a `ResumableStream`, nothing of the others'; each process saves and
  restores its own position;
- the pipeline: two processes' training streams and the held-out validation pairs hold disjoint documents, and
  no example id twice;
- two real processes (`accelerate launch`, gloo): the training loaders read disjoint byte ranges and documents
  that together cover the corpus once, and yield disjoint examples;
- resume: a streamed 2-process run resumed from its checkpoint goes back to each process's position (never
  `skip_first_batches`) and ends with the uninterrupted 2-process run's weights.
"""

import json
import os
import random
import subprocess

import pytest
from conftest import (
    accelerate_launch,
    args_for,
    assert_same_weights,
    cli_env,
    synthetic_documents,
    weights,
    write_corpus,
)
from datasets import IterableDataset
from torch.utils.data import DataLoader

from pretrain import streaming
from pretrain.corpus import read_documents
from pretrain.streaming import ResumableStream, read_stream_shards, split_for_process, stream_shards

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda"]


def write_files(folder, rng) -> list[str]:
    """BERT text of several sizes (one empty) and a JSON Lines file."""
    files = []
    for name, n_docs in [("a.txt", 40), ("empty.txt", 0), ("b.txt", 3), ("c.txt", 90)]:
        docs = [
            "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8))) for _ in range(rng.randint(1, 5)))
            for _ in range(n_docs)
        ]
        path = folder / name
        path.write_text("".join(d + rng.choice(["\n\n", "\n\n\n", "\n  \n"]) for d in docs))
        files.append(str(path))
    records = [{"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 20))) + "."} for _ in range(30)]
    path = folder / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return files + [str(path)]


def assert_read_once(files: list[str], ranges: list[tuple[str, int, int]]) -> None:
    """`ranges` (from all processes) cut every file into disjoint pieces that cover each of its bytes once."""
    for path in files:
        mine = sorted((start, end) for p, start, end in ranges if p == path)
        covered = 0
        for start, end in mine:
            assert start == covered or start == end == os.path.getsize(path), (path, mine)  # no gap, no overlap
            covered = max(covered, end)
        assert covered == os.path.getsize(path), (path, mine)


@pytest.mark.parametrize("num_processes", [1, 2, 3, 4])
@pytest.mark.parametrize("shard_bytes", [None, 50, 10**6])
def test_each_process_reads_its_own_byte_ranges_and_every_document_once(
    num_processes, shard_bytes, tmp_path, monkeypatch
):
    files = write_files(tmp_path, random.Random(num_processes))
    whole = list(read_documents(files))
    shards = stream_shards(files, shard_bytes, num_processes=num_processes)
    assert len(shards) % num_processes == 0
    assert_read_once(files, shards)
    if num_processes == 1:
        assert shards == stream_shards(files, shard_bytes)  # one process: the cut as before

    reads = []  # (process, shard, documents), in the order each process reads them
    original = streaming.read_stream_shard

    def reading(path, start, end, *args, **kwargs):
        documents = list(original(path, start, end, *args, **kwargs))
        reads.append((process, (path, start, end), documents))
        yield from documents

    monkeypatch.setattr(streaming, "read_stream_shard", reading)
    stream = IterableDataset.from_generator(read_stream_shards, gen_kwargs={"shards": shards, "text_column": "text"})
    yielded = {}
    for process in range(num_processes):
        share = split_for_process(stream, num_processes, process)
        assert streaming.process_share(share) == ((num_processes, process) if num_processes > 1 else (1, 0))
        yielded[process] = list(share)

    opened = [shard for _, shard, _ in reads]
    assert sorted(opened) == sorted(shards)  # each shard opened once, by one process
    assert_read_once(files, opened)
    by_shard = {shard: documents for _, shard, documents in reads}
    assert [d for shard in shards for d in by_shard[shard]] == whole  # every document read by exactly one process
    for process in range(num_processes):  # ... and what a process yields is what it read
        assert yielded[process] == [d for p, _, documents in reads if p == process for d in documents]
    if num_processes > 1 and shard_bytes is None:  # a small corpus is cut finer: every process has work
        assert all(yielded[process] for process in range(num_processes))


def numbers(n_shards: int, per_shard: int) -> IterableDataset:
    def generate(shards):
        for shard in shards:
            for i in range(per_shard):
                yield {"n": shard * per_shard + i}

    return IterableDataset.from_generator(generate, gen_kwargs={"shards": list(range(n_shards))})


def test_accelerate_keeps_exactly_this_process_share():
    """`accelerator.prepare` shards an iterable loader by keeping one batch in N of what each process reads
    (`IterableDatasetShard`): the stream puts this process's batch in its slot, so it keeps its own share."""
    from accelerate.data_loader import prepare_data_loader

    batch, processes = 3, 2
    stream = numbers(n_shards=4, per_shard=7)
    kept = {}
    for process in range(processes):
        share = split_for_process(stream, processes, process)
        expected = [row["n"] for row in share]
        loader = DataLoader(
            ResumableStream(share, record_every=batch), batch_size=batch, drop_last=True, collate_fn=list
        )
        prepared = prepare_data_loader(
            loader, num_processes=processes, process_index=process, put_on_device=False, dispatch_batches=False
        )
        kept[process] = [[row["n"] for row in b] for b in prepared]
        assert kept[process] == [expected[i : i + batch] for i in range(0, len(expected) - batch + 1, batch)]
    assert not set(sum(kept[0], [])) & set(sum(kept[1], []))


def test_positions_are_per_process_and_exact(tmp_path):
    """Each process saves its own position (`stream_position_<r>.json`) and a fresh stream of that process
    continues exactly where it was; another number of processes does not load it."""
    stream = numbers(n_shards=4, per_shard=9)
    for process in range(2):
        uninterrupted = ResumableStream(split_for_process(stream, 2, process), record_every=2)
        rows = iter(uninterrupted)
        own = [row for row in (next(rows) for _ in range(2 * 2 * 3)) if row is not None]  # 3 global batches
        assert len(own) == 6
        rest = [row for row in rows if row is not None]
        folder = tmp_path / str(process)
        folder.mkdir()
        uninterrupted.save_position(str(folder), epoch=0, examples=4)
        assert os.listdir(folder) == [f"stream_position_{process}.json"]
        resumed = ResumableStream(split_for_process(stream, 2, process), record_every=2)
        assert resumed.load_position(str(folder), epoch=0, examples=4)
        assert [row for row in resumed if row is not None] == own[4:] + rest
        assert not ResumableStream(split_for_process(stream, 4, process), record_every=2).load_position(
            str(folder), epoch=0, examples=4
        )


def test_shares_pair_their_own_documents_and_hold_out_the_validation_ones(tmp_path):
    """Two processes' training streams and the held-out validation pairs hold disjoint documents (every sentence
    carries its document's marker, read back from the pairs' tokens): no document trained on by both processes,
    none trained on and held out (the held-out side of every share), the held-out pairs cached apart from one
    process's, and no example id twice."""
    import re

    from pretrain.cache import DataCache
    from pretrain.data import DataArguments, DataPipeline, _resolve_sources

    documents = synthetic_documents(n_docs=120, seed=6)
    marked = [[f"m{d}m {sentence}" for sentence in document] for d, document in enumerate(documents)]
    corpus = write_corpus(tmp_path / "c.txt", marked)
    args = DataArguments(
        train_file=[corpus],
        data_cache_dir=str(tmp_path / "cache"),
        streaming=True,
        vocab_size=120,
        max_seq_length=32,
        streaming_buffer_size=16,
        validation_split_percentage=20,
    )
    args.validate()
    cache = str(tmp_path / "cache")

    def read(rows, tokenizer) -> set[int]:
        text = " ".join(tokenizer.decode(row["input_ids"]) for row in rows)
        return {int(d) for d in re.findall(r"m(\d+)m", text)}

    docs, ids = {}, {}
    for processes in [(2, 0), (2, 1), (1, 0)]:
        pipeline = DataPipeline(args, 0, *_resolve_sources(args, cache), DataCache(cache), processes)
        pipeline.run()
        docs[processes] = read(pipeline.train_dataset, pipeline.tokenizer)
        ids[processes] = [row["example_id"] for row in pipeline.train_dataset]
        docs[processes, "validation"] = read(pipeline.eval_dataset, pipeline.tokenizer)
    assert docs[(2, 1), "validation"] == docs[(2, 0), "validation"]  # built once, read by both
    assert docs[2, 0] and docs[2, 1] and not docs[2, 0] & docs[2, 1]
    assert not (docs[2, 0] | docs[2, 1]) & docs[(2, 0), "validation"]
    assert not docs[1, 0] & docs[(1, 0), "validation"]
    # Documents numbered i * N + r: the processes' pairs draw from other RNGs and carry other example ids (the
    # collator keys the masks on them), though each numbers its documents from 0.
    train_ids = ids[2, 0] + ids[2, 1]
    assert len(set(train_ids)) == len(train_ids)
    assert docs[(2, 0), "validation"] != docs[(1, 0), "validation"]  # numbered per process: another held-out set


# ----------------------------------------------------------------------------------------------------------------
# Two processes, launched as a user launches them
# ----------------------------------------------------------------------------------------------------------------
CHILD = r"""
import json, os, sys

from pretrain import streaming

rank = os.environ["RANK"]
if os.environ.get("DUMP_AFTER"):  # debugging a hang: every thread's stack after that many seconds
    import faulthandler

    faulthandler.dump_traceback_later(int(os.environ["DUMP_AFTER"]), exit=True)
log = open(os.path.join(os.environ["STREAM_LOG"], f"reads-{rank}.jsonl"), "a")
original = streaming.read_stream_shard


def reading(path, start, end, *args, **kwargs):
    documents = list(original(path, start, end, *args, **kwargs))
    log.write(json.dumps({"shard": [path, start, end], "documents": [d["text"] for d in documents]}) + "\n")
    log.flush()
    yield from documents


streaming.read_stream_shard = reading
if os.environ.get("NO_REPLAY"):
    import accelerate

    def no_replay(*args, **kwargs):
        raise AssertionError("the resumed stream replayed the batches before its position")

    accelerate.Accelerator.skip_first_batches = no_replay

if os.environ.get("LOADER_ONLY"):  # the training loader, read to its end
    from pretrain.__main__ import parse
    from pretrain.data import prepare
    from pretrain.distributed import make_accelerator
    from pretrain.train import build_dataloaders

    model_args, data_args, args, _ = parse(sys.argv[1:])
    accelerator = make_accelerator(args)
    data = prepare(data_args, seed=args.seed, accelerator=accelerator)
    loader, _ = build_dataloaders(data, list, args, accelerator.device, True)
    loader = accelerator.prepare(loader)
    batches = [[example["example_id"] for example in batch] for batch in loader]
    with open(os.path.join(os.environ["STREAM_LOG"], f"batches-{rank}.json"), "w") as f:
        json.dump(batches, f)
    accelerator.wait_for_everyone()
    accelerator.end_training()
else:
    from pretrain.__main__ import main

    sys.exit(main(sys.argv[1:]))
"""


def launch(tmp_path, argv, **env) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    log = tmp_path / "log"
    log.mkdir(exist_ok=True)
    proc = subprocess.run(
        accelerate_launch(script, *argv),
        env=cli_env(STREAM_LOG=str(log), DUMP_AFTER="240", **env),  # a hang shows its stacks
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def reads(tmp_path, rank) -> list[dict]:
    with open(tmp_path / "log" / f"reads-{rank}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("stream_corpus")
    return [
        write_corpus(folder / "one.txt", synthetic_documents(n_docs=50, seed=3)),
        write_corpus(folder / "two.txt", synthetic_documents(n_docs=30, seed=4)),
    ]


def test_two_processes_read_disjoint_byte_ranges_that_cover_the_corpus_once(corpus, tmp_path):
    argv = args_for(corpus[0], tmp_path / "cache", tmp_path / "out", "--streaming", "true", "--max_train_steps", 1)
    argv += ["--train_file", *corpus, "--validation_split_percentage", 0, "--per_device_train_batch_size", 4]
    launch(tmp_path, argv, LOADER_ONLY="1")
    read = {rank: reads(tmp_path, rank) for rank in (0, 1)}
    shards = {rank: [tuple(r["shard"]) for r in read[rank]] for rank in (0, 1)}
    assert shards[0] and shards[1] and not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == sorted(stream_shards(corpus, num_processes=2))
    assert_read_once(corpus, shards[0] + shards[1])
    documents = sorted(d for rank in (0, 1) for r in read[rank] for d in r["documents"])
    assert documents == sorted(d["text"] for d in read_documents(corpus))  # every document once, in one process
    batches = {rank: json.load(open(tmp_path / "log" / f"batches-{rank}.json")) for rank in (0, 1)}
    ids = {rank: [i for b in batches[rank] for i in b] for rank in (0, 1)}
    assert all(len(b) == 4 for rank in (0, 1) for b in batches[rank])
    assert len(set(ids[0])) == len(ids[0]) and len(set(ids[1])) == len(ids[1])
    assert not set(ids[0]) & set(ids[1])  # no example trained on twice in an epoch


def test_a_resumed_two_process_stream_goes_back_to_each_position(corpus, tmp_path):
    def argv(out, *extra):  # 20% held out: the validation pairs come from both processes' shares
        flags = ["--streaming", "true", "--max_train_steps", 6, "--logging_steps", 1, *extra]
        flags += ["--validation_split_percentage", 20, "--per_device_train_batch_size", 8]
        return args_for(corpus[0], tmp_path / "cache", out, *flags)

    launch(tmp_path, argv(tmp_path / "full", "--checkpointing_steps", 3))
    step_3 = tmp_path / "full" / "checkpoints" / "step_3"
    for rank in (0, 1):
        position = json.load(open(step_3 / f"stream_position_{rank}.json"))
        assert position["epoch"] == 0 and position["examples"] == 3 * 8 and position["num_processes"] == 2
    assert not (step_3 / "stream_position.json").exists()

    part = tmp_path / "part"
    os.makedirs(part / "checkpoints")
    os.rename(step_3, part / "checkpoints" / "step_3")
    (part / "checkpoints" / "latest").write_text("step_3\n")
    launch(tmp_path, argv(part, "--checkpointing_steps", 1000, "--resume_from_checkpoint", "latest"), NO_REPLAY="1")
    assert json.load(open(part / "all_results.json"))["train_steps"] == 6
    assert_same_weights(weights(part), weights(tmp_path / "full"), exact=True)


def test_single_process_positions_are_unchanged():
    """One process: `stream_position.json` as before the split, no process count in it."""
    stream = ResumableStream(numbers(n_shards=2, per_shard=4), record_every=2)
    assert (stream.num_processes, stream.process_index) == (1, 0) and stream.position_file == "stream_position.json"
    assert [row["n"] for row in stream] == list(range(8))  # no slots for other processes
