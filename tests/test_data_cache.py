"""The data cache trusts nothing it reads back: every entry carries a manifest (files, sizes, digests, Arrow row
counts) written last, and a hit is checked against it.

Each damage below is what a user, a sync tool or a broken disk does to a real cache made here; the oracle is the
data of an undamaged build. A damaged entry is rebuilt, the log says so, and the run gets the right data; what
cannot be read even so, and a full disk, end in one `error:` line (exit 2) with the cache otherwise unchanged.
"""

import errno
import json
import logging
import os
import shutil

import pytest
from conftest import one_error_line, run_main, snapshot, synthetic_documents, write_corpus

from pretrain import cache as cache_module
from pretrain.data import prepare_pretraining_data
from pretrain.prepare import main as prepare_main


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return write_corpus(tmp_path_factory.mktemp("cache_corpus") / "topics.txt", synthetic_documents(n_docs=60, seed=3))


def flags(corpus, cache, seed=0) -> list[str]:
    return [
        "--train_file",
        corpus,
        "--data_cache_dir",
        str(cache),
        "--vocab_size",
        "120",
        "--max_seq_length",
        "32",
        "--preprocessing_num_workers",
        "1",
        "--seed",
        str(seed),
    ]


def prepare(corpus, cache, seed=0):
    return prepare_pretraining_data(
        train_file=[corpus], data_cache_dir=str(cache), vocab_size=120, max_seq_length=32, seed=seed
    )


def entry(cache, kind) -> str:
    (name,) = [n for n in os.listdir(cache) if n.startswith(f"{kind}-")]
    return os.path.join(cache, name)


def arrow_file(directory) -> str:
    (name,) = [n for n in os.listdir(directory) if n.endswith(".arrow")]
    return os.path.join(directory, name)


@pytest.fixture
def built(corpus, tmp_path):
    """A complete cache and what it holds: the oracle for every rebuild."""
    cache = tmp_path / "cache"
    data = prepare(corpus, cache)
    return cache, data.train_dataset.to_dict(), data.eval_dataset.to_dict(), data.stats


def rebuilt_with_the_right_data(corpus, cache, train, evaluation, stats, caplog, kind, reason):
    with caplog.at_level(logging.WARNING, logger="pretrain"):
        again = prepare(corpus, cache)
    assert again.stats["cache"][kind] == "built", again.stats["cache"]
    warnings = [r.getMessage() for r in caplog.records if "cannot be trusted" in r.getMessage()]
    assert len(warnings) == 1 and reason in warnings[0] and "Rebuilding" in warnings[0], warnings
    assert again.train_dataset.to_dict() == train and again.eval_dataset.to_dict() == evaluation
    assert again.stats["instances"] == stats["instances"]
    assert prepare(corpus, cache).stats["cache"] == {"tokenizer": "hit", "documents": "hit", "pairs": "hit"}


def test_validation_pairs_copied_over_the_train_pairs_are_rebuilt(corpus, built, caplog):
    """Issue 21's case: the held-out pairs copied over the training pairs (every file of the folder)."""
    cache, train, evaluation, stats = built
    pairs = entry(cache, "pairs")
    shutil.copytree(os.path.join(pairs, "validation"), os.path.join(pairs, "train"), dirs_exist_ok=True)
    rebuilt_with_the_right_data(corpus, cache, train, evaluation, stats, caplog, "pairs", "train/")


def test_a_truncated_arrow_file_is_rebuilt_not_a_traceback(corpus, built, caplog, capsys):
    """Through `minibert-prepare`: exit 0, no traceback, the documents rebuilt; and the data is right."""
    cache, train, evaluation, stats = built
    path = arrow_file(os.path.join(entry(cache, "documents"), "data"))
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with caplog.at_level(logging.WARNING, logger="pretrain"):
        code, err = run_main(prepare_main, flags(corpus, cache), capsys)
    assert code == 0 and "Traceback" not in err, err[-3000:]
    assert any("cannot be trusted" in r.getMessage() and "bytes" in r.getMessage() for r in caplog.records)
    caplog.clear()
    again = prepare(corpus, cache)
    assert again.stats["cache"]["documents"] == "hit"
    assert again.train_dataset.to_dict() == train


