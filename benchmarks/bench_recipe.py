"""Time to quality: the faithful BERT recipe against `--recipe fast`, at the same wall-clock budget, judged on
text the recipe was not tuned on.

    python benchmarks/bench_recipe.py                        # the untuned corpora, seeds 0 1, 3 minutes each, tiny
    python benchmarks/bench_recipe.py --corpus man docstrings_other --seeds 0 1 2
    python benchmarks/bench_recipe.py --corpus tune --size mini --seq_length 128 --minutes 10
    python benchmarks/bench_recipe.py --ablate remove --corpus man --knobs no_bias mask_30  # knobs out of `fast`
    python benchmarks/bench_recipe.py --ablate add --corpus man                             # knobs into bert

Corpora (`--corpus`, CORPORA), English prose that ships with the machine or its packages: `tune`, the docstrings
of the stdlib and of the packages `fast` was tuned on (PACKAGES); and three it was not tuned on (`untuned`):
`docstrings_other`, another package family's docstrings (OTHER_PACKAGES); `man`, the man pages Debian packages
install (roff read by `man_page_prose`); `pydocs`, Python's own documentation (`pydoc_data.topics`). Docstrings
are read with `ast` (nothing imported) and cleaned as the demo corpus's are (`minibert.text.docstring_prose`).
A corpus this machine lacks (CI has no man pages) is reported as missing and not measured. Each corpus is split by
a hash of its document's file, page or section into pretraining text, held-out documents (the MLM figures) and a
downstream task's documents (which package / manual section; word order for pydocs), so that neither the MLM
figures nor fine-tuning read text pretraining saw.

Both recipes get the same model size, the same WordPiece tokenizer (one per corpus, trained beforehand), the same
sequence length and batch, and the same budget of training time (`--time_budget`, with `--schedule_by time`
for both, so that each one's LR schedule ends where the budget does: a step-scheduled faithful run cut by the
budget would be unfairly left at a high LR). The two runs of a seed go *concurrently*, one thread each, so that
the load of a shared machine falls on both alike. The final models are then scored on the held-out documents in
both formats (NSP pairs, packed text) with the MLM head alone at 15% masking, the same masked sequences for every
model, and fine-tuned alike (`minibert-finetune`). Over `--seeds`, each measure is reported as mean and spread
(max - min); a difference of means within the spread is reported as "no difference".
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PACKAGES = [
    "torch",
    "transformers",
    "numpy",
    "scipy",
    "sklearn",
    "datasets",
    "pandas",
    "accelerate",
    "huggingface_hub",
    "tokenizers",
    "matplotlib",
    "pyarrow",
    "onnx",
    "peft",
    "sentence_transformers",
]
TASK_LABELS = ["stdlib", "torch", "transformers", "numpy", "scipy", "sklearn"]
SIZES = {  # --config_overrides of the model, the same for both recipes
    "tiny": "hidden_size=128,num_hidden_layers=2,num_attention_heads=2,intermediate_size=512",
    "mini": "hidden_size=256,num_hidden_layers=4,num_attention_heads=4,intermediate_size=1024",
}
# Each knob of `fast`: (flags that add it to the faithful run, flags that take it out of the fast run), for
# --ablate add / --ablate remove. Config entries merge with the size's (and the recipe's) entry by entry.
KNOBS = {
    "pre_ln": (["--config_overrides", "pre_layer_norm=true"], ["--config_overrides", "pre_layer_norm=false"]),
    "geglu": (["--config_overrides", "gated_feed_forward=true"], ["--config_overrides", "gated_feed_forward=false"]),
    "no_bias": (
        ["--config_overrides", "attention_bias=false,mlp_bias=false"],
        ["--config_overrides", "attention_bias=true,mlp_bias=true"],
    ),
    "no_dropout": (
        ["--config_overrides", "hidden_dropout_prob=0,attention_probs_dropout_prob=0"],
        ["--config_overrides", "hidden_dropout_prob=0.1,attention_probs_dropout_prob=0.1"],
    ),
    "mlm_only": (["--next_sentence_prediction", "false"], ["--next_sentence_prediction", "true"]),
    "mask_30": (["--mlm_probability", "0.3"], ["--mlm_probability", "0.15"]),
    "wsd_1sqrt": (
        ["--lr_scheduler_type", "warmup_stable_decay", "--lr_decay_ratio", "0.3"],
        ["--lr_scheduler_type", "linear"],
    ),
    "lr_1e-3": (
        ["--learning_rate", "1e-3", "--adam_beta2", "0.98"],
        ["--learning_rate", "1e-4", "--adam_beta2", "0.999"],
    ),
}


# --------------------------------------------------------------------------------------------------------------
# The corpora and their tasks
# --------------------------------------------------------------------------------------------------------------
# Packages whose docstrings `fast` was never tuned on: another family (symbolic maths, graphs, templating,
# packaging and CLI tools, validation, highlighting, testing), none of them in PACKAGES.
OTHER_PACKAGES = [
    "sympy",
    "networkx",
    "mpmath",
    "jinja2",
    "pip",
    "setuptools",
    "pygments",
    "rich",
    "click",
    "pydantic",
    "fsspec",
    "_pytest",
]
OTHER_TASK_LABELS = ["sympy", "networkx", "pip", "pydantic", "setuptools", "pygments"]  # 133+ task docstrings each
MAN_SECTIONS = ["1", "2", "3", "7", "8"]  # the task's classes: sections with enough pages (5 and 6 have few)
CORPORA = {
    "tune": "docstrings of the stdlib and of the packages `fast` was tuned on (PACKAGES); task: which package",
    "docstrings_other": "docstrings of another package family (OTHER_PACKAGES); task: which package",
    "man": "English man pages the Debian packages install (/usr/share/man/man*); task: which manual section",
    "pydocs": "Python's own documentation (pydoc_data.topics, by section); task: words in order or shuffled",
}
UNTUNED = [name for name in CORPORA if name != "tune"]


class MissingCorpus(Exception):
    """A corpus this machine does not have (CI has no man pages, a package may not be installed)."""


def _hash_share(key: str) -> int:
    """0-99 from a hash of a document's key: the same split on every machine and run."""
    return int(hashlib.sha1(key.encode()).hexdigest(), 16) % 100


