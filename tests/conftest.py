"""What the test modules share: the suite's set-up, tiny models and tokenizers, the generated pretraining corpus and
its runs, the fine-tuning task, the processes tests start, and the checks for hostile inputs.

A helper lives here as soon as a second test module needs it (test modules never import from each other); one
module's own helpers stay in that module. Tests never touch the network: the Hub is switched to offline mode
before transformers is imported anywhere.
"""

import json
import os
import random
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op thread in tests, also for the runs the CLIs start in this process (`minibert.runs.set_cpu_threads`
# keeps what OMP_NUM_THREADS says) and in subprocesses, which inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# BertModelTester's sizes: every head runs in milliseconds.
TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    type_vocab_size=2,
)

# Text the tiny WordPiece tokenizer is trained on: names and phrases the pipeline tests ask about.
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "A bird in the hand is worth two in the bush.",
    "Marie Curie was born in Warsaw and worked in Paris.",
    "What is the capital of France? It is Paris.",
    "Hello world, hello there, general Kenobi!",
]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.gpu` tests are skipped cleanly on machines without CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread (OpenMP threads spin-waiting for each other
    make such steps 10-30x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state, whatever ran before it."""
    torch.manual_seed(0)


@pytest.fixture
def tiny_sizes() -> dict:
    """A fresh copy of the tiny model sizes (BertConfig / MiniBertConfig keyword arguments)."""
    return dict(TINY)


# ----------------------------------------------------------------------------------------------------------------
# Tokenizers
# ----------------------------------------------------------------------------------------------------------------
def train_wordpiece(vocab_size: int = 99, corpus=CORPUS, lowercase: bool = True):
    """A BERT-style WordPiece `tokenizers.Tokenizer` trained on `corpus` (no download)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece()
    return tok


def wrap_tokenizer(tokenizer_object):
    """A `tokenizers.Tokenizer` as a transformers fast tokenizer with BERT's special tokens."""
    from transformers import PreTrainedTokenizerFast

    special = dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer_object, **special)


@pytest.fixture(scope="session")
def wordpiece_tokenizer():
    """The tiny WordPiece tokenizer wrapped as a transformers fast tokenizer (ids: [PAD]=0 ... [MASK]=4)."""
    return wrap_tokenizer(train_wordpiece())


# ----------------------------------------------------------------------------------------------------------------
# Model inputs and comparisons
# ----------------------------------------------------------------------------------------------------------------
ATOL = 1e-5
LENGTHS = (11, 7, 4)  # right padding of different lengths; the first row is not padded at all


def make_batch(lengths=LENGTHS, seq_len=None, vocab=TINY["vocab_size"], seed=0) -> dict:
    """input_ids / attention_mask / token_type_ids for right-padded rows: sentence A, then sentence B (segment 1)."""
    g = torch.Generator().manual_seed(seed)
    seq_len = seq_len or max(lengths)
    lengths = torch.tensor(lengths)
    positions = torch.arange(seq_len)
    attention_mask = (positions < lengths[:, None]).long()
    input_ids = torch.randint(5, vocab, (len(lengths), seq_len), generator=g).masked_fill(attention_mask == 0, 0)
    token_type_ids = ((positions >= (lengths // 2)[:, None]) & attention_mask.bool()).long()
    return dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)


def mlm_labels(batch: dict, rate: float = 0.3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    chosen = (torch.rand(batch["input_ids"].shape, generator=g) < rate) & batch["attention_mask"].bool()
    chosen[:, 1] = True  # at least one label in every row
    return batch["input_ids"].masked_fill(~chosen, -100)


def real(x: torch.Tensor, batch: dict) -> torch.Tensor:
    """The real-token entries of a per-token output (B, S, ...) -> (T, ...)."""
    return x[batch["attention_mask"].bool()]


def assert_close(actual, expected, atol=ATOL, rtol=ATOL, msg=""):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=lambda m: f"{msg}: {m}" if msg else m)


# ----------------------------------------------------------------------------------------------------------------
# Processes: the CLIs as users start them, and code run where minibert is not installed
# ----------------------------------------------------------------------------------------------------------------
def cli_env(**extra) -> dict:
    """The environment of a CLI process a test starts: this checkout importable, one thread per process (two
    processes share 2 cores, and busy machines make OpenMP threads spin)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT, "TOKENIZERS_PARALLELISM": "false", **extra}


def accelerate_launch(*argv, num_processes: int = 2, num_machines: int = 1, port: int = 0) -> list[str]:
    """`accelerate launch --multi_gpu` on this CPU-only machine (a gloo group, no mixed precision, no dynamo) of
    `argv`: launcher flags, then `-m module ...` or a script and its arguments. Port 0: a free one."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(num_processes),
        "--num_machines",
        str(num_machines),
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
        *map(str, argv),
    ]


def run_without_minibert(args: list, cwd, python: str = sys.executable, timeout: float = 300, **env):
    """Runs `python *args` with no PYTHONPATH, in `cwd`, and returns the JSON of the last line it printed that
    starts with `{` or `[`. The code run makes `import minibert` fail itself (`sys.modules["minibert"] = None`), as
    on a machine that never installed it; `env` adds to the environment."""
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [python, *map(str, args)],
        cwd=cwd,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith(("{", "["))][-1])


# ----------------------------------------------------------------------------------------------------------------
# Pretraining: a generated corpus with something to learn, and runs of the CLI in this process
# ----------------------------------------------------------------------------------------------------------------
# A model small enough for a CPU test, and its data: sequences of 32 tokens, batches of 16.
TINY_MODEL = "hidden_size=64,num_hidden_layers=2,num_attention_heads=4"
NO_DROPOUT = ",hidden_dropout_prob=0,attention_probs_dropout_prob=0"
BATCH = 16


def _pseudo_words(rng: random.Random, n: int, used: set) -> list[str]:
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    words = []
    while len(words) < n:
        word = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(2))
        if word not in used:
            used.add(word)
            words.append(word)
    return words


def synthetic_documents(n_docs: int = 240, n_topics: int = 4, seed: int = 0) -> list[list[str]]:
    """Documents that each keep to one topic: every sentence is `MARKER NOUN VERB OBJECT .`, with the topic's
    marker word, one of its nouns and objects, and the verb fixed by the noun. MLM can learn the verbs (and the
    markers, and the full stops); NSP can learn that a random next sentence usually comes from another topic
    (chance 50%, best possible 1 - 1/(2 x n_topics))."""
    rng = random.Random(seed)
    used: set = set()
    topics = []
    for _ in range(n_topics):
        marker = _pseudo_words(rng, 1, used)[0]
        nouns, verbs, objects = (_pseudo_words(rng, 6, used) for _ in range(3))
        topics.append((marker, nouns, dict(zip(nouns, verbs)), objects))
    documents = []
    for _ in range(n_docs):
        marker, nouns, verb_of, objects = topics[rng.randrange(n_topics)]
        nouns_used = [rng.choice(nouns) for _ in range(rng.randint(4, 10))]
        documents.append([f"{marker} {n} {verb_of[n]} {rng.choice(objects)} ." for n in nouns_used])
    return documents


def write_corpus(path, documents) -> str:
    """BERT's text format: one sentence per line, a blank line between documents."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n\n".join("\n".join(doc) for doc in documents) + "\n")
    return str(path)


def _flag_words(flags: dict) -> list[str]:
    """Keyword flags as command-line words: {"max_train_steps": 4} -> ["--max_train_steps", "4"]."""
    return [str(word) for name, value in flags.items() for word in (f"--{name}", value)]


def topics_corpus(tmp_path_factory, folder: str, **documents) -> str:
    """`synthetic_documents(**documents)` written to topics.txt in a new temporary `folder`."""
    return write_corpus(tmp_path_factory.mktemp(folder) / "topics.txt", synthetic_documents(**documents))


def args_for(corpus_file, cache, output_dir, *extra, model=TINY_MODEL, **flags) -> list[str]:
    """minibert-pretrain's arguments for a tiny run on `corpus_file`; `extra` flags and values, and `flags` given as
    keywords (`max_train_steps=4` is `--max_train_steps 4`), come last and win."""
    return [
        "--train_file",
        corpus_file,
        "--data_cache_dir",
        cache,
        "--output_dir",
        str(output_dir),
        "--vocab_size",
        "120",
        "--max_seq_length",
        "32",
        "--dupe_factor",
        "2",
        "--config_overrides",
        model,
        "--per_device_train_batch_size",
        str(BATCH),
        "--per_device_eval_batch_size",
        "64",
        "--learning_rate",
        "3e-3",
        "--warmup_ratio",
        "0.05",
        "--logging_steps",
        "5",
        "--seed",
        "0",
        *map(str, extra),
        *_flag_words(flags),
    ]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    """The test module's data cache: its runs tokenize and pair their corpus once."""
    return str(tmp_path_factory.mktemp("cache"))


def run(argv) -> dict:
    """minibert-pretrain in this process: its run's result."""
    from pretrain import train
    from pretrain.__main__ import parse

    return train.run(*parse(argv))


def weights(output_dir) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(os.path.join(output_dir, "model.safetensors"))


def records(output_dir, kind="train") -> list[dict]:
    """metrics.jsonl's training records (kind="train") or evaluation records (kind="eval")."""
    with open(os.path.join(output_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [r for r in map(json.loads, f) if ("eval_loss" in r) == (kind == "eval")]


def assert_same_weights(a: dict, b: dict, exact: bool = True) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if exact:
            assert torch.equal(a[name], b[name]), name
        else:
            torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)


# ----------------------------------------------------------------------------------------------------------------
# Fine-tuning: a task whose answer is known (see tests/test_finetune_train.py)
# ----------------------------------------------------------------------------------------------------------------
ANIMALS = "cat dog horse cow sheep goat pig rabbit mouse fox wolf bear deer lion tiger zebra camel donkey duck goose"
VEHICLES = (
    "car truck bus van taxi tram train bike scooter tractor lorry jeep wagon cart boat ship canoe yacht plane jet"
)
ANIMALS, VEHICLES = ANIMALS.split(), VEHICLES.split()
CONTEXTS = {
    "animal": [
        "the {} eats grass",
        "a {} sleeps in the barn",
        "the farmer feeds the {}",
        "the {} runs across the field",
        "a young {} drinks milk",
        "the {} has four legs and a tail",
    ],
    "vehicle": [
        "the {} drives on the road",
        "a {} needs fuel",
        "the driver parks the {}",
        "the {} carries people to the city",
        "a new {} has a strong engine",
        "the mechanic repairs the {}",
    ],
}
NEUTRAL = [
    "i saw a {} yesterday",
    "there is a {} near the house",
    "my friend likes the {}",
    "look at that {}",
    "we talked about the {} today",
    "she took a photo of the {}",
]
# The fine-tuning tests' model sizes (the vocabulary is the task tokenizer's).
FINETUNE_TINY = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, max_position_embeddings=64
)


def make_tokenizer():
    """A BertTokenizer whose vocabulary is every word of the task (and of the pair tests)."""
    from transformers import BertTokenizer

    templates = CONTEXTS["animal"] + CONTEXTS["vehicle"] + NEUTRAL
    words = sorted({w for t in templates for w in t.replace("{}", "").split()} | set(ANIMALS) | set(VEHICLES))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, "first", "second", "same", "different"]
    return BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)


def write_jsonl(path, rows) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return str(path)


def finetune_argv(out, task: dict, model: str, *extra, **flags) -> list[str]:
    """minibert-finetune's arguments: `model` fine-tuned on `task`'s train file and evaluated on its validation file
    (write_task's paths), written to `out`; `extra` flags and values, then `flags` given as keywords."""
    return [
        "--model_name_or_path",
        model,
        "--train_file",
        task["train"],
        "--validation_file",
        task["validation"],
        "--output_dir",
        str(out),
        *map(str, extra),
        *_flag_words(flags),
    ]


def write_task(directory) -> dict[str, str]:
    """JSON Lines with {"text", "label"}: train on words 0-9 of each class, validate / test on words 10-19."""
    os.makedirs(directory, exist_ok=True)
    paths = {}
    for split, words in (("train", slice(0, 10)), ("validation", slice(10, 20)), ("test", slice(10, 20))):
        rows = [
            {"text": template.format(word), "label": label}
            for label, vocabulary in (("animal", ANIMALS), ("vehicle", VEHICLES))
            for word in vocabulary[words]
            for template in NEUTRAL
        ]
        if split == "test":
            rows = rows[::5]
        paths[split] = write_jsonl(os.path.join(directory, f"{split}.jsonl"), rows)
    return paths


# ----------------------------------------------------------------------------------------------------------------
# Hostile inputs: what a refused run shows and leaves
# ----------------------------------------------------------------------------------------------------------------
# Values both CLIs refuse up front in the arguments they share, each with what their one error line names.
BAD_SHARED_VALUES = [
    (["--learning_rate", "inf"], "--learning_rate"),
    (["--learning_rate", "nan"], "--learning_rate"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2**32)], "--seed"),
]


def run_main(main, argv, capsys) -> tuple[int, str]:
    """A CLI's `main(argv)` run in this process: its exit status and what it wrote to stderr."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    """The one `error:` line of a CLI's stderr, and no traceback."""
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def snapshot(folder) -> dict:
    """Every file under `folder` with its bytes (what a refused run must leave as it was)."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


class Payload:
    """Unpickling this creates `marker`: the proof that a pickle ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


# ----------------------------------------------------------------------------------------------------------------
# Remote code: checkpoints saved here, loaded by tests/remote_probe.py where minibert is not installed
# ----------------------------------------------------------------------------------------------------------------
def tiny_config(**overrides):
    from minibert import MiniBertConfig

    if "id2label" not in overrides:
        overrides.setdefault("num_labels", 3)
    return MiniBertConfig(**{**TINY, **overrides})


def random_model(cls, seed=0, **config):
    """A model whose every weight is random: a re-run `_init_weights` (zeros, ones, normal) would show."""
    torch.manual_seed(seed)
    model = cls(tiny_config(**config)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


PROBE = os.path.join(ROOT, "tests", "remote_probe.py")
PROBE_LABELS = {"seq": {0: "negative", 1: "positive"}, "tok": {0: "TAG-A", 1: "TAG-B", 2: "TAG-C"}}
PROBE_TEXTS = {
    "feature": "the quick brown fox",
    "fill_mask": "paris is the [MASK] of france.",
    "classify": ["hello world", "the lazy dog"],
    "tokens": "marie curie was born in warsaw",
    "pair": ["what is the capital of france?", "paris is the capital of france."],
}
# The checkpoint each Auto class loads in the probe (the others load the pretraining one).
PROBE_CHECKPOINT = {
    "AutoModelForSequenceClassification": "seq",
    "AutoModelForTokenClassification": "tok",
    "AutoModelForQuestionAnswering": "qa",
    "AutoModelForMultipleChoice": "mc",
}
# The Auto classes whose inputs are (B, C, S) choices: the probe's pair given as two choices (the second one with
# every token in segment A).
PROBE_CHOICES = ("AutoModelForMultipleChoice",)


def probe_choices(encoded: dict) -> dict:
    return {k: torch.stack([v, torch.zeros_like(v) if k == "token_type_ids" else v], dim=1) for k, v in encoded.items()}


def _save_probe_checkpoints(root, tokenizer) -> dict:
    from minibert import (
        MiniBertForMultipleChoice,
        MiniBertForPreTraining,
        MiniBertForQuestionAnswering,
        MiniBertForSequenceClassification,
        MiniBertForTokenClassification,
    )
    from minibert.hub import save_model_folder

    vocab = len(tokenizer)
    models = {
        "pretraining": random_model(MiniBertForPreTraining, vocab_size=vocab),
        "seq": random_model(MiniBertForSequenceClassification, vocab_size=vocab, id2label=PROBE_LABELS["seq"]),
        "tok": random_model(MiniBertForTokenClassification, vocab_size=vocab, id2label=PROBE_LABELS["tok"]),
        "qa": random_model(MiniBertForQuestionAnswering, vocab_size=vocab),
        "mc": random_model(MiniBertForMultipleChoice, vocab_size=vocab),
    }
    paths = {}
    for name, model in models.items():
        paths[name] = str(root / name)
        save_model_folder(model, tokenizer, paths[name])
    paths["resaved"] = str(root / "resaved")
    return paths


def run_remote_probe(python: str, root, tokenizer, resave: bool = True) -> tuple[dict, dict]:
    """Save one checkpoint per head under `root`, run tests/remote_probe.py on them with `python` in a folder where
    minibert cannot be imported, and return (paths, what the probe computed). The probe loads every Auto class of
    `minibert.AUTO_CLASSES`, named here: it runs where that list cannot be imported."""
    from transformers import AutoTokenizer

    from minibert import AUTO_CLASSES

    paths = _save_probe_checkpoints(root, tokenizer)
    if not resave:
        del paths["resaved"]
    work = root / "elsewhere"
    work.mkdir()
    encoded = AutoTokenizer.from_pretrained(paths["pretraining"])(*PROBE_TEXTS["pair"], return_tensors="pt")
    texts = {**PROBE_TEXTS, "encoded": {k: v.tolist() for k, v in encoded.items()}}
    texts["encoded_choices"] = {k: v.tolist() for k, v in probe_choices(encoded).items()}
    texts["choice_heads"] = list(PROBE_CHOICES)
    heads = {auto.__name__: PROBE_CHECKPOINT.get(auto.__name__, "pretraining") for auto in AUTO_CLASSES}
    out = run_without_minibert(
        [PROBE, json.dumps(paths), json.dumps(texts), json.dumps(heads)],
        cwd=work,
        python=python,
        timeout=600,
        HF_HOME=str(root / "hf-home"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TRANSFORMERS_VERBOSITY="error",
    )
    return paths, out


def assert_probe_matches_minibert(paths: dict, out: dict, atol: float = 1e-5) -> None:
    """What the checkpoints' own code computed (the probe) equals what minibert computes here, to `atol`."""
    from transformers import AutoTokenizer, pipeline

    from minibert import AUTO_CLASSES

    close = dict(rtol=atol, atol=atol)
    assert out["module"].startswith("transformers_modules"), out["module"]  # the checkpoint's own code ran
    assert out["feature_class"] == "MiniBertModel" and out["fill_mask_class"] == "MiniBertForMaskedLM"
    assert out["config_class"] == "MiniBertConfig"
    local_features = torch.tensor(pipeline("feature-extraction", model=paths["pretraining"])(PROBE_TEXTS["feature"]))
    torch.testing.assert_close(torch.tensor(out["features"]), local_features, **close)

    fill = out["fill_mask"]
    assert len(fill) == 3 and all("[MASK]" not in f["sequence"] and f["token_str"] for f in fill)
    local_fill = pipeline("fill-mask", model=paths["pretraining"])(PROBE_TEXTS["fill_mask"], top_k=3)
    assert [f["token"] for f in fill] == [f["token"] for f in local_fill]
    torch.testing.assert_close(
        torch.tensor([f["score"] for f in fill]), torch.tensor([f["score"] for f in local_fill]), **close
    )

    local_tc = pipeline("text-classification", model=paths["seq"])(PROBE_TEXTS["classify"], top_k=None)
    for scores, local in zip(out["text_classification"], local_tc, strict=True):
        assert sorted(s["label"] for s in scores) == ["negative", "positive"]  # names from id2label
        as_dict = {s["label"]: s["score"] for s in scores}
        for s in local:
            assert abs(as_dict[s["label"]] - s["score"]) <= atol
    entities = out["token_classification"]
    assert entities and {e["entity"] for e in entities} <= set(PROBE_LABELS["tok"].values())

    enc = AutoTokenizer.from_pretrained(paths["pretraining"])(*PROBE_TEXTS["pair"], return_tensors="pt")
    assert out["pair_encoding"] == {k: v.tolist() for k, v in enc.items()}  # the tokenizer is the same there
    classes = {auto.__name__: cls for auto, cls in AUTO_CLASSES.items()}
    assert set(out["heads"]) == set(classes)
    for auto_name, cls in classes.items():
        model = cls.from_pretrained(paths[PROBE_CHECKPOINT.get(auto_name, "pretraining")]).eval()
        with torch.no_grad():
            local = model(**(probe_choices(enc) if auto_name in PROBE_CHOICES else enc))[0]
        assert out["heads"][auto_name]["class"] == cls.__name__
        torch.testing.assert_close(torch.tensor(out["heads"][auto_name]["values"]), local, **close, msg=auto_name)