@pytest.mark.parametrize("name", ["train/state.json", "train/dataset_info.json", "stats.json", "manifest.json"])
def test_an_edited_json_file_is_rebuilt(corpus, built, caplog, name):
    cache, train, evaluation, stats = built
    path = os.path.join(entry(cache, "pairs"), name)
    content = json.load(open(path))
    if name == "manifest.json":
        content["files"]["stats.json"]["bytes"] += 1
        reason = "stats.json"
    elif name == "train/state.json":
        content["_data_files"] = []  # was an IndexError from `datasets`
        reason = name
    else:
        content["instances" if name == "stats.json" else "description"] = 7
        reason = name
    json.dump(content, open(path, "w"))
    rebuilt_with_the_right_data(corpus, cache, train, evaluation, stats, caplog, "pairs", reason)


def test_an_entry_without_a_manifest_is_rebuilt(corpus, built, caplog):
    """An older minibert's entry, or a copy that left the manifest out."""
    cache, train, evaluation, stats = built
    os.remove(os.path.join(entry(cache, "pairs"), "manifest.json"))
    rebuilt_with_the_right_data(corpus, cache, train, evaluation, stats, caplog, "pairs", "no manifest")


def test_damage_the_check_cannot_see_is_one_error_line(corpus, built, capsys, monkeypatch):
    """An entry that passes the check (here: the check switched off) but cannot be read: one line naming it."""
    cache, *_ = built
    pairs = entry(cache, "pairs")
    path = arrow_file(os.path.join(pairs, "train"))
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 100)
    monkeypatch.setattr(cache_module, "manifest_problem", lambda directory: None)
    code, err = run_main(prepare_main, flags(corpus, cache), capsys)
    assert code == 2
    line = one_error_line(err)
    assert pairs in line and "--overwrite_cache" in line


def test_a_full_disk_while_caching_is_one_line_and_keeps_the_cache(corpus, built, capsys, monkeypatch):
    """ENOSPC while the pairs of another seed are saved: one line with the folder and the space needed, no work
    directory left, the entries already there unchanged."""
    from datasets import Dataset

    cache, *_ = built
    before = snapshot(cache)

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", os.path.join(str(cache), "x.arrow"))

    monkeypatch.setattr(Dataset, "save_to_disk", full)
    code, err = run_main(prepare_main, flags(corpus, cache, seed=1), capsys)
    assert code == 2
    line = one_error_line(err)
    assert str(cache) in line and "MB needed" in line and "MB free" in line, line
    assert snapshot(cache) == before


def test_datasets_own_disk_space_check_is_one_line(corpus, tmp_path, capsys, monkeypatch):
    """`datasets` refuses to generate on a disk it finds full ("Not enough disk space", no errno)."""
    import datasets.builder

    monkeypatch.setattr(datasets.builder, "has_sufficient_disk_space", lambda *args, **kwargs: False)
    cache = tmp_path / "cache"
    code, err = run_main(prepare_main, flags(corpus, cache), capsys)
    assert code == 2
    line = one_error_line(err)
    assert str(cache) in line and "MB needed" in line, line
    assert not [n for n in os.listdir(cache) if n.startswith("tmp-")]


def test_the_digest_of_a_large_file_sees_a_changed_block(tmp_path):
    """Above 1 MiB the digest reads 16 blocks: a change inside one of them, or one byte more, changes it."""
    path = tmp_path / "big.arrow"
    data = bytearray(os.urandom(3 << 20))
    path.write_bytes(data)
    first = cache_module.file_digest(str(path))
    assert cache_module.file_digest(str(path)) == first
    data[-10] ^= 1  # inside the last block
    path.write_bytes(data)
    assert cache_module.file_digest(str(path)) != first
    path.write_bytes(bytes(data) + b"\0")
    assert cache_module.file_digest(str(path)) != first