def _package_files(packages: list[str]) -> list[tuple[str, str]]:
    from pretrain.demo import package_files

    return [(package, path) for package in packages for path in package_files([package])]


def _docstring_documents(files: list[tuple[str, str]]) -> list[tuple[str, str, list[str]]]:
    """(label, key, sentences) per docstring, cleaned as the demo corpus's are, deduplicated; key: its file."""
    from minibert.text import docstring_prose
    from pretrain.demo import file_docstrings

    seen, out = set(), []
    for label, path in files:
        for doc in file_docstrings(path):
            sentences = docstring_prose(doc)
            key = " ".join(sentences)
            if sentences and key not in seen:
                seen.add(key)
                out.append((label, path, sentences))
    return out


def tune_documents() -> list[tuple[str, str, list[str]]]:
    from pretrain.demo import stdlib_files

    return _docstring_documents([("stdlib", p) for p in stdlib_files()] + _package_files(PACKAGES))


def other_docstring_documents() -> list[tuple[str, str, list[str]]]:
    files = _package_files(OTHER_PACKAGES)
    found = {label for label, _ in files}
    if not set(OTHER_TASK_LABELS) <= found:
        raise MissingCorpus(f"packages not installed: {', '.join(sorted(set(OTHER_TASK_LABELS) - found))}")
    return _docstring_documents(files)


_ROFF_FONT = re.compile(r"\\f(\[[^\]]*\]|\(..|.)")
_ROFF_NAMED = {"em": "-", "en": "-", "aq": "'", "dq": '"', "lq": '"', "rq": '"', "oq": "'", "cq": "'", "mi": "-"}
_ROFF_ESCAPE = re.compile(r"\\(\(..|\[[^\]]*\]|\*\(..|\*\[[^\]]*\]|\*.|[-e&|^/,)%~ 0c:])")
_ROFF_TEXT_MACROS = {".B", ".I", ".BR", ".IR", ".RB", ".RI", ".BI", ".IB", ".SM", ".SB"}
_ROFF_BREAKS = {".PP", ".LP", ".P", ".TP", ".IP", ".HP", ".SS", ".sp", ".br", ".RS", ".RE", ".TQ"}


def _roff_escape(m: re.Match) -> str:
    code = m.group(1)
    if code.startswith("(") or code.startswith("["):
        return _ROFF_NAMED.get(code.strip("([]"), "")
    return {"-": "-", "e": "\\", " ": " ", "0": " ", "~": " "}.get(code, "")


