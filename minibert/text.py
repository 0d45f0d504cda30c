"""Plain text the CLIs and the demos share: one sentence splitter, one cleaner of Python's documentation.

- `split_sentences`: rule-based sentence splitting that needs no model or download (abbreviations, initials,
  decimals, ellipses and CJK punctuation handled), used by the corpus reader and both demos.
- `sections` / `prose`: `pydoc_data.topics` text (reST-ish) as sections of running prose, code, grammar,
  interactive sessions and tables left out.
- `docstring_prose`: a docstring's running prose, up to its first section (Args:, Parameters, Examples, ...).

Standard library only: the demos and the tests use it without the heavy dependencies.
"""

from __future__ import annotations

import re

# Never a sentence end, whatever follows: titles before names, Latin abbreviations.
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "mx",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "rev",
        "fr",
        "hon",
        "gen",
        "col",
        "lt",
        "maj",
        "sgt",
        "capt",
        "cmdr",
        "adm",
        "gov",
        "pres",
        "sen",
        "rep",
        "supt",
        "vs",
        "cf",
        "al",
        "viz",
        "approx",
        "est",
        "dept",
        "univ",
        "assn",
        "bros",
        "inc",
        "ltd",
        "co",
        "corp",
    ]
)
# Abbreviations that end sentences often enough that we only trust them before a number ("No. 5", "p. 12").
_NUMERIC_ABBREVIATIONS = frozenset(
    [
        "no",
        "nos",
        "vol",
        "vols",
        "p",
        "pp",
        "ch",
        "chap",
        "sec",
        "sect",
        "fig",
        "figs",
        "eq",
        "eqs",
        "art",
        "ref",
        "tab",
        "op",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
    ]
)
# Terminal punctuation, then closing quotes/brackets (they belong to the sentence that ends), then space.
_CANDIDATE = re.compile(r"(?P<end>[.!?…]+)(?P<close>[\"'”’)\]»]*)\s+")
_CJK_END = re.compile(r"[。！？]+[」』”’）]*")
_OPENERS = "\"'“‘([«¿¡"
_DOTTED = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")  # e.g, i.e, U.S, Ph.D (the final period is not included)
_PARAGRAPH = re.compile(r"\n\s*\n")


def split_sentences(text: str) -> list[str]:
    """Split running text into sentences with rules that need no model or download.

    Paragraphs (blank-line separated) always end a sentence; single newlines are spaces. A sentence ends at
    `.`, `!`, `?` or an ellipsis (plus any closing quotes or brackets) followed by space and a capital letter,
    a digit or an opening quote -- except after known abbreviations ("Mr.", "e.g.", "et al."), single
    initials ("J. R. R. Tolkien"), dotted acronyms ("U.S."), and number-taking abbreviations before a number
    ("No. 5"). Decimals never split (no space after the point). CJK full stops split without a space.
    """
    sentences: list[str] = []
    for paragraph in _PARAGRAPH.split(text):
        paragraph = " ".join(paragraph.split())
        if paragraph:
            for chunk in _split_cjk(paragraph):
                sentences.extend(_split_paragraph(chunk))
    return sentences


def _split_cjk(paragraph: str) -> list[str]:
    if not _CJK_END.search(paragraph):
        return [paragraph]
    pieces, start = [], 0
    for m in _CJK_END.finditer(paragraph):
        pieces.append(paragraph[start : m.end()])
        start = m.end()
    pieces.append(paragraph[start:])
    return [p.strip() for p in pieces if p.strip()]


def _split_paragraph(paragraph: str) -> list[str]:
    sentences, start = [], 0
    for m in _CANDIDATE.finditer(paragraph):
        if m.end() >= len(paragraph):
            break
        if _is_boundary(paragraph, m):
            sentences.append(paragraph[start : m.start("close") + len(m.group("close"))])
            start = m.end()
    sentences.append(paragraph[start:])
    return [s.strip() for s in sentences if s.strip()]


