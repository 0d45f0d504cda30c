"""Reading corpora: sentence splitting, file resolution, BERT-format and JSON Lines readers, the demo corpus."""

import json
import os
import re

import pytest

import pretrain.demo as demo_module
from minibert.cli import UserError
from pretrain.corpus import read_documents, resolve_files, split_sentences
from pretrain.demo import build_demo_corpus, demo_documents


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "Mr. Smith went to Washington. He arrived at 3.30 p.m. on Monday.",
            ["Mr. Smith went to Washington.", "He arrived at 3.30 p.m. on Monday."],
        ),
        (
            "Use a tool, e.g. a hammer. It works. See Fig. 3 for details.",
            ["Use a tool, e.g. a hammer.", "It works.", "See Fig. 3 for details."],
        ),
        ('He said "Stop." Then he left. "Why?" she asked.', ['He said "Stop."', "Then he left.", '"Why?" she asked.']),
        (
            "Wait... What happened? I don't know... maybe nothing.",
            ["Wait...", "What happened?", "I don't know... maybe nothing."],
        ),
        (
            "The U.S. Army was founded in 1775. J. R. R. Tolkien wrote books. Smith et al. proposed it.",
            ["The U.S. Army was founded in 1775.", "J. R. R. Tolkien wrote books.", "Smith et al. proposed it."],
        ),
        (
            "It costs $3.50. The price rose by 2.5%. Is that all?! Yes.",
            ["It costs $3.50.", "The price rose by 2.5%.", "Is that all?!", "Yes."],
        ),
        (
            "A title without a stop\n\nA paragraph. Its\nsecond sentence.",
            ["A title without a stop", "A paragraph.", "Its second sentence."],
        ),
        (
            "He lives at No. 5 Main St. and says no. Then he leaves.",
            ["He lives at No. 5 Main St. and says no.", "Then he leaves."],
        ),
        (
            "Results improved (see Section 2.1). However, costs rose.",
            ["Results improved (see Section 2.1).", "However, costs rose."],
        ),
        ("这是第一句。这是第二句！", ["这是第一句。", "这是第二句！"]),
        ("", []),
        ("   \n\n  ", []),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def write(path, text, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
        f.write(text)
    return str(path)


def test_bert_format_documents_are_blank_line_separated(tmp_path):
    path = write(tmp_path / "a.txt", "\ufeffOne.\nTwo.\n\n\n  \nThree.\r\nFour.\n\nFive.")
    assert list(read_documents([path])) == [
        {"text": "One.\nTwo.", "presplit": True},
        {"text": "Three.\nFour.", "presplit": True},
        {"text": "Five.", "presplit": True},
    ]


def test_jsonl_documents(tmp_path):
    lines = [json.dumps({"text": "A b. C d.", "id": 1}), "", json.dumps({"text": None}), json.dumps({"body": "x"})]
    path = write(tmp_path / "a.jsonl", "\n".join(lines[:3]) + "\n")
    assert list(read_documents([path])) == [{"text": "A b. C d.", "presplit": False}]
    bad = write(tmp_path / "b.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"b\.jsonl:4: record has no 'text' field \(fields: body\)"):
        list(read_documents([bad]))
    body = write(tmp_path / "c.jsonl", lines[3] + "\n")
    assert list(read_documents([body], text_column="body")) == [{"text": "x", "presplit": False}]


def test_jsonl_that_is_not_json_lines(tmp_path):
    path = write(tmp_path / "a.json", '[{"text": "a"},\n {"text": "b"}]\n')
    with pytest.raises(UserError, match=r"a\.json:1: not a JSON object"):
        list(read_documents([path]))


def test_non_utf8_file_is_named(tmp_path):
    path = write(tmp_path / "latin.txt", "caf\xe9 au lait.\n".encode("latin-1"), mode="wb")
    with pytest.raises(UserError, match=r"latin\.txt is not UTF-8 text \(byte 0xe9"):
        list(read_documents([path]))
    binary = write(tmp_path / "blob.txt", b"abc\x00def\n", mode="wb")
    with pytest.raises(UserError, match=r"blob\.txt looks like a binary file"):
        list(read_documents([binary]))


def test_resolve_files(tmp_path):
    a = write(tmp_path / "d" / "b.txt", "x")
    b = write(tmp_path / "d" / "sub" / "a.jsonl", "{}")
    write(tmp_path / "d" / "notes.md", "x")
    write(tmp_path / "d" / ".hidden" / "c.txt", "x")
    c = write(tmp_path / "e.txt", "x")
    assert resolve_files([str(tmp_path / "d")]) == [a, b]
    assert resolve_files([str(tmp_path / "*.txt"), c]) == [c]  # duplicates dropped, order kept
    assert resolve_files([str(tmp_path / "d" / "**" / "*.jsonl")]) == [b]
    with pytest.raises(UserError, match="train file not found: .*missing.txt"):
        resolve_files([str(tmp_path / "missing.txt")])
    with pytest.raises(UserError, match="matches no files"):
        resolve_files([str(tmp_path / "*.parquet")], "train")
    os.makedirs(tmp_path / "empty")
    with pytest.raises(UserError, match="holds no .txt, .jsonl or .json files"):
        resolve_files([str(tmp_path / "empty")])


def test_demo_corpus_is_prose_in_bert_format(tmp_path, monkeypatch):
    documents = demo_documents()
    sentences = [s for d in documents for s in d]
    # topics + stdlib docstrings (~1.3 MB) and the dependencies' docstrings (~5 MB more)
    assert len(documents) > 10_000 and sum(len(s.split()) for s in sentences) > 500_000
    assert len({tuple(d) for d in documents}) == len(documents)  # deduplicated
    assert not any(
        ">>>" in s or "::=" in s or "`" in s or re.search(r"https?://\w", s) or s.startswith("*") for s in sentences
    )  # (a scheme named in prose, "for both https:// and hf:// paths", is not a URL)
    # Python's own documents first, then the dependencies' docstrings: transformers' pipeline() among them
    import inspect

    from transformers.pipelines import pipeline

    python_only = demo_documents(packages=())
    assert documents[: len(python_only)] == python_only and len(documents) > 4 * len(python_only)
    assert demo_module.docstring_prose(inspect.getdoc(pipeline)) in documents[len(python_only) :]
    monkeypatch.setattr(demo_module, "demo_documents", lambda packages: documents)  # built once above (it takes ~40 s)
    path = build_demo_corpus(str(tmp_path))
    assert build_demo_corpus(str(tmp_path)) == path  # built once
    read = list(read_documents([path]))
    assert [d["text"].split("\n") for d in read] == documents
    # another version of a dependency holds other docstrings: another file, so no cache built on the old one is hit
    monkeypatch.setattr(demo_module, "dependency_versions", lambda packages: "transformers=0.0" if packages else "")
    assert build_demo_corpus(str(tmp_path)) != path
    assert build_demo_corpus(str(tmp_path), packages=()) not in (path, build_demo_corpus(str(tmp_path)))


def test_package_files_skip_tests_and_missing_packages(tmp_path, monkeypatch):
    for folder in ("pkg", "pkg/sub", "pkg/tests", "pkg/__pycache__"):
        os.makedirs(tmp_path / folder)
    for name in ("pkg/__init__.py", "pkg/b.py", "pkg/a.py", "pkg/sub/c.py", "pkg/tests/test_x.py", "pkg/notes.txt"):
        (tmp_path / name).write_text('"""A docstring."""\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    found = [os.path.relpath(p, tmp_path) for p in demo_module.package_files(["no_such_package_here", "pkg"])]
    assert found == [os.path.join("pkg", n) for n in ("__init__.py", "a.py", "b.py")] + [os.path.join("pkg/sub/c.py")]


def test_the_cache_key_sees_a_same_size_same_time_replacement(tmp_path):
    """`cp -p` / rsync leave size and modification time as they were: the content sample still changes the key."""
    from pretrain.corpus import content_sample

    path = tmp_path / "corpus.txt"
    big = "The quick brown fox jumps over the lazy dog.\n" * 60_000  # over 1 MiB: the sampled path
    path.write_text(big)
    st = os.stat(path)
    before = content_sample(str(path))
    path.write_text(big.replace("quick", "QUICK", 1))  # same size, first piece changed
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size and os.stat(path).st_mtime_ns == st.st_mtime_ns
    assert content_sample(str(path)) != before
    small = tmp_path / "small.txt"
    small.write_text("abc\n")
    first = content_sample(str(small))
    small.write_text("abd\n")
    assert content_sample(str(small)) != first