def man_page_prose(source: str) -> list[list[str]]:
    """The running prose of a man page's roff source (man macros), as paragraphs of sentences: text lines and
    the text of font macros kept, escapes resolved, no-fill blocks (examples, synopses) and tables left out.

    Written by hand because rendering 20,000 pages with groff takes longer than the benchmark; what it misses
    (rare macros) only drops text, and every sentence still passes the same prose test as the docstrings'."""
    from minibert.text import split_sentences

    paragraphs, current, fill, section, tag_next = [], [], True, "", False
    for raw in source.splitlines():
        line = raw.rstrip()
        if line.startswith((".", "'")):
            parts = line.split(None, 1)
            macro = parts[0] if parts else "."
            tag_next = macro in (".TP", ".TQ")  # the line after .TP is a tag (an option's name), not prose
            if macro in (".nf", ".EX", ".TS"):
                fill = False
            elif macro in (".fi", ".EE", ".TE"):
                fill = True
            if macro == ".SH":
                section = parts[1].strip('"').upper() if len(parts) > 1 else ""
            if macro in _ROFF_BREAKS or macro == ".SH":
                if current:
                    paragraphs.append(current)
                current = []
            elif macro in _ROFF_TEXT_MACROS and len(parts) > 1 and fill and section not in ("SYNOPSIS", "NAME"):
                current.append(parts[1].replace('"', ""))
            continue
        if tag_next:
            tag_next = False
            continue
        if fill and section not in ("SYNOPSIS", "NAME", "SEE ALSO", "AUTHOR", "AUTHORS", "COPYRIGHT"):
            current.append(line)
    if current:
        paragraphs.append(current)
    out = []
    for lines in paragraphs:
        text = _ROFF_ESCAPE.sub(_roff_escape, _ROFF_FONT.sub("", " ".join(lines)))
        sentences = []
        for sentence in split_sentences(" ".join(text.split())):
            letters = sum(c.isalpha() or c == " " for c in sentence)
            if len(sentence.split()) >= 4 and sentence[-1] in ".!?" and letters > 0.85 * len(sentence):
                sentences.append(sentence)
        if sentences:
            out.append(sentences)
    return out


def man_documents(root: str = "/usr/share/man", max_pages_per_section: int = 3000) -> list[tuple[str, str, list[str]]]:
    """(section, path, sentences) per English man page (the man<N> folders, not the translations)."""
    import gzip

    if not os.path.isdir(os.path.join(root, "man1")):
        raise MissingCorpus(f"no man pages under {root} (a minimal image or CI: install man-db and manpages)")
    seen, out = set(), []
    for section in ("1", "2", "3", "4", "5", "6", "7", "8"):
        folder = os.path.join(root, f"man{section}")
        if not os.path.isdir(folder):
            continue
        # The Google Cloud SDK's 16,000 generated `gcloud_*` pages (one template, one tool) would be most of man1:
        # left out, so that the corpus is the variety of tools, libraries and formats a system documents.
        names = sorted(n for n in os.listdir(folder) if not n.startswith("gcloud"))
        names = [n for n in names if _hash_share(n) < 100 * max_pages_per_section / max(len(names), 1)]
        for name in names:
            path = os.path.join(folder, name)
            try:
                opener = gzip.open if name.endswith(".gz") else open
                with opener(path, "rt", encoding="utf-8", errors="replace") as f:
                    source = f.read()
            except OSError:
                continue
            if source.lstrip().startswith(".so ") or ".Dd " in source[:2000]:
                continue  # a link to another page, or an mdoc page (BSD macros this reader does not parse)
            sentences = [s for p in man_page_prose(source) for s in p]
            key = " ".join(sentences)
            if len(sentences) >= 2 and key not in seen:
                seen.add(key)
                out.append((section, path, sentences))
    return out


def pydocs_documents() -> list[tuple[str, str, list[str]]]:
    """(topic, topic/section, sentences) per section of Python's documentation topics (pydoc_data)."""
    try:
        from pydoc_data.topics import topics
    except ImportError as e:  # some distributions ship Python without it
        raise MissingCorpus(f"pydoc_data is not installed with this Python: {e}") from None
    from minibert.text import prose, sections, split_sentences

    # Topics repeat one another ("compound" holds the sections of "if", "while", "try", ...): a sentence is kept
    # at its first appearance only, else half of a held-out section would be in the pretraining text verbatim.
    out, seen = [], set()
    for topic in sorted(topics):
        for title, paragraphs in sections(topics[topic]):
            sentences = [s for p in prose(paragraphs) for s in split_sentences(p) if s not in seen]
            seen.update(sentences)
            if sentences:
                out.append((topic, f"{topic}/{title}", sentences))
    return out


