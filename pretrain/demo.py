"""The demo corpus: English prose that ships with every Python install and with minibert's own dependencies, so
the main job needs no download.

Three sources, all read without importing anything:
- `pydoc_data.topics.topics`: the language reference's topics as plain text with a little reST markup (~80
  topics). Each section of a topic (a heading and what follows, up to the next heading) becomes one document;
  grammar rules, code samples, interactive sessions and tables are left out (`minibert.text.prose`).
- the docstrings of the standard library's modules, classes and functions, read with `ast` from the source files
  (tests, idlelib, tkinter, turtledemo and lib2to3 left out): each docstring's running prose, up to its first
  section (`minibert.text.docstring_prose`), is one document.
- the docstrings of the installed dependencies (`DEPENDENCY_PACKAGES`: transformers, torch, numpy, datasets,
  tokenizers, accelerate), read the same way: about 5x the text of the first two. With Python's documentation
  alone (190k training tokens) the demo's pretraining went over the same text 3 times in 600 steps and did not
  carry over to a new task; with this text, 3,000 steps did in every pretraining seed tried (BENCHMARKS.md, "What
  pretraining bought").

Documents are deduplicated; the file is written once per Python version, dependency versions and `VERSION`, and
cached.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import sys
import sysconfig
import tempfile
from collections.abc import Iterator

from minibert.text import docstring_prose, prose, sections, split_sentences

VERSION = 3  # bump when the cleaning changes: the file name, and so every cache built on it, changes too


# minibert's own stack (numpy comes with torch and datasets): installed with it, so their docstrings need no download.
DEPENDENCY_PACKAGES = ("transformers", "torch", "numpy", "datasets", "tokenizers", "accelerate")


def demo_documents(packages=DEPENDENCY_PACKAGES) -> list[list[str]]:
    """The documents (each a list of sentences) of the demo corpus: the pydoc topics' sections in topic order,
    then the standard library's docstrings in file order, then the dependencies' docstrings in package and file
    order (`packages`; none gives Python's documentation alone); duplicates removed."""
    from pydoc_data.topics import topics

    documents, seen = [], set()

    def add(sentences: list[str], min_sentences: int) -> None:
        key = hashlib.sha1("\n".join(sentences).encode()).hexdigest()
        if len(sentences) >= min_sentences and key not in seen:
            seen.add(key)
            documents.append(sentences)

    for name in sorted(topics):
        for _title, paragraphs in sections(topics[name]):
            add([s for paragraph in prose(paragraphs) for s in split_sentences(paragraph)], 2)
    for docstring in stdlib_docstrings():
        add(docstring_prose(docstring), 1)
    for path in package_files(packages):
        for docstring in file_docstrings(path):
            add(docstring_prose(docstring), 1)
    return documents


_SKIPPED = {"test", "tests", "idlelib", "tkinter", "turtledemo", "lib2to3", "site-packages", "ensurepip", "__pycache__"}


def stdlib_docstrings() -> Iterator[str]:
    """Module, class and function docstrings of the standard library's source files, in a fixed order."""
    for path in stdlib_files():
        yield from file_docstrings(path)


def stdlib_files() -> Iterator[str]:
    """The standard library's .py files, in a fixed order (the folders in `_SKIPPED` left out)."""
    root = sysconfig.get_paths()["stdlib"]
    for base, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED and not d.startswith("."))
        for name in sorted(f for f in files if f.endswith(".py")):
            yield os.path.join(base, name)


def package_files(packages) -> Iterator[str]:
    """The .py files of installed packages (found without importing them), package by package in a fixed order;
    test folders left out, a package that is not installed skipped."""
    for package in packages:
        spec = importlib.util.find_spec(package)
        roots = spec.submodule_search_locations if spec is not None else None
        for root in roots or []:
            for base, dirs, files in os.walk(root):
                dirs[:] = sorted(d for d in dirs if d not in ("tests", "test", "__pycache__"))
                for name in sorted(f for f in files if f.endswith(".py")):
                    yield os.path.join(base, name)


def dependency_versions(packages=DEPENDENCY_PACKAGES) -> str:
    """The installed versions of `packages`: their docstrings, so the corpus, change with them."""
    found = []
    for package in packages:
        try:
            found.append(f"{package}={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{package}=-")
    return ",".join(found)