def _is_boundary(text: str, m: re.Match) -> bool:
    rest = text[m.end() :].lstrip(_OPENERS)
    if not rest:
        return False
    first = rest[0]
    if not (first.isupper() or first.isdigit()):
        return False
    if m.group("end") != ".":
        return True  # "?", "!", "..." and "…" before a capital: a new sentence
    word_start = text.rfind(" ", 0, m.start()) + 1
    word = text[word_start : m.start()].lstrip(_OPENERS)
    lower = word.lower()
    if lower in _ABBREVIATIONS:
        return False
    if lower in _NUMERIC_ABBREVIATIONS and first.isdigit():
        return False
    if len(word) == 1 and word.isalpha() and word.isupper():
        return False  # an initial: "J. Smith"
    return not _DOTTED.fullmatch(word)


# ---- Python's documentation as prose ----------------------------------------------------------------------
_UNDERLINE = re.compile(r"^([*=\-~^#])\1{2,}$")
_TABLE = re.compile(r"^[+|]|^=+( +=+)+$")
_BULLET = re.compile(r"^(?:[*\-+•]|\d+\.|\(\d+\)|[a-z]\))\s+")
_FOOTNOTE = re.compile(r"\[\d+\]")
_EMPHASIS = re.compile(r"\*{1,2}([^*\s][^*]*?)\*{1,2}")
_STRAY_STAR = re.compile(r'(?<!")\*+(?!")')  # markup, but not a quoted operator: "*" stays
_PROSE_CHARS = re.compile(r"[\w\s.,;:'\"()\[\]\-?!’“”—–/%&+=<>]")
_SECTION_START = re.compile(
    r"^(Args|Arguments|Parameters|Returns?|Yields|Raises|Examples?|Notes?|References|See Also|Attributes|"
    r"Example usage|Usage)\s*:?\s*$"
)
_CODE_LINE = re.compile(r"^\s*(>>>|\.\.\.|\$ |[-=~^*]{3,}|\.\. |[{}\[\]()]|def |class |import |from \w+ import)")
_ROLE = re.compile(r":\w+:`~?([^`]+)`")
_URL = re.compile(r"\s*(<https?://[^>\s]*>|https?://[^\s>]*[^\s>.,;:)])")  # a link, not the period after it


def sections(text: str) -> list[tuple[str, list[list[str]]]]:
    """(title, paragraphs) per section; a paragraph is its lines, indentation kept."""
    lines = text.splitlines()
    out: list[tuple[str, list[list[str]]]] = [("", [[]])]  # the last section's last paragraph is the open one
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
            out.append((line.strip(), [[]]))
            i += 2
            continue
        paragraphs = out[-1][1]
        if line.strip():
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
        i += 1
    # Sections without text (a heading right after a heading) and the empty open paragraphs are dropped.
    return [(title, [p for p in paragraphs if p]) for title, paragraphs in out if any(paragraphs)]


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
        text = _URL.sub("", _FOOTNOTE.sub("", text))
        text = _STRAY_STAR.sub("", _EMPHASIS.sub(r"\1", text)).replace("`", "")
        text = " ".join(text.split())
        prose_share = len(_PROSE_CHARS.findall(text)) / max(len(text), 1)
        # Signatures ("str.join(iterable)") and code lines do not end like a sentence.
        ends_like_sentence = text.rstrip("\"'”’)]").endswith((".", "?", "!", ":"))
        if len(text.split()) >= 4 and prose_share >= 0.9 and ends_like_sentence:
            kept.append(text)
    return kept


def docstring_prose(docstring: str, min_words: int = 4) -> list[str]:
    """The sentences of a docstring's running prose: up to its first section, without code, doctest, reST
    roles or lines that are mostly identifiers; each sentence ends like one and is mostly letters."""
    lines = []
    for line in docstring.splitlines():
        stripped = line.strip()
        if _SECTION_START.match(stripped):
            break
        stripped = _URL.sub("", stripped)
        if not stripped or _CODE_LINE.match(stripped) or stripped.count("_") > 3:
            lines.append("")
            continue
        lines.append(_ROLE.sub(r"\1", stripped).replace("``", "").replace("`", "").replace("*", ""))
    sentences = []
    for paragraph in "\n".join(lines).split("\n\n"):
        for sentence in split_sentences(" ".join(paragraph.split())):
            letters = sum(c.isalpha() or c == " " for c in sentence)
            if len(sentence.split()) >= min_words and sentence[-1] in ".!?" and letters > 0.85 * len(sentence):
                sentences.append(sentence)
    return sentences