def word_order_rows(sentences: list[str], rng: random.Random) -> list[tuple[str, str]]:
    """(text, label): each sentence as written or with its words shuffled, half each (a task any prose gives)."""
    rows = []
    for sentence in sentences:
        words = sentence.split()
        if len(set(words)) < 4:
            continue
        label = rng.choice(["original", "shuffled"])
        if label == "shuffled":
            while (shuffled := rng.sample(words, len(words))) == words:
                pass
            words = shuffled
        rows.append((" ".join(words), label))
    return rows


def build_corpus(name: str, workdir: str, max_train_mb: float) -> dict:
    """A corpus's pretraining text (train.txt), its held-out documents (heldout.txt) and the downstream task's
    CSV files, all split by document (a hash of its file or page): 83% pretraining, 2% held out for MLM, 15% for
    the task, so that fine-tuning and the MLM figures read documents pretraining never saw. Cached in `workdir`."""
    meta_path = os.path.join(workdir, "corpus.json")
    if os.path.isfile(meta_path):
        return json.load(open(meta_path))
    documents = {
        "tune": tune_documents,
        "docstrings_other": other_docstring_documents,
        "man": man_documents,
        "pydocs": pydocs_documents,
    }[name]()
    labels = {"tune": TASK_LABELS, "docstrings_other": OTHER_TASK_LABELS, "man": MAN_SECTIONS}.get(name)
    held_out_share = 10 if name == "pydocs" else 2  # pydocs has 200 documents: 2% would be 4
    train, held_out, task_docs = [], [], []
    for label, key, sentences in documents:
        share = _hash_share(key)
        (task_docs if share < 15 else held_out if share < 15 + held_out_share else train).append((label, sentences))
    random.Random(0).shuffle(train)
    budget, kept, size = max_train_mb * 1e6, [], 0
    for doc in train:  # a cap, so that a large corpus (man pages) prepares in seconds
        if size > budget:
            break
        kept.append(doc)
        size += sum(len(s) + 1 for s in doc[1]) + 1
    os.makedirs(workdir, exist_ok=True)
    for filename, docs in (("train.txt", kept), ("heldout.txt", held_out)):
        with open(os.path.join(workdir, filename), "w", encoding="utf-8") as f:
            f.write("\n\n".join("\n".join(sentences) for _, sentences in docs) + "\n")
    rng = random.Random(1)
    if labels is None:  # no natural classes: word order, on the task documents' sentences, split by document
        by_doc = [word_order_rows(sentences, rng) for _, sentences in task_docs]
    else:  # which class a document comes from, from its first two sentences (a man page: up to four pairs), balanced
        per_label = {label: [] for label in labels}
        pairs = 4 if name == "man" else 1
        for label, sentences in task_docs:
            if label in per_label:
                rows = [(" ".join(sentences[i : i + 2]), label) for i in range(0, min(len(sentences), 2 * pairs), 2)]
                per_label[label].append(rows)
        per_class = min(len(v) for v in per_label.values())
        by_doc = [row for rows in per_label.values() for row in rng.sample(rows, per_class)]
    rng.shuffle(by_doc)
    n = len(by_doc)
    splits = {"train": by_doc[: int(0.7 * n)], "validation": by_doc[int(0.7 * n) : int(0.85 * n)]}
    splits["test"] = by_doc[int(0.85 * n) :]
    for split, docs in splits.items():
        with open(os.path.join(workdir, f"task_{split}.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(row for rows in docs for row in rows)
    meta = {
        "name": name,
        "description": CORPORA[name],
        "train_file": os.path.join(workdir, "train.txt"),
        "validation_file": os.path.join(workdir, "heldout.txt"),
        "documents": len(kept),
        "held_out_documents": len(held_out),
        "words": sum(len(s.split()) for _, d in kept for s in d),
        "bytes": os.path.getsize(os.path.join(workdir, "train.txt")),
        "task_examples": {split: sum(len(rows) for rows in docs) for split, docs in splits.items()},
        "task_labels": labels or ["original", "shuffled"],
    }
    json.dump(meta, open(meta_path, "w"), indent=2)
    return meta


# --------------------------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------------------------
def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": ROOT}


def common_flags(args, meta: dict, tokenizer: str, seed: int) -> list[str]:
    return [
        "--train_file",
        meta["train_file"],
        "--validation_file",
        meta["validation_file"],
        "--tokenizer_name",
        tokenizer,
        "--data_cache_dir",
        os.path.join(args.corpus_dir, "cache"),
        "--max_seq_length",
        str(args.seq_length),
        "--per_device_train_batch_size",
        "32",
        "--per_device_eval_batch_size",
        "64",
        "--max_eval_samples",
        "512",
        "--dupe_factor",
        "1",
        "--time_budget",
        str(args.minutes),
        "--schedule_by",
        "time",
        "--warmup_ratio",
        "0.06",
        "--eval_mlm_probability",
        "0.15",
        "--eval_steps",
        str(args.eval_every),
        "--logging_steps",
        "25",
        "--checkpointing_steps",
        "100000",
        "--checkpoints_total_limit",
        "1",
        "--overwrite_output_dir",
        "true",
        "--seed",
        str(seed),
    ]


def train_tokenizer(args, meta: dict) -> str:
    """One WordPiece vocabulary per corpus, for every run on it (trained by a short dry run of the pipeline)."""
    from pretrain.__main__ import parse
    from pretrain.data import prepare

    path = os.path.join(args.corpus_dir, "tokenizer")
    if not os.path.isdir(path):
        _, data_args, _, _ = parse(
            [
                "--train_file",
                meta["train_file"],
                "--validation_file",
                meta["validation_file"],
                "--vocab_size",
                str(args.vocab_size),
                "--data_cache_dir",
                os.path.join(args.corpus_dir, "cache"),
                "--max_seq_length",
                str(args.seq_length),
                "--dupe_factor",
                "1",
            ]
        )
        prepare(data_args, seed=0).tokenizer.save_pretrained(path)
    return path


def start_pretraining(name: str, flags: list[str], args) -> tuple[subprocess.Popen, str]:
    out = os.path.join(args.corpus_dir, "runs", name)
    cmd = [sys.executable, "-m", "pretrain", *flags, "--output_dir", out]
    log = open(os.path.join(args.corpus_dir, f"{name}.log"), "w")
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT), out


def eval_curve(out: str) -> list[tuple[float, float, float]]:
    """(training seconds, held-out MLM loss, accuracy) of every evaluation of a run."""
    curve = []
    for line in open(os.path.join(out, "metrics.jsonl")):
        record = json.loads(line)
        if "eval_mlm_loss" in record:
            curve.append((record["train_runtime"], record["eval_mlm_loss"], record["eval_mlm_accuracy"]))
    return curve


def finetune(name: str, checkpoint: str, args, seed: int) -> subprocess.Popen:
    task = args.corpus_dir
    cmd = [
        sys.executable,
        "-m",
        "finetune",
        "--model_name_or_path",
        checkpoint,
        "--train_file",
        os.path.join(task, "task_train.csv"),
        "--validation_file",
        os.path.join(task, "task_validation.csv"),
        "--test_file",
        os.path.join(task, "task_test.csv"),
        "--output_dir",
        os.path.join(args.corpus_dir, "finetuned", name),
        "--num_train_epochs",
        str(args.finetune_epochs),
        "--learning_rate",
        "3e-4",
        "--per_device_train_batch_size",
        "32",
        "--max_seq_length",
        "64",
        "--seed",
        str(seed),
        "--overwrite_output_dir",
        "true",
    ]
    log = open(os.path.join(args.corpus_dir, f"finetune_{name}.log"), "w")
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT)


