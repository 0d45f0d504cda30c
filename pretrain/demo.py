"""The demo corpus: English prose that ships with every Python install, so the main job needs no download.

`pydoc_data.topics.topics` holds the language reference's topics as plain text with a little reST markup
(~80 topics, ~465 KB). Each section of a topic (a heading and what follows, up to the next heading) becomes one
document; grammar rules, code samples, interactive sessions and tables are left out, emphasis markers and
backticks are dropped, and the prose is split into sentences. Sections shared by several topics are kept once.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile

from pretrain.corpus import split_sentences

_UNDERLINE = re.compile(r"^([*=\-~^#])\1{2,}$")
_TABLE = re.compile(r"^[+|]|^=+( +=+)+$")
_BULLET = re.compile(r"^(?:[*\-+•]|\d+\.|\(\d+\)|[a-z]\))\s+")
_FOOTNOTE = re.compile(r"\[\d+\]")
_EMPHASIS = re.compile(r"\*{1,2}([^*\s][^*]*?)\*{1,2}")
_STRAY_STAR = re.compile(r'(?<!")\*+(?!")')  # markup, but not a quoted operator: "*" stays
_PROSE_CHARS = re.compile(r"[\w\s.,;:'\"()\[\]\-?!’“”—–/%&+=<>]")

VERSION = 1  # bump when the cleaning changes: the file name, and so every cache built on it, changes too


def sections(text: str) -> list[tuple[str, list[list[str]]]]:
    """(title, paragraphs) per section; a paragraph is its lines, indentation kept."""
    lines = text.splitlines()
    out: list[tuple[str, list[list[str]]]] = []
    title, paragraphs, current = "", [], []
    i = 0
    while i < len(lines):
        line = lines[i]
        is_heading = (
            i + 1 < len(lines)
            and line.strip()
            and _UNDERLINE.match(lines[i + 1].strip())
            and abs(len(lines[i + 1].strip()) - len(line.strip())) <= 3
        )
        if is_heading:
            if current:
                paragraphs.append(current)
            if paragraphs:
                out.append((title, paragraphs))
            title, paragraphs, current = line.strip(), [], []
            i += 2
            continue
        if line.strip():
            current.append(line)
        elif current:
            paragraphs.append(current)
            current = []
        i += 1
    if current:
        paragraphs.append(current)
    if paragraphs:
        out.append((title, paragraphs))
    return out


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def prose(paragraphs: list[list[str]]) -> list[str]:
    """The paragraphs that are running text, cleaned; code, grammar, sessions and tables left out."""
    kept: list[str] = []
    previous_indent, previous_colon = 0, False
    literal_indent: int | None = None
    for lines in paragraphs:
        first = lines[0]
        indent = _indent(first)
        joined = "\n".join(lines)
        # A block indented under a paragraph that ends in ":" is a literal block (code, output, grammar) and
        # so is everything after it at that indentation or deeper, blank lines notwithstanding.
        if literal_indent is not None and indent >= literal_indent:
            continue
        literal_indent = None
        if previous_colon and indent >= previous_indent + 3:
            literal_indent = indent
            continue
        previous_indent, previous_colon = indent, joined.rstrip().endswith(":")
        if ">>>" in joined or "::=" in joined or "(Pdb)" in joined or _TABLE.match(first.strip()):
            continue
        text = " ".join(line.strip() for line in lines)
        text = _BULLET.sub("", text)
        text = _FOOTNOTE.sub("", text)
        text = _STRAY_STAR.sub("", _EMPHASIS.sub(r"\1", text)).replace("`", "")
        text = " ".join(text.split())
        prose_share = len(_PROSE_CHARS.findall(text)) / max(len(text), 1)
        # Signatures ("str.join(iterable)") and code lines do not end like a sentence.
        ends_like_sentence = text.rstrip("\"'”’)]").endswith((".", "?", "!", ":"))
        if len(text.split()) >= 4 and prose_share >= 0.9 and ends_like_sentence:
            kept.append(text)
    return kept


def demo_documents() -> list[list[str]]:
    """The documents (each a list of sentences) of the demo corpus, in topic order, duplicates removed."""
    from pydoc_data.topics import topics

    documents, seen = [], set()
    for name in sorted(topics):
        for _title, paragraphs in sections(topics[name]):
            sentences = [s for paragraph in prose(paragraphs) for s in split_sentences(paragraph)]
            key = hashlib.sha1("\n".join(sentences).encode()).hexdigest()
            if len(sentences) >= 2 and key not in seen:
                seen.add(key)
                documents.append(sentences)
    return documents


def build_demo_corpus(directory: str) -> str:
    """Write the demo corpus to `directory` in BERT format (a sentence per line, blank line between documents).

    Returns the file's path. The name carries a hash of Python's version and of this module's VERSION, so the
    file, and every cache keyed on it, is rebuilt only when its content could change. Written atomically.
    """
    from pydoc_data.topics import topics

    digest = hashlib.sha1(f"{VERSION}:{sys.version}:{len(topics)}".encode()).hexdigest()[:10]
    path = os.path.join(directory, f"pydoc_topics-{digest}.txt")
    if os.path.isfile(path):
        return path
    os.makedirs(directory, exist_ok=True)
    text = "\n\n".join("\n".join(document) for document in demo_documents()) + "\n"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".demo-", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


# ---- the demo corpus in a run: its description, its prompts ------------------------------------------------
def describe_data(data_args) -> str:
    if getattr(data_args, "dataset_name", None):
        config = f" ({data_args.dataset_config_name})" if getattr(data_args, "dataset_config_name", None) else ""
        return f"the `{data_args.dataset_name}`{config} dataset"
    files = getattr(data_args, "train_file", None) or []
    if isinstance(files, str):
        files = [files]
    if files:
        return ", ".join(f"`{os.path.basename(f)}`" for f in files)
    return "the embedded demo corpus (Python's documentation topics, `pydoc_data.topics`)"


def uses_demo_corpus(data_args) -> bool:
    return not getattr(data_args, "dataset_name", None) and not getattr(data_args, "train_file", None)


# Sentences in the demo corpus's domain (Python's language reference), each with one [MASK].
DEMO_PROMPTS = [
    'The "for" statement is used to iterate over the [MASK] of a sequence.',
    'The "while" statement is used for repeated [MASK] as long as an expression is true.',
    'The return value of a [MASK] is determined by the last "return" statement.',
    "When an [MASK] is not handled at all, the interpreter terminates execution of the program.",
    'A "break" statement executed in the first suite terminates the [MASK].',
]


def fill_mask_prompts(args, data_args) -> list[str]:
    """--fill_mask_prompts, or for the demo corpus sentences from its domain."""
    if args.fill_mask_prompts is not None:
        return args.fill_mask_prompts
    return DEMO_PROMPTS if uses_demo_corpus(data_args) else []
