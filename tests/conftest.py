"""Fixtures shared by the whole suite. Keep this file small and generic: test-specific helpers live in the test files.

Tests never touch the network: the Hub is switched to offline mode before transformers is imported anywhere.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op thread in tests, also for the runs the CLIs start in this process (`minibert.runs.set_cpu_threads`
# keeps what OMP_NUM_THREADS says) and in subprocesses, which inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

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


@pytest.fixture(scope="session")
def wordpiece_tokenizer():
    """The tiny WordPiece tokenizer wrapped as a transformers fast tokenizer (ids: [PAD]=0 ... [MASK]=4)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=train_wordpiece(),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