def _wait(procs: dict[str, subprocess.Popen], args) -> None:
    for name, proc in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"{name} failed: see {os.path.join(args.corpus_dir, name + '.log')}")


EVAL_FORMATS = {"nsp_pairs": True, "packed_text": False}  # held-out set name -> --next_sentence_prediction
EVAL_SEED = 0  # the masks of the common held-out sets: one draw for every model, whatever seed trained it


def cross_evaluate(args, meta: dict, tokenizer: str, outs: dict[str, str]) -> dict:
    """Each run's final model on both held-out sets, at 15% masking, the same masks for every model.

    Each run evaluates itself during training on held-out data in its own format: the faithful run on NSP pairs
    (half of them with a random second segment, shorter on average), the fast run on its documents' sentences
    packed in order (longer contiguous context). Those two sets hold the same held-out documents but differ in how
    easy their masked tokens are, so the final comparison is made here on both, with the MLM head alone (a
    pretraining checkpoint loads as a masked LM; the NSP label is left out), the sets built and masked with
    EVAL_SEED whatever seed trained the model: every model reads identical masked sequences.
    """
    import torch
    from accelerate import Accelerator
    from torch.utils.data import DataLoader
    from transformers import AutoModelForMaskedLM

    import minibert  # noqa: F401  (registers MiniBERT with the Auto classes)
    from pretrain.__main__ import parse
    from pretrain.data import prepare
    from pretrain.evaluation import eval_collator, evaluate
    from pretrain.train import build_collator

    torch.set_num_threads(1)  # one thread, as the runs had
    accelerator = Accelerator(cpu=True)
    results: dict = {name: {} for name in outs}
    for held_out, nsp in EVAL_FORMATS.items():
        flags = [*common_flags(args, meta, tokenizer, EVAL_SEED), "--next_sentence_prediction", str(nsp).lower()]
        _, data_args, training_args, _ = parse([*flags, "--output_dir", os.path.join(args.corpus_dir, "runs")])
        data = prepare(data_args, seed=EVAL_SEED)  # cached after the first comparison
        collator = eval_collator(build_collator(data_args, data.tokenizer, EVAL_SEED), 0.15)

        def collate(examples, collator=collator):
            batch = collator(examples)
            batch.pop("next_sentence_label", None)  # the MLM head alone, for every model
            return batch

        loader = DataLoader(data.eval_dataset, batch_size=64, shuffle=False, collate_fn=collate)
        for name, out in outs.items():
            model = AutoModelForMaskedLM.from_pretrained(out)
            metrics = evaluate(model, loader, accelerator, seed=EVAL_SEED, next_sentence_prediction=False)
            results[name][held_out] = {
                k: metrics[k] for k in ("eval_mlm_loss", "eval_mlm_accuracy", "eval_masked_tokens", "eval_samples")
            }
    return results


