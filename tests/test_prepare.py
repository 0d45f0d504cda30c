"""`minibert-prepare`, and what a multi-process launch does without it.

- `minibert-prepare run.yaml` then `minibert-pretrain run.yaml`: the training run finds every cache entry and
  tokenizes nothing (the tokenizer and pairing steps are made to fail if called), and it trains to the same
  weights as a run that prepared its own data in another cache (the oracle);
- a two-process launch with no cache and a corpus over --max_prepare_in_launch_mb stops in every process with
  the same one-line message, before any process waits for another;
- two processes that build the same cache at the same moment (each reaches every check and every publish
  together) leave one valid cache, equal to one built alone.
"""

import inspect
import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import (
    NO_DROPOUT,
    accelerate_launch,
    args_for,
    assert_same_weights,
    cli_env,
    run,
    topics_corpus,
    weights,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return topics_corpus(tmp_path_factory, "prepare_corpus", n_docs=60, seed=4)


def run_config(path, corpus, cache, output_dir, **extra) -> str:
    """A minibert-pretrain run config (YAML keys = flag names), data and training keys mixed as users write it."""
    argv = args_for(corpus, cache, output_dir, "--max_train_steps", 4, "--logging_steps", 1)
    config = {}
    for flag, value in zip(argv[::2], argv[1::2]):
        config[flag[2:]] = str(value)
    config["config_overrides"] += NO_DROPOUT
    config.update(extra)
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_prepare_then_pretrain_hits_the_cache(corpus, tmp_path, monkeypatch, capsys):
    from pretrain import data as data_module
    from pretrain.__main__ import parse
    from pretrain.prepare import main as prepare_main

    prepared = tmp_path / "prepared_cache"
    config = run_config(tmp_path / "run.yaml", corpus, prepared, tmp_path / "out")
    assert prepare_main([config]) == 0
    out = capsys.readouterr().out
    assert "tokenizer built, documents built, pairs built" in out
    stats = data_module.prepare(parse([config])[1], seed=0).stats  # a cache hit
    for line in (
        "documents  60",
        f"tokens     {stats['tokens']:,}",
        f"instances  {stats['instances']:,} training pairs",
        f"validation {stats['eval_instances']:,} pairs",
    ):
        assert line in out, out
    assert "B in " + str(prepared) in out

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("the training run tokenized or paired: the prepared cache was missed")

    with monkeypatch.context() as m:
        m.setattr(data_module, "train_tokenizer", no_tokenizing)
        m.setattr(data_module.DocumentTokenizer, "__call__", no_tokenizing)
        m.setattr(data_module.NSPInstanceMap, "__call__", no_tokenizing)
        result = run([config])  # minibert-pretrain in this process
    assert result["status"] == "completed"
    data_stats = json.load(open(tmp_path / "out" / "data_stats.json"))
    assert data_stats["cache"] == {"tokenizer": "hit", "documents": "hit", "pairs": "hit"}

    # The oracle: the same run preparing its own data (one process, no minibert-prepare) in another cache.
    alone = run_config(tmp_path / "alone.yaml", corpus, tmp_path / "own_cache", tmp_path / "alone")
    assert run([alone])["status"] == "completed"
    assert json.load(open(tmp_path / "alone" / "data_stats.json"))["cache"]["pairs"] == "built"
    assert_same_weights(weights(tmp_path / "out"), weights(tmp_path / "alone"), exact=True)


def test_prepare_reports_user_errors_in_one_line(tmp_path, capsys):
    from pretrain.prepare import main as prepare_main

    code = prepare_main(["--train_file", str(tmp_path / "missing.txt"), "--data_cache_dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert (
        [line for line in err.splitlines() if line.startswith("error:")]
        == [line for line in err.splitlines() if "error" in line.lower()]
        and "missing.txt" in err
        and "Traceback" not in err
    )


def test_a_launch_without_a_cache_refuses_a_large_corpus(corpus, tmp_path):
    """Two processes, an empty cache, a corpus over the limit: exit 2, the same single message from each process,
    no traceback, and nothing tokenized."""
    # Exists beforehand: minibert.safety.check_writable_dir creates and removes a missing folder in every
    # process, which races between processes (reported; not this test's subject).
    (tmp_path / "cache").mkdir()
    argv = args_for(corpus, tmp_path / "cache", tmp_path / "out", max_train_steps=2, max_prepare_in_launch_mb=0.001)
    launch = accelerate_launch("-m", "pretrain", *argv)
    done = subprocess.run(launch, env=cli_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode != 0
    errors = {line for line in done.stderr.splitlines() if line.startswith("error:")}
    assert len(errors) == 1, done.stderr[-3000:]
    (message,) = errors
    assert "minibert-prepare" in message and "--max_prepare_in_launch_mb" in message and "topics.txt" in message
    # The one traceback allowed is the launcher's (torchrun reports a failed child with one), not ours.
    assert done.stderr.count("Traceback") == done.stderr.count("raise ChildFailedError("), done.stderr[-3000:]
    assert not [name for name in os.listdir(tmp_path / "cache") if not name.startswith("demo")]


RACER = r"""
import hashlib, json, os, sys, time
import pretrain.data as data

barrier_dir, corpus, cache = sys.argv[1:]
calls = []


def barrier(name):
    # Wait until the other process has made as many calls: both check (and publish) each entry at once.
    calls.append(name)
    prefix = f"{len(calls):02d}-{name}-"
    open(os.path.join(barrier_dir, prefix + str(os.getpid())), "w").close()
    deadline = time.monotonic() + 90
    while sum(f.startswith(prefix) for f in os.listdir(barrier_dir)) < 2:
        if time.monotonic() > deadline:
            sys.exit(f"the other process never reached {prefix}")
        time.sleep(0.01)


has, rename = data.DataCache.has, os.rename
data.DataCache.has = lambda self, kind, key: barrier("has") or has(self, kind, key)
os.rename = lambda src, dst: (barrier("publish") if os.path.basename(src) == "entry" else None) or rename(src, dst)
prepared = data.prepare_pretraining_data(train_file=[corpus], data_cache_dir=cache, vocab_size=120, max_seq_length=32, seed=0)
print("RESULT " + json.dumps({"calls": calls, "cache": prepared.stats["cache"], **digest(prepared)}))
"""


def digest(prepared) -> dict:
    """What a prepared run trains on: its vocabulary and every training and validation pair."""
    import hashlib

    def of(dataset):
        return hashlib.sha256(json.dumps(dataset.to_dict(), sort_keys=True).encode()).hexdigest()

    return {
        "vocab": prepared.tokenizer.get_vocab(),
        "train": of(prepared.train_dataset),
        "validation": of(prepared.eval_dataset),
    }


def test_two_processes_racing_on_one_cache_leave_one_valid_cache(corpus, tmp_path):
    from pretrain.data import prepare_pretraining_data

    barriers, cache = tmp_path / "barriers", tmp_path / "cache"
    barriers.mkdir()
    script = "import json\n" + inspect.getsource(digest) + RACER
    command = [sys.executable, "-c", script, str(barriers), corpus, str(cache)]
    racers = [
        subprocess.Popen(command, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = []
    for racer in racers:
        out, err = racer.communicate(timeout=180)
        assert racer.returncode == 0, err[-3000:]
        results.append(json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]))
    # Both built every entry and tried to publish it: each race really happened.
    for result in results:
        assert result["cache"] == {"tokenizer": "built", "documents": "built", "pairs": "built"}
        assert result.pop("calls") == ["has", "publish"] * 3
        result.pop("cache")
    assert sorted(name.split("-")[0] for name in os.listdir(cache)) == ["documents", "pairs", "tokenizer"]
    # The oracle: the same data prepared by one process alone.
    alone = prepare_pretraining_data(
        train_file=[corpus], data_cache_dir=str(tmp_path / "alone"), vocab_size=120, max_seq_length=32, seed=0
    )
    assert results[0] == results[1] == digest(alone)
    again = prepare_pretraining_data(
        train_file=[corpus], data_cache_dir=str(cache), vocab_size=120, max_seq_length=32, seed=0
    )
    assert again.stats["cache"] == {"tokenizer": "hit", "documents": "hit", "pairs": "hit"}
    assert digest(again) == digest(alone)


def test_flags_and_python_callers_name_the_same_cache(corpus, tmp_path):
    """Flags parse `--validation_split_percentage 5` as 5.0; a Python caller writes 5: one cache entry."""
    from pretrain.__main__ import parse
    from pretrain.data import prepare, prepare_pretraining_data

    python = dict(
        train_file=[corpus],
        data_cache_dir=str(tmp_path),
        vocab_size=120,
        max_seq_length=32,
        validation_split_percentage=5,
        short_seq_prob=0,
    )
    assert prepare_pretraining_data(**python, seed=0).stats["cache"]["pairs"] == "built"
    _, flags, _, _ = parse(
        [
            "--train_file",
            corpus,
            "--data_cache_dir",
            str(tmp_path),
            "--vocab_size",
            "120",
            "--max_seq_length",
            "32",
            "--validation_split_percentage",
            "5",
            "--short_seq_prob",
            "0",
        ]
    )
    assert prepare(flags, seed=0).stats["cache"] == {
        "tokenizer": "hit",
        "documents": "hit",
        "pairs": "hit",
    }
