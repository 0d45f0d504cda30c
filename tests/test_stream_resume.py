"""--streaming: a corpus read in byte-range shards, and a resume that goes back to its position in O(1).

- shards: every way of cutting a file into byte ranges reads exactly the documents `corpus.read_documents` reads
  from the whole file (the oracle), BERT text and JSON Lines alike;
- resume: after N batches, a fresh stream given the saved `datasets` state reads a bounded number of documents
  (at most one shard's, plus one block) whether N is 10 or 1,000, and then yields exactly what the
  uninterrupted stream yields next;
- in the training loop: a streamed run resumed from a checkpoint never replays the stream (`skip_first_batches`
  is made to fail) and ends with the uninterrupted run's weights.
"""

import json
import os
import random

import pytest
from conftest import args_for, assert_same_weights, run, synthetic_documents, weights, write_corpus
from torch.utils.data import DataLoader

from pretrain import streaming
from pretrain.corpus import read_documents
from pretrain.data import prepare_pretraining_data
from pretrain.streaming import ResumableStream, read_stream_shard, stream_shards

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda"]


def bert_text(rng, n_docs) -> str:
    docs = [
        "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8))) for _ in range(rng.randint(1, 6)))
        for _ in range(n_docs)
    ]
    gaps = [rng.choice(["\n\n", "\n\n\n", "\n  \n", "\r\n\r\n"]) for _ in docs]
    return "\ufeff" + "".join(d + g for d, g in zip(docs, gaps))


@pytest.mark.parametrize("kind", ["txt", "jsonl"])
def test_shards_read_the_documents_of_the_whole_file(kind, tmp_path):
    rng = random.Random(0)
    path = tmp_path / f"corpus.{kind}"
    if kind == "txt":
        path.write_bytes(bert_text(rng, 60).encode())
    else:
        records = [{"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30))) + "."} for _ in range(60)]
        path.write_text("".join(json.dumps(r) + "\n" + ("\n" if rng.random() < 0.2 else "") for r in records))
    whole = list(read_documents([str(path)]))
    assert len(whole) == 60
    for shard_bytes in (1, 2, 7, 31, 100, 1000, 10**6):
        shards = stream_shards([str(path)], shard_bytes)
        assert len(shards) == -(-os.path.getsize(path) // shard_bytes)
        assert [d for shard in shards for d in read_stream_shard(*shard)] == whole, shard_bytes


@pytest.fixture(scope="module")
def stream_corpus(tmp_path_factory) -> str:
    rng = random.Random(1)
    path = tmp_path_factory.mktemp("stream") / "corpus.txt"
    path.write_text(bert_text(rng, 2500).lstrip("\ufeff"))  # ~2,800 pairs
    return str(path)


@pytest.fixture
def counted(monkeypatch):
    """Documents read from the corpus files (the cost of positioning a stream)."""
    count = {"documents": 0}
    original = streaming.read_stream_shard

    def reading(*args, **kwargs):
        for document in original(*args, **kwargs):
            count["documents"] += 1
            yield document

    monkeypatch.setattr(streaming, "read_stream_shard", reading)
    monkeypatch.setattr(streaming, "SHARD_BYTES", 4000)  # ~60 documents a shard
    return count


def streamed(stream_corpus, cache):
    data = prepare_pretraining_data(
        train_file=[stream_corpus],
        data_cache_dir=str(cache),
        streaming=True,
        vocab_size=100,
        max_seq_length=32,
        streaming_buffer_size=16,
        validation_split_percentage=0,
        seed=0,
    )
    return ResumableStream(data.train_dataset, record_every=2)


@pytest.mark.parametrize("batches", [10, 1000])
def test_resume_reads_a_bounded_number_of_documents_and_is_exact(batches, stream_corpus, counted, tmp_path):
    uninterrupted = streamed(stream_corpus, tmp_path)
    loader = iter(DataLoader(uninterrupted, batch_size=2, collate_fn=list))
    for _ in range(batches):
        next(loader)
    position = uninterrupted.state_at(2 * batches)
    expected = [next(loader) for _ in range(5)]
    read_before = counted["documents"]

    counted["documents"] = 0
    resumed = streamed(stream_corpus, tmp_path)  # a new process: the tokenizer from the cache, a fresh stream
    assert resumed.resume(json.loads(json.dumps(position)))  # as saved in, and read from, stream_position.json
    again = iter(DataLoader(resumed, batch_size=2, collate_fn=list))
    assert [next(again) for _ in range(5)] == expected
    # One shard re-read (~60 documents) and one block re-paired (16), at most; the replay reads everything before.
    assert counted["documents"] <= 100, counted
    if batches == 1000:
        assert read_before > 5 * counted["documents"]


def test_a_resumed_streamed_run_goes_back_to_its_position(tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "topics.txt", synthetic_documents(n_docs=60, seed=7))
    argv = lambda out, *extra: args_for(  # noqa: E731
        corpus,
        str(tmp_path / "cache"),
        out,
        "--streaming",
        "true",  # noqa: E731
        "--max_train_steps",
        8,
        "--logging_steps",
        1,
        *extra,
    )
    run(argv(tmp_path / "full", "--checkpointing_steps", 4))
    position = json.load(open(tmp_path / "full" / "checkpoints" / "step_4" / "stream_position.json"))
    assert position["epoch"] == 0 and position["examples"] == 4 * 16

    part = tmp_path / "part"
    os.makedirs(part / "checkpoints")
    os.rename(tmp_path / "full" / "checkpoints" / "step_4", part / "checkpoints" / "step_4")
    (part / "checkpoints" / "latest").write_text("step_4\n")

    def no_replay(*args, **kwargs):
        raise AssertionError("the resumed stream replayed the batches before its position")

    monkeypatch.setattr("accelerate.Accelerator.skip_first_batches", no_replay)
    assert run(argv(part, "--checkpointing_steps", 1000, "--resume_from_checkpoint", "latest"))["train_steps"] == 8
    assert_same_weights(weights(part), weights(tmp_path / "full"), exact=True)