RECIPE_FLAGS = {"bert": [], "fast": ["--recipe", "fast"]}


def compare(args, meta: dict, tokenizer: str, seed: int) -> dict:
    """One seed: both recipes trained concurrently (one thread each, the same budget), then scored on the same
    held-out sequences and fine-tuned on the same task (concurrently too)."""
    base = common_flags(args, meta, tokenizer, seed) + ["--config_overrides", SIZES[args.size]]
    pair = os.path.join(args.corpus_dir, "runs", f"pair_seed{seed}.json")  # what trained the pair, and the load
    runs = {name: [*flags, *base] for name, flags in RECIPE_FLAGS.items()}
    if args.reuse and os.path.isfile(pair) and json.load(open(pair))["flags"] == runs:
        print(f"  seed {seed}: the pretraining runs of an earlier call with the same flags reused (--reuse)")
        outs = {name: os.path.join(args.corpus_dir, "runs", f"{name}_seed{seed}") for name in runs}
        load_before, load_during = json.load(open(pair))["load"]
    else:
        load_before = os.getloadavg()
        started = {name: start_pretraining(f"{name}_seed{seed}", flags, args) for name, flags in runs.items()}
        _wait({f"{name}_seed{seed}": proc for name, (proc, _) in started.items()}, args)
        load_during = os.getloadavg()  # the 1-minute figure is the training's last minute; 5 and 15 span more
        outs = {name: out for name, (_, out) in started.items()}
        json.dump({"flags": runs, "load": [load_before, load_during]}, open(pair, "w"))
    curves = {name: eval_curve(out) for name, out in outs.items()}
    common = cross_evaluate(args, meta, tokenizer, outs)
    tuned = {name: finetune(f"{name}_seed{seed}", out, args, seed) for name, out in outs.items()}
    _wait({f"finetune_{name}_seed{seed}": p for name, p in tuned.items()}, args)
    downstream = {}
    for name in RECIPE_FLAGS:
        path = os.path.join(args.corpus_dir, "finetuned", f"{name}_seed{seed}", "all_results.json")
        results = json.load(open(path))
        downstream[name] = {k: results[k] for k in ("eval_accuracy", "test_accuracy") if k in results}
    final = {name: json.load(open(os.path.join(out, "all_results.json"))) for name, out in outs.items()}
    keys = ("train_steps", "train_tokens", "train_runtime", "num_parameters")
    return {
        "seed": seed,
        "load_before": load_before,
        "load_after_training": load_during,
        "curves": curves,
        "final": {name: {k: r.get(k) for k in keys} for name, r in final.items()},
        "held_out": common,
        "downstream": downstream,
    }