def file_docstrings(path: str) -> list[str]:
    """The module, class and function docstrings of one Python source file, read with `ast` (nothing imported)."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return []  # a file of another Python version, or unreadable: not prose we need
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docstrings = (ast.get_docstring(node) for node in ast.walk(tree) if isinstance(node, kinds))
    return [d for d in docstrings if d]


def build_demo_corpus(directory: str, packages=DEPENDENCY_PACKAGES) -> str:
    """Write the demo corpus to `directory` in BERT format (a sentence per line, blank line between documents).

    Returns the file's path. The name carries a hash of Python's version, the dependencies' versions and this
    module's VERSION, so the file, and every cache keyed on it, is rebuilt only when its content could change.
    Written atomically.
    """
    from pydoc_data.topics import topics

    key = f"{VERSION}:{sys.version}:{len(topics)}:{dependency_versions(packages)}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    path = os.path.join(directory, f"python_docs-{digest}.txt")
    if os.path.isfile(path):
        return path
    os.makedirs(directory, exist_ok=True)
    logging.getLogger(__name__).info(
        "Building the demo corpus from Python's documentation%s (once per version; ~40 s with the dependencies)",
        f" and the docstrings of {', '.join(packages)}" if packages else "",
    )
    text = "\n\n".join("\n".join(document) for document in demo_documents(packages)) + "\n"
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
    return (
        "the embedded demo corpus (Python's documentation topics, standard-library docstrings and the docstrings of "
        "minibert's installed dependencies)"
    )


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


# ---- what the demo learnt: baselines and held-out prompts ----------------------------------------------------
# Words too common to test what a model learnt of the text (a unigram model already guesses them).
STOPWORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this that these "
    "those there their then than not no can may must will would should which who whom what when where how all any "
    "each other such only also into over under between same so do does did has have had".split()
)


def unigram_baseline(train_ids, eval_ids, special_ids) -> tuple[int, float]:
    """(the most frequent training token, its share of the held-out tokens a collator may mask): the accuracy of
    always guessing that token at masked positions, which are drawn uniformly from those tokens."""
    import numpy as np

    special = np.asarray(sorted(special_ids))
    train = np.concatenate([np.asarray(x) for x in train_ids])
    counts = np.bincount(train[~np.isin(train, special)])
    top = int(counts.argmax())
    held_out = np.concatenate([np.asarray(x) for x in eval_ids])
    held_out = held_out[~np.isin(held_out, special)]
    return top, float((held_out == top).mean()) if held_out.size else 0.0


def heldout_prompts(eval_ids, tokenizer, train_counts, n: int = 20, seed: int = 0) -> list[tuple[str, str]]:
    """(prompt with one [MASK], the true word) from held-out sentences: the masked word is a content word (not a
    stopword, letters only, 4+ characters) that the tokenizer keeps whole and that training text holds 5+ times."""
    import random

    rng = random.Random(seed)
    candidates = []
    for ids in eval_ids:
        segment = []
        for token in [*ids[1:], tokenizer.sep_token_id]:
            if token != tokenizer.sep_token_id:
                segment.append(token)
                continue
            words = tokenizer.convert_ids_to_tokens(segment)
            if 8 <= len(segment) <= 40:
                for i, word in enumerate(words):
                    whole = not word.startswith("##") and (i + 1 == len(words) or not words[i + 1].startswith("##"))
                    content = word.isalpha() and len(word) >= 4 and word not in STOPWORDS
                    if whole and content and train_counts.get(segment[i], 0) >= 5:
                        candidates.append((segment, i, word))
            segment = []
    rng.shuffle(candidates)
    prompts, seen = [], set()
    for segment, i, word in candidates:
        text = tokenizer.decode(segment[:i]) + f" {tokenizer.mask_token} " + tokenizer.decode(segment[i + 1 :])
        text = " ".join(text.split()).replace(" .", ".").replace(" ,", ",")
        if text not in seen:
            seen.add(text)
            prompts.append((text, word))
        if len(prompts) == n:
            break
    return prompts


def report_what_was_learnt(output_dir: str, data, result: dict, shown: int = 8) -> dict:
    """Print held-out MLM accuracy next to chance and the unigram baseline, and fill-mask on held-out sentences
    with the true word beside the top-5 guesses; returns the figures."""
    from collections import Counter

    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    import minibert  # noqa: F401  (registers MiniBERT with the Auto classes)

    tokenizer = data.tokenizer
    train_ids = data.train_dataset["input_ids"]
    eval_ids = data.eval_dataset["input_ids"] if data.eval_dataset is not None else []
    top, unigram = unigram_baseline(train_ids, eval_ids, tokenizer.all_special_ids)
    counts = Counter(i for ids in train_ids for i in ids)
    prompts = heldout_prompts(eval_ids, tokenizer, counts)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        fill = pipeline("fill-mask", model=output_dir, top_k=5)
    finally:
        hf_logging.set_verbosity(verbosity)
    top1 = top5 = 0
    lines = []
    for prompt, word in prompts:
        guesses = [p["token_str"].strip() for p in fill(prompt)]
        top1 += guesses[0] == word
        top5 += word in guesses
        lines.append(f"  {prompt}\n      true: {word:<14} guesses: {', '.join(guesses)}")
    vocab = result.get("vocab_size") or len(tokenizer)
    accuracy = result.get("eval_mlm_accuracy", float("nan"))
    print(
        f"\nheld-out MLM accuracy {accuracy:.3f}; chance 1/{vocab} = {1 / vocab:.4f}; always guessing the most "
        f"frequent training token ({tokenizer.convert_ids_to_tokens(top)!r}) {unigram:.3f}"
    )
    if prompts:
        print(
            f"\nfill-mask on {len(prompts)} held-out sentences (a content word masked): true word top-1 "
            f"{top1}/{len(prompts)}, in the top 5 {top5}/{len(prompts)}"
        )
        print("\n".join(lines[:shown]))
        if top5 < len(prompts) / 4:  # say why, with the run's own figures
            tokens = result.get("train_tokens", 0)
            print(
                f"  (why so few: {tokens:,} tokens of training teach a tiny model which function words and punctuation "
                f"fit a context (held-out accuracy {accuracy / max(unigram, 1e-9):.1f}x the unigram baseline's), not "
                "yet the content words, which take far more training than a few CPU minutes give; BENCHMARKS.md "
                "has the demo's figures)"
            )
    figures = {"unigram_accuracy": unigram, "heldout_top1": top1, "heldout_top5": top5, "heldout_prompts": len(prompts)}
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:  # fine-tuning here is one process's work; a launch ends earlier
        gain = pretraining_gain(output_dir, text_segments(eval_ids, tokenizer))
        report_gain(gain)
        figures.update(gain)
    if "eval_nsp_accuracy" in result:  # BERT's recipe ran: say what the other one does with the same budget
        print(FAST_RECIPE_NOTE)
    return figures


# ---- what pretraining bought: the demo model against the same architecture from random weights ------------------
# The task: is a sentence as written, or its words shuffled? (CoLA-like acceptability.) Both classes hold the same
# words, so a bag of words cannot tell them apart: only word order can, which masked-LM pretraining learns from raw
# text and a model from random weights must learn from the labels. Every sentence of the task, for training and for
# testing, comes from the held-out documents pretraining never saw (demo.yaml holds 30% of them out): fine-tuned on
# sentences of its own training text, the pretrained model learns "familiar means as written", which held-out text
# contradicts (BENCHMARKS.md, "What pretraining bought"). Which part of the language reference a sentence comes from
# (finetune/demo.py) and which stdlib package a docstring comes from were measured too: random weights did better.
# Part of what the fine-tuned models learn is where the sentence's final period stands; with it kept at the end and
# only the other words shuffled (`bench_demo_gain.py --task word_order_period_kept`), random weights stay at chance
# and the model pretrained by this demo leads in three pretraining seeds of four (+0.002 to +0.101): it learnt some
# word order itself. With Python's documentation alone as the corpus (190k training tokens, 600 steps) it did not.
# `--recipe fast` against BERT's recipe, quoted only where it holds on text it was not tuned on (the demo's text
# shares the stdlib docstrings `fast` was tuned on): BENCHMARKS.md, "On text the recipe was not tuned on" (issue 26).
FAST_RECIPE_NOTE = (
    "\nfor a model that learns more per CPU second: `bash run.sh pretrain --recipe fast` (pre-LN, no biases, MLM only: "
    "no next-sentence head, not BERT's architecture); at equal training time it reached +0.03 held-out MLM accuracy "
    "over BERT's recipe on text it was not tuned on (man pages, other packages' docstrings; two seeds each, beyond "
    "their spread: BENCHMARKS.md)"
)
GAIN_EPOCHS = 5.0
GAIN_SEED = 0
GAIN_REPEATS = 3  # held-out splits, each fine-tuned both ways (~5 s a run on 2 quiet cores); their mean is reported
GAIN_LEARNING_RATE = None  # minibert-finetune's default for the model's width
GAIN_TRAIN_ROWS = 1000  # held-out sentences to fine-tune on, at most two thirds of them; the rest is the test


def gain_sentences(held_out: list[str], seed: int = GAIN_SEED) -> tuple[list[str], list[str]]:
    """(training, test) sentences of the gain task, both from held-out text: a seeded shuffle, then up to
    `GAIN_TRAIN_ROWS` (and at most two thirds) to fine-tune on, the rest to score."""
    import random

    sentences = list(held_out)
    random.Random(seed).shuffle(sentences)
    n_train = min(GAIN_TRAIN_ROWS, 2 * len(sentences) // 3)
    return sentences[:n_train], sentences[n_train:]


# Measured (BENCHMARKS.md, "What pretraining bought"): the gap moves with the pretraining seed (which documents are
# held out, the initialisation, the data order), so the summary quotes that spread beside its own run.
GAIN_MEASURED = (
    "measured for the default demo (3,000 steps on Python's documentation and its dependencies' docstrings) over "
    "pretraining seeds 7, 11, 13, 17, 23, 29 and 42: gaps of +0.087, +0.117, +0.085, +0.041, +0.048, +0.114 and "
    "+0.072 (mean +0.081), pretrained ahead in every seed; BENCHMARKS.md has the runs"
)


def text_segments(eval_ids, tokenizer, min_tokens: int = 8, max_tokens: int = 40) -> list[str]:
    """The text segments (between [CLS] / [SEP]) of 8-40 tokens in tokenized examples, decoded, deduplicated."""
    special = {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id}
    found, seen = [], set()
    for ids in eval_ids:
        segment = []
        for token in [*ids, tokenizer.sep_token_id]:
            if token not in special:
                segment.append(token)
                continue
            if min_tokens <= len(segment) <= max_tokens:
                text = tokenizer.decode(segment)
                if text not in seen:
                    seen.add(text)
                    found.append(text)
            segment = []
    return found


def word_order_task(
    train_sentences: list[str], test_sentences: list[str], seed: int = 0, keep_final_punctuation: bool = False
) -> dict[str, list[dict]]:
    """Rows {"sentence", "label"} per split: each sentence as written (`original`) or with its words shuffled
    (`shuffled`), a seeded draw per sentence, so that every sentence is in its split once.

    `keep_final_punctuation` (a benchmark variant): a final `.`, `?` or `!` (or a last word ending in `.`) stays at
    the end and only the words before it are shuffled, so where the period stands no longer tells the classes apart."""
    import random

    rng = random.Random(seed)

    def rows(sentences):
        made = []
        for sentence in sentences:
            words = sentence.split()
            ends = keep_final_punctuation and (words[-1] in {".", "?", "!"} or words[-1].endswith("."))
            body, end = (words[:-1], words[-1:]) if ends else (words, [])
            if len(set(body)) < 2:
                continue
            shuffled = body[:]
            while shuffled == body:
                rng.shuffle(shuffled)
            label = rng.choice(["original", "shuffled"])
            made.append({"sentence": " ".join((body if label == "original" else shuffled) + end), "label": label})
        return made

    return {"train": rows(train_sentences), "test": rows(test_sentences)}


def pretraining_gain(
    model_dir: str,
    held_out: list[str],
    repeats: int = GAIN_REPEATS,
    epochs: float = GAIN_EPOCHS,
    seed: int = GAIN_SEED,
    learning_rate: float | None = GAIN_LEARNING_RATE,
) -> dict:
    """Fine-tune `model_dir` and the same architecture from random weights (`--from_scratch`: its config and
    tokenizer, fresh weights) on the word-order task made from `held_out` sentences, with the same data, steps,
    learning rate and seed, through `finetune.train.finetune`, the code of `minibert-finetune`; `repeats` times, each
    with its own split of the sentences (`gain_sentences`), shuffles and seed, since one split of a few hundred test
    sentences moves the gap by several points. Returns the mean test accuracies, each split's, and chance; writes
    nothing that stays."""
    import contextlib
    import csv
    import io
    import logging
    import time
    from collections import Counter

    from transformers.utils import logging as hf_logging

    from finetune.train import finetune

    def fine_tuned_accuracy(scratch: bool, paths: dict[str, str], output_dir: str, seed: int) -> float:
        """One arm through `finetune`, its output captured (printed only if it fails)."""
        log = io.StringIO()
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                metrics = finetune(
                    model_name_or_path=model_dir,
                    from_scratch=scratch,
                    train_file=paths["train"],
                    test_file=paths["test"],
                    validation_split_percentage=0,  # trained for the budget, then scored on the test split
                    output_dir=output_dir,
                    num_train_epochs=epochs,
                    learning_rate=learning_rate,
                    seed=seed,
                    logging_steps=10**6,
                    eval_steps=10**6,  # no Trainer checkpoint on the way: the final model is scored
                    num_examples_shown=0,
                    save_total_limit=1,
                )
        except BaseException:
            print(log.getvalue()[-3000:], file=sys.stderr)  # what the run said before it failed
            raise
        return metrics["test_accuracy"]

    runs = {"pretrained": [], "scratch": [], "chance": []}
    quiet = logging.getLogger("finetune")
    level, verbosity = quiet.level, hf_logging.get_verbosity()
    start = time.perf_counter()
    quiet.setLevel(logging.WARNING)
    hf_logging.set_verbosity_error()  # also turns the Trainer's progress bar off
    try:
        for repeat in range(repeats):
            splits = word_order_task(*gain_sentences(held_out, seed + repeat), seed=seed + repeat)
            majority = Counter(row["label"] for row in splits["train"]).most_common(1)[0][0]
            runs["chance"].append(sum(row["label"] == majority for row in splits["test"]) / len(splits["test"]))
            with tempfile.TemporaryDirectory(prefix="minibert-gain-") as work:
                paths = {}
                for split, rows in splits.items():
                    paths[split] = os.path.join(work, f"{split}.csv")
                    with open(paths[split], "w", encoding="utf-8", newline="") as f:
                        writer = csv.DictWriter(f, fieldnames=["sentence", "label"])
                        writer.writeheader()
                        writer.writerows(rows)
                for name, scratch in (("pretrained", False), ("scratch", True)):
                    runs[name].append(fine_tuned_accuracy(scratch, paths, os.path.join(work, name), seed + repeat))
    finally:
        quiet.setLevel(level)
        hf_logging.set_verbosity(verbosity)
    figures = {
        "gain_train_rows": len(splits["train"]),
        "gain_test_rows": len(splits["test"]),
        "gain_epochs": epochs,
        "gain_repeats": repeats,
        "gain_seconds": time.perf_counter() - start,
    }
    for name, values in runs.items():
        key = "gain_chance_majority" if name == "chance" else f"gain_{name}_accuracy"
        figures[key] = sum(values) / len(values)
        figures[f"{key}_runs"] = values
    return figures


def report_gain(figures: dict) -> None:
    """Print the comparison beside chance (the mean over the held-out splits, and each split's), and say so plainly
    when a run does not show a gain."""
    pretrained, scratch = figures["gain_pretrained_accuracy"], figures["gain_scratch_accuracy"]
    gap = pretrained - scratch
    pairs = list(zip(figures["gain_pretrained_accuracy_runs"], figures["gain_scratch_accuracy_runs"]))
    wins = sum(p > s for p, s in pairs)

    def each(key: str) -> str:
        return ", ".join(f"{value:.3f}" for value in figures[f"{key}_runs"])

    print(
        f"\nwhat pretraining bought: a task neither model was trained for (is a held-out sentence as written, or its "
        f"words shuffled? the same words either way), both models fine-tuned on the same {figures['gain_train_rows']} "
        f"labelled sentences of held-out text for {figures['gain_epochs']:g} epochs, same seed, scored on "
        f"{figures['gain_test_rows']} other held-out sentences; mean accuracy over {len(pairs)} splits of the held-out "
        f"text ({figures['gain_seconds']:.0f} s):\n"
        f"  this pretrained model             {pretrained:.3f}   ({each('gain_pretrained_accuracy')})\n"
        f"  same architecture, random weights {scratch:.3f}   ({each('gain_scratch_accuracy')})\n"
        f"  chance                            {figures['gain_chance_majority']:.3f}   (always the most frequent class)"
    )
    if gap >= 0.05 and wins == len(pairs):
        print(f"  pretraining added {gap:+.3f}: what it learnt from raw text carries over to the new task")
    elif gap > -0.05:
        print(f"  this run shows no clear gain ({gap:+.3f}; pretrained ahead in {wins} of {len(pairs)} splits)")
    else:
        print(
            f"  random weights did better in this run ({gap:+.3f}; pretrained ahead in {wins} of {len(pairs)} splits)"
        )
    print(f"  ({GAIN_MEASURED})")