def _mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean, and spread as the range over seeds (max - min): with two or three seeds a range says more plainly
    than a standard deviation how far one seed's figure can sit from another's."""
    return sum(values) / len(values), max(values) - min(values)


def verdict(bert: list[float], fast: list[float], higher_is_better: bool = True) -> dict:
    """fast - bert in mean, against the larger of the two recipes' seed spreads; a difference that is not larger
    than the spread is "no difference" (with one seed there is no spread: every verdict is then "one seed")."""
    (mb, sb), (mf, sf) = _mean_spread(bert), _mean_spread(fast)
    spread = max(sb, sf)
    diff = mf - mb
    if len(bert) < 2:
        said = "one seed"
    elif abs(diff) <= spread:
        said = "no difference"
    else:
        said = "fast better" if (diff > 0) == higher_is_better else "bert better"
    return {"bert": [mb, sb], "fast": [mf, sf], "difference": diff, "spread": spread, "verdict": said}


def summarize(runs: list[dict]) -> dict:
    """Per measure, both recipes' mean and spread over the seeds and the verdict."""
    measures = {
        f"mlm_accuracy_{held_out}": lambda r, n, h=held_out: r["held_out"][n][h]["eval_mlm_accuracy"]
        for held_out in EVAL_FORMATS
    }
    measures |= {
        f"mlm_loss_{held_out}": lambda r, n, h=held_out: r["held_out"][n][h]["eval_mlm_loss"]
        for held_out in EVAL_FORMATS
    }
    measures["task_test_accuracy"] = lambda r, n: r["downstream"][n]["test_accuracy"]
    measures["train_steps"] = lambda r, n: float(r["final"][n]["train_steps"])
    summary = {
        key: verdict(*([get(r, n) for r in runs] for n in RECIPE_FLAGS), higher_is_better="loss" not in key)
        for key, get in measures.items()
    }
    summary["train_steps"]["verdict"] = "(not a quality measure)"
    return summary


def _with_overrides(size: str, flags: list[str]) -> list[str]:
    """`flags` with their --config_overrides (if any) appended to the size's, as one --config_overrides."""
    overrides, rest = size, []
    for i in range(0, len(flags), 2):
        if flags[i] == "--config_overrides":
            overrides += "," + flags[i + 1]
        else:
            rest += flags[i : i + 2]
    return ["--config_overrides", overrides, *rest]


def ablate(args, meta: dict, tokenizer: str, seed: int) -> dict:
    """Each knob alone, the same budget, two runs at a time (one thread each): `add` puts each knob of fast into
    the faithful run; `remove` takes each one out of the fast run (what it is worth inside the recipe). Scored
    on the common held-out sets (the same masked sequences for every run); --knobs picks some."""
    base = common_flags(args, meta, tokenizer, seed)
    start = [] if args.ablate == "add" else ["--recipe", "fast"]
    reference = "bert" if args.ablate == "add" else "fast"
    knobs = args.knobs or list(KNOBS)
    knob_flags = {name: KNOBS[name][0 if args.ablate == "add" else 1] for name in knobs}
    runs = {reference: [], **{f"{args.ablate}_{name}": flags for name, flags in knob_flags.items()}}
    outs = {}
    names = list(runs)
    for i in range(0, len(names), 2):
        procs = {}
        for name in names[i : i + 2]:
            flags = [*start, *base, *_with_overrides(SIZES[args.size], runs[name])]
            procs[name] = start_pretraining(f"ablate_{name}_seed{seed}", flags, args)
        _wait({f"ablate_{n}_seed{seed}": p for n, (p, _) in procs.items()}, args)
        outs |= {name: out for name, (_, out) in procs.items()}
    common = cross_evaluate(args, meta, tokenizer, outs)
    results = {}
    for name, out in outs.items():
        final = json.load(open(os.path.join(out, "all_results.json")))
        results[name] = {"seed": seed, "held_out": common[name]} | {
            k: final[k] for k in ("train_steps", "train_runtime")
        }
    return results


def print_summary(corpus: str, summary: dict) -> None:
    print(f"\n{corpus}: mean over seeds (spread = max - min over seeds); 'no difference' when |fast - bert| <= spread")
    print(f"{'measure':<28} {'bert':>15} {'fast':>15} {'fast - bert':>12}  verdict")
    for key, v in summary.items():
        cells = "  ".join(f"{v[n][0]:8.3f} ±{v[n][1]:5.3f}" for n in RECIPE_FLAGS)
        print(f"{key:<28} {cells} {v['difference']:+12.3f}  {v['verdict']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--corpus",
        nargs="+",
        choices=[*CORPORA, "untuned"],
        default=["untuned"],
        help="corpora to pretrain and score on: " + "; ".join(f"{k}: {v}" for k, v in CORPORA.items()),
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="pretraining and fine-tuning seeds")
    parser.add_argument("--minutes", type=float, default=3.0, help="training time budget of each run")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--seq_length", type=int, default=64)
    parser.add_argument("--vocab_size", type=int, default=8192)
    parser.add_argument("--max_train_mb", type=float, default=3.0, help="cap on each corpus's pretraining text")
    parser.add_argument("--finetune_epochs", type=float, default=10)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the pretraining runs an earlier call made with the same flags (re-score and re-fine-tune them)",
    )
    parser.add_argument("--eval_every", type=int, default=50, help="optimizer steps between evaluations")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "benchmarks", "results", "recipe"))
    parser.add_argument(
        "--ablate",
        choices=["add", "remove"],
        help="each knob of fast alone: added to faithful (add), or taken out of fast (remove)",
    )
    parser.add_argument("--knobs", nargs="+", choices=list(KNOBS), help="with --ablate: only these knobs")
    args = parser.parse_args(argv)
    corpora = [c for name in args.corpus for c in (UNTUNED if name == "untuned" else [name])]
    t0 = time.monotonic()
    report, missing = {}, {}
    for corpus in corpora:
        args.corpus_dir = os.path.join(args.workdir, corpus)
        try:
            meta = build_corpus(corpus, args.corpus_dir, args.max_train_mb)
        except MissingCorpus as e:
            missing[corpus] = str(e)
            print(f"corpus {corpus}: MISSING on this machine, not measured: {e}")
            continue
        print(
            f"corpus {corpus} ({meta['description']}): {meta['documents']:,} documents, {meta['words']:,} words "
            f"({meta['bytes'] / 1e6:.1f} MB), {meta['held_out_documents']} held-out documents; task "
            f"{meta['task_examples']} over {len(meta['task_labels'])} classes",
            flush=True,
        )
        tokenizer = train_tokenizer(args, meta)
        if args.ablate:
            results = {}
            for seed in args.seeds:
                for name, r in ablate(args, meta, tokenizer, seed).items():
                    results.setdefault(name, []).append(r)
            report[corpus] = {"corpus": meta, "ablation": results}
            print(f"\n{'run':<22} {'MLM acc (packed)':>17} {'MLM acc (pairs)':>16}   mean ± spread over seeds; steps")
            for name, rs in results.items():
                cells = [
                    "{:.3f} ±{:.3f}".format(*_mean_spread([r["held_out"][h]["eval_mlm_accuracy"] for r in rs]))
                    for h in ("packed_text", "nsp_pairs")
                ]
                print(f"{name:<22} {cells[0]:>17} {cells[1]:>16}   {', '.join(str(r['train_steps']) for r in rs)}")
            continue
        runs = []
        for seed in args.seeds:
            runs.append(compare(args, meta, tokenizer, seed))
            r = runs[-1]
            print(
                f"  seed {seed}: steps bert {r['final']['bert']['train_steps']} / fast {r['final']['fast']['train_steps']}"
                f", packed MLM acc bert {r['held_out']['bert']['packed_text']['eval_mlm_accuracy']:.3f} / fast "
                f"{r['held_out']['fast']['packed_text']['eval_mlm_accuracy']:.3f}, task test bert "
                f"{r['downstream']['bert'].get('test_accuracy', float('nan')):.3f} / fast "
                f"{r['downstream']['fast'].get('test_accuracy', float('nan')):.3f}, load (1/5/15 min) "
                + " ".join(f"{x:.1f}" for x in r["load_after_training"]),
                flush=True,
            )
        summary = summarize(runs)
        report[corpus] = {"corpus": meta, "runs": runs, "summary": summary}
        print_summary(corpus, summary)
    settings = {k: v for k, v in vars(args).items() if k != "corpus_dir"}
    name = f"ablation_{args.ablate}.json" if args.ablate else "report.json"
    os.makedirs(args.workdir, exist_ok=True)
    json.dump(
        {"settings": settings, "missing": missing, "corpora": report},
        open(os.path.join(args.workdir, name), "w"),
        indent=2,
    )
    print(f"(wall time of the benchmark: {(time.monotonic() - t0) / 60:.1f} min; {os.path.join(args.workdir, name)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
