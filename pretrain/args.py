"""Pretraining arguments, every group of them: the model, the data, the training loop; and the run plan decided from them.

Names follow transformers' `run_mlm_no_trainer.py`, so a command line written for it mostly works here.
`minibert-pretrain --help` lists every flag; a YAML/JSON file may hold the same keys (`minibert.cli.parse_args`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from minibert import MODEL_SIZES, MiniBertConfig
from minibert.checks import check_float32
from minibert.cli import HubArguments, UserError, check_positive
from minibert.runs import DEFAULT_PRETRAINED_DIR

from .optim import DECAY_TYPES, SCHEDULERS

OPTIMIZERS = ("adamw", "lamb")
MIXED_PRECISION = ("no", "fp16", "bf16")


@dataclass
class ModelArguments:
    """Which model to pretrain: a fresh one of a preset size, or an existing checkpoint to continue from."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Continue pretraining from this checkpoint: a minibert or transformers BERT folder or Hub id "
            "(BERT checkpoints are converted on the fly). Its tokenizer is used unless --tokenizer_name says otherwise."
        },
    )
    model_size: str | None = field(
        default=None,
        metadata={
            "help": f"Size of a fresh model: one of {', '.join(MODEL_SIZES)} (Google's BERT family; default tiny).",
            "choices": list(MODEL_SIZES),
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "Config fields to override, e.g. `hidden_size=64,num_hidden_layers=2,hidden_dropout_prob=0`. "
            "A new hidden_size also sets num_attention_heads (hidden/64) and intermediate_size (4 x hidden) "
            "unless they are given too."
        },
    )

    def __post_init__(self):
        # --config_overrides as `MiniBertConfig` keyword arguments, typed once, here (a bad entry or an unknown field
        # is a UserError at parse time): what the model builder and the export check read. Not a dataclass field,
        # so that the resume settings compare the model through its config, however the text spelled it.
        self.overrides: dict = typed_config_overrides(self.config_overrides, MiniBertConfig())

    def validate(self) -> None:
        if self.model_name_or_path and self.model_size:
            raise UserError(
                "give either --model_name_or_path (continue a checkpoint) or --model_size (a fresh model), not both"
            )


def _typed(value: str, like):
    """A --config_overrides value as the type of the field's default."""
    if isinstance(like, bool):
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"expected true/false, got {value!r}")
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    if like is None:
        if value.lower() in ("none", "null"):
            return None
        for cast in (int, float):
            try:
                return cast(value)
            except ValueError:
                pass
    return value


def typed_config_overrides(text: str | None, base) -> dict:
    """--config_overrides (`"a=1,b=x"`) as config kwargs typed against `base` (a config); unknown names are an error."""
    out = {}
    for item in filter(None, (item.strip() for item in (text or "").split(","))):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key or not value:
            raise UserError(f"--config_overrides: expected `name=value` entries separated by commas, got {item!r}")
        if not hasattr(base, key):
            raise UserError(f"--config_overrides: {key!r} is not a {type(base).__name__} field")
        try:
            out[key] = _typed(value, getattr(base, key))
        except ValueError as e:
            raise UserError(f"--config_overrides: {key}={value}: {e}") from None
    return out


STREAMING_TOKENIZER_DOCUMENTS = 100_000


@dataclass
class DataArguments:
    """What to pretrain on and how to turn it into MLM + NSP examples (names as in run_mlm_no_trainer.py)."""

    train_file: list[str] | None = field(
        default=None,
        metadata={
            "help": "Training text: files, directories or globs (several allowed). .txt: BERT format, one sentence "
            "per line and a blank line between documents; .jsonl/.json: one JSON document per line. A directory "
            "saved by `datasets.save_to_disk` also works. None (and no --dataset_name): the built-in demo corpus."
        },
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Held-out text in the same formats; else --validation_split_percentage."}
    )
    validation_split_percentage: float = field(
        default=5,
        metadata={"help": "Percent of training documents held out for evaluation when there is no validation file."},
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "A `datasets.load_dataset` name, or a directory saved with save_to_disk."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration name."})
    dataset_text_column: str = field(default="text", metadata={"help": "Column (JSON field) holding the text."})
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "An existing tokenizer (path or Hub name); if unset, train a WordPiece one."}
    )
    vocab_size: int = field(default=8192, metadata={"help": "Vocabulary size of a trained tokenizer."})
    lowercase: bool = field(default=True, metadata={"help": "Lowercase (and strip accents) in a trained tokenizer."})
    min_frequency: int = field(default=2, metadata={"help": "Minimum count of a merge in a trained tokenizer."})
    tokenizer_train_documents: int | None = field(
        default=None,
        metadata={
            "help": f"Train the tokenizer on at most this many documents (streaming: "
            f"{STREAMING_TOKENIZER_DOCUMENTS} unless set)."
        },
    )
    max_seq_length: int = field(default=128, metadata={"help": "Tokens per example, [CLS] and [SEP]s included."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of tokens chosen for MLM."})
    next_sentence_prediction: bool = field(
        default=True,
        metadata={
            "help": "Train next-sentence prediction too (BERT); false: MLM only, as RoBERTa and later models "
            "(examples are consecutive documents' sentences packed in order up to --max_seq_length)."
        },
    )
    eval_mlm_probability: float | None = field(
        default=None,
        metadata={
            "help": "Share of tokens masked in evaluation (default: --mlm_probability), e.g. 0.15 to compare "
            "runs trained at different rates."
        },
    )
    mask_replace_prob: float = field(
        default=0.8, metadata={"help": "Of the chosen tokens, the share replaced by [MASK] (BERT: 0.8)."}
    )
    random_replace_prob: float = field(
        default=0.1,
        metadata={"help": "Of the chosen tokens, the share replaced by a random token (BERT: 0.1); the rest stay."},
    )
    short_seq_prob: float = field(
        default=0.1, metadata={"help": "Probability that a document's pairs are packed to a random shorter length."}
    )
    whole_word_mask: bool = field(
        default=False,
        metadata={"help": "Mask all pieces of a word together (words are found by WordPiece `##` continuations)."},
    )
    pad_to_multiple_of: int | None = field(
        default=None, metadata={"help": "Pad batches to a multiple of this length (e.g. 8 for tensor cores)."}
    )
    dupe_factor: int = field(
        default=1, metadata={"help": "Pairings made per document, each with other split points and random Bs."}
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for tokenizing and pairing (datasets.map num_proc)."}
    )
    overwrite_cache: bool = field(default=False, metadata={"help": "Rebuild the cached tokenizer and data."})
    data_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where prepared data is cached (default: $MINIBERT_CACHE or ~/.cache/minibert)."},
    )
    max_prepare_in_launch_mb: float = field(
        default=500,
        metadata={
            "help": "A multi-process launch that finds no prepared cache prepares a corpus of at most this "
            "many MB itself (the other processes wait); a larger one stops with a message to run "
            "`minibert-prepare` first."
        },
    )
    streaming: bool = field(
        default=False, metadata={"help": "Read, tokenize and pair on the fly, for corpora larger than the disk cache."}
    )
    streaming_buffer_size: int = field(
        default=2_000,
        metadata={
            "help": "Streaming: documents per block; a block is tokenized and paired on its own (a random "
            "NotNext B comes from the same block) and its pairs are shuffled (held in memory until "
            "yielded)."
        },
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on at most this many pairs (a fixed random subset)."}
    )

    def validate(self) -> None:
        # Cache keys are JSON: 5 and 5.0 must name the same entry (flags give floats, Python callers often ints).
        for name in ("validation_split_percentage", "mlm_probability", "short_seq_prob", "max_prepare_in_launch_mb"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self, name, float(value))
        if self.train_file and self.dataset_name:
            raise UserError("give either --train_file or --dataset_name, not both")
        if self.streaming and not self.next_sentence_prediction:
            raise UserError(
                "--next_sentence_prediction false is not supported with --streaming yet: prepare the data "
                "map-style (minibert-prepare) or keep NSP"
            )
        if self.eval_mlm_probability is not None and not 0 < self.eval_mlm_probability < 1:
            raise UserError(f"--eval_mlm_probability must be in (0, 1), got {self.eval_mlm_probability}")
        if not 0 <= self.validation_split_percentage < 100:
            raise UserError(
                f"--validation_split_percentage must be in [0, 100), got {self.validation_split_percentage}"
            )
        if self.max_seq_length < 8:
            raise UserError(f"--max_seq_length must be at least 8 ([CLS] A [SEP] B [SEP]), got {self.max_seq_length}")
        if not 0 < self.mlm_probability < 1:
            raise UserError(f"--mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if not (0 <= self.mask_replace_prob <= 1 and 0 <= self.random_replace_prob <= 1) or (
            self.mask_replace_prob + self.random_replace_prob > 1
        ):
            raise UserError(
                f"--mask_replace_prob ({self.mask_replace_prob}) and --random_replace_prob "
                f"({self.random_replace_prob}) must each be in [0, 1] and sum to at most 1"
            )
        if not 0 <= self.short_seq_prob <= 1:
            raise UserError(f"--short_seq_prob must be in [0, 1], got {self.short_seq_prob}")
        check_positive(self, "dupe_factor", "min_frequency", "streaming_buffer_size", "preprocessing_num_workers")
        check_positive(self, "max_eval_samples", "pad_to_multiple_of", "tokenizer_train_documents")
        if not self.max_prepare_in_launch_mb >= 0:
            raise UserError(f"--max_prepare_in_launch_mb must be >= 0, got {self.max_prepare_in_launch_mb}")
        if self.tokenizer_name is None and self.vocab_size < 100:
            raise UserError(f"--vocab_size must be at least 100, got {self.vocab_size}")
        if self.tokenizer_name is None and self.vocab_size > MAX_VOCAB_SIZE:  # `tokenizers` aborts the process
            raise UserError(f"--vocab_size must be at most {MAX_VOCAB_SIZE:,}, got {self.vocab_size:,}")
        # Past these a run does not fail, it fills memory for hours: BERT used dupe_factor 10 and 512 tokens.
        if self.dupe_factor > MAX_DUPE_FACTOR:
            raise UserError(f"--dupe_factor must be at most {MAX_DUPE_FACTOR}, got {self.dupe_factor:,}")
        if self.max_seq_length > MAX_SEQ_LENGTH:
            raise UserError(f"--max_seq_length must be at most {MAX_SEQ_LENGTH:,}, got {self.max_seq_length:,}")


MAX_VOCAB_SIZE = 2**24  # the WordPiece trainer panics (a process abort, no exception) on 2**31 and beyond
MAX_DUPE_FACTOR = 1000
MAX_SEQ_LENGTH = 65536


@dataclass
class PretrainingArguments:
    """The training loop: batch, optimizer, schedule, precision, checkpoints, logging and evaluation."""

    recipe: str = field(
        default="bert",
        metadata={
            "help": "A named set of defaults (pretrain/configs/recipes/<name>.yaml): `bert` (BERT's 2018 recipe) or "
            "`fast` (pre-LN, no biases or dropout, MLM only at 30 percent, WSD; see BENCHMARKS.md). Flags and config "
            "files override it.",
        },
    )
    output_dir: str = field(
        default=DEFAULT_PRETRAINED_DIR,
        metadata={"help": "Where the final Hub-ready model, metrics, curves and checkpoints/ are written."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start a new run in an output_dir that holds another run's checkpoints (they are deleted)."},
    )
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Sequences per device per micro-batch."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Sequences per device per evaluation batch."})
    gradient_accumulation_steps: int = field(
        default=1,
        metadata={
            "help": "Micro-batches per optimizer step. Global batch = per_device_train_batch_size x processes x "
            "gradient_accumulation_steps; the loss is averaged over the masked tokens of the whole global batch."
        },
    )
    learning_rate: float = field(default=5e-4, metadata={"help": "Peak learning rate (after warmup)."})
    weight_decay: float = field(default=0.01, metadata={"help": "Decoupled weight decay (not on biases or LayerNorm)."})
    optimizer: str = field(
        default="adamw",
        metadata={"help": "adamw (fused on CUDA) or lamb (for very large batches).", "choices": list(OPTIMIZERS)},
    )
    adam_beta1: float = field(default=0.9, metadata={"help": "First-moment decay of AdamW / LAMB."})
    adam_beta2: float = field(default=0.999, metadata={"help": "Second-moment decay of AdamW / LAMB."})
    adam_epsilon: float = field(default=1e-6, metadata={"help": "Epsilon of AdamW / LAMB (BERT used 1e-6)."})
    num_train_epochs: int = field(default=3, metadata={"help": "Epochs, unless --max_train_steps is given."})
    max_train_steps: int | None = field(
        default=None, metadata={"help": "Optimizer steps in total; overrides --num_train_epochs."}
    )
    lr_scheduler_type: str = field(
        default="linear", metadata={"help": "Decay after warmup.", "choices": list(SCHEDULERS)}
    )
    lr_decay_ratio: float = field(
        default=0.2,
        metadata={"help": "warmup_stable_decay: the fraction of the training steps spent in the final decay."},
    )
    lr_decay_type: str = field(
        default="1-sqrt",
        metadata={
            "help": "warmup_stable_decay: the shape of the final decay (1-sqrt: Hägele et al. 2024).",
            "choices": list(DECAY_TYPES),
        },
    )
    num_warmup_steps: int | None = field(default=None, metadata={"help": "Linear warmup, in optimizer steps."})
    warmup_ratio: float | None = field(
        default=None, metadata={"help": "Warmup as a fraction of the training steps (instead of --num_warmup_steps)."}
    )
    max_grad_norm: float = field(
        default=1.0, metadata={"help": "Clip the global gradient norm to this (0: no clipping)."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of the model initialisation, data order, masks and dropout."})
    mixed_precision: str | None = field(
        default=None,
        metadata={
            "help": "no, fp16 or bf16 (default: what `accelerate config` / `accelerate launch` says, else no).",
            "choices": list(MIXED_PRECISION),
        },
    )
    checkpointing_steps: str | None = field(
        default=None,
        metadata={
            "help": "Save a resumable checkpoint every N optimizer steps, or `epoch` at the end of every epoch "
            "(one is always saved at the end)."
        },
    )
    checkpoints_total_limit: int | None = field(
        default=3, metadata={"help": "Keep only the newest K checkpoints in output_dir/checkpoints (None: keep all)."}
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "Continue a run: a checkpoint folder (output_dir/checkpoints/step_N), or `latest` (or `last`) for the "
            "newest one in output_dir (a fresh start when there is none yet, so a requeued job can always pass it)."
        },
    )
    logging_steps: int = field(
        default=50, metadata={"help": "Log training loss, lr, grad norm and tokens/s every N steps."}
    )
    eval_steps: int | None = field(
        default=None, metadata={"help": "Evaluate on the held-out data every N optimizer steps (always at the end)."}
    )
    with_tracking: bool = field(default=False, metadata={"help": "Also log to accelerate trackers (see --report_to)."})
    report_to: str = field(
        default="tensorboard",
        metadata={"help": "Trackers for --with_tracking: tensorboard, wandb, comet_ml, mlflow, ... or `all`."},
    )
    time_budget: float | None = field(
        default=None,
        metadata={
            "help": "Wall-clock minutes for the training loop: then stop at a step boundary, checkpoint, evaluate "
            "and export as if the run had ended."
        },
    )
    schedule_by: str = field(
        default="steps",
        metadata={
            "help": "What the LR schedule (and --batch_size_warmup_ratio) runs over: `steps` (--max_train_steps) or "
            "`time` (--time_budget's wall-clock minutes: the LR follows the training time spent, as in Cramming, "
            "Geiping & Goldstein 2023, so the decay ends when the budget does on any hardware).",
            "choices": ["steps", "time"],
        },
    )
    batch_size_warmup_ratio: float = field(
        default=0.0,
        metadata={
            "help": "Batch-size warmup: over this fraction of training the micro-batches of a step ramp linearly "
            "from 1 to --gradient_accumulation_steps (small batches early, when they learn as much per sequence)."
        },
    )
    torch_compile: bool = field(default=False, metadata={"help": "Compile the model with torch.compile."})
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Recompute activations in the backward pass (less memory, ~30 percent slower)."},
    )
    dataloader_num_workers: int | None = field(
        default=None,
        metadata={"help": "Worker processes that build batches (default: 2 per process on GPU, 0 on CPU)."},
    )
    dry_run: bool = field(
        default=False,
        metadata={"help": "Check the set-up: a few training steps and a short evaluation; nothing saved or exported."},
    )
    fill_mask_prompts: list[str] | None = field(
        default=None,
        metadata={
            "help": "Sentences with [MASK] whose predictions are printed at the end (default: a few for the demo "
            "corpus, none for other data)."
        },
    )

    def validate(self) -> None:
        check_positive(self, "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps")
        check_positive(self, "num_train_epochs", "logging_steps", "max_train_steps", "eval_steps")
        check_positive(self, "checkpoints_total_limit")
        self._validate_optimizer()
        self._validate_schedule()
        if not 0 <= self.seed < 2**32:
            raise UserError(f"--seed must be in [0, 2**32), not {self.seed}")
        for prompt in self.fill_mask_prompts or []:
            if prompt.count("[MASK]") != 1:
                raise UserError(
                    f"--fill_mask_prompts: each prompt needs exactly one [MASK], not {prompt.count('[MASK]')} in {prompt!r}"
                )
        if self.dataloader_num_workers is not None and self.dataloader_num_workers < 0:
            raise UserError(f"--dataloader_num_workers must be >= 0, not {self.dataloader_num_workers}")
        self.checkpoint_interval()  # raises on a bad --checkpointing_steps
        if self.with_tracking:
            from minibert.cli import check_report_to

            check_report_to(self.report_to, trainer=False)
        if not self.output_dir:
            raise UserError("--output_dir must not be empty")

    def _validate_optimizer(self) -> None:
        """The learning rate, weight decay, clipping and Adam's constants."""
        if not self.learning_rate > 0:
            raise UserError(f"--learning_rate must be positive, not {self.learning_rate}")
        if not self.learning_rate < float("inf"):  # every weight would be NaN after the first update
            raise UserError(f"--learning_rate must be finite, not {self.learning_rate}")
        for name in ("weight_decay", "adam_epsilon", "max_grad_norm"):
            if getattr(self, name) != getattr(self, name):
                raise UserError(f"--{name} must be a number, not nan")
        if not self.weight_decay < float("inf"):
            raise UserError(f"--weight_decay must be finite, not {self.weight_decay}")
        if self.weight_decay < 0:
            raise UserError(f"--weight_decay must be >= 0, not {self.weight_decay}")
        if self.max_grad_norm < 0:
            raise UserError(f"--max_grad_norm must be >= 0 (0 turns clipping off), not {self.max_grad_norm}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"--{name} must be in [0, 1), not {getattr(self, name)}")
        if not 0 < self.adam_epsilon < float("inf"):
            raise UserError(f"--adam_epsilon must be positive, not {self.adam_epsilon}")
        for name in ("learning_rate", "weight_decay", "adam_epsilon", "max_grad_norm"):
            check_float32(getattr(self, name), f"--{name}")  # the optimizer's dtype: 1e39 is inf there

    def _validate_schedule(self) -> None:
        """Warmup, decay, the time budget and what the schedule runs over, the batch-size warmup."""
        if not 0 < self.lr_decay_ratio <= 1:
            raise UserError(f"--lr_decay_ratio must be in (0, 1], not {self.lr_decay_ratio}")
        if self.num_warmup_steps is not None and self.warmup_ratio is not None:
            raise UserError("give --num_warmup_steps or --warmup_ratio, not both")
        if self.num_warmup_steps is not None and self.num_warmup_steps < 0:
            raise UserError(f"--num_warmup_steps must be >= 0, not {self.num_warmup_steps}")
        if self.warmup_ratio is not None and not 0 <= self.warmup_ratio < 1:
            raise UserError(f"--warmup_ratio must be in [0, 1), not {self.warmup_ratio}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise UserError(f"--time_budget is in minutes and must be positive, not {self.time_budget}")
        if self.schedule_by == "time" and not self.time_budget:
            raise UserError("--schedule_by time runs the schedule over --time_budget: give --time_budget (minutes)")
        if self.schedule_by == "time" and self.num_warmup_steps is not None:
            raise UserError("--schedule_by time counts the warmup in time: give --warmup_ratio, not --num_warmup_steps")
        if not 0 <= self.batch_size_warmup_ratio < 1:
            raise UserError(f"--batch_size_warmup_ratio must be in [0, 1), not {self.batch_size_warmup_ratio}")

    def checkpoint_interval(self) -> int | str | None:
        """--checkpointing_steps as None, "epoch" or a positive int."""
        value = self.checkpointing_steps
        if value is None or str(value).lower() in ("", "none", "no"):
            return None
        if str(value).lower() == "epoch":
            return "epoch"
        try:
            steps = int(value)
        except ValueError:
            steps = 0
        if steps <= 0:
            raise UserError(f"--checkpointing_steps must be a positive integer or `epoch`, not {value!r}")
        return steps

    def warmup_steps(self, max_train_steps: int) -> int:
        if self.num_warmup_steps is not None:
            return self.num_warmup_steps
        return round((self.warmup_ratio or 0.0) * max_train_steps)


GROUPS = (ModelArguments, DataArguments, PretrainingArguments, HubArguments)  # minibert-pretrain's flags, pretrain()'s


def with_checkpoint_tokenizer(model_args: ModelArguments, data_args):
    """A run that continues a checkpoint uses its tokenizer unless --tokenizer_name names another: `data_args` with
    that decided (a copy; the caller's object is not changed). The one place this rule lives."""
    if model_args.model_name_or_path and not data_args.tokenizer_name:
        return replace(data_args, tokenizer_name=model_args.model_name_or_path)
    return data_args


@dataclass(frozen=True)
class RunPlan:
    """The decisions every part of a pretraining run reads, made once (`RunPlan.decide`) and passed down to the
    model builder, collator, loop and evaluation, which never re-infer them from a batch key or a head attribute.

    The fast path is part of the plan, not a config default a refactor can lose: every pretraining run computes the
    MLM head only at the masked positions (`sparse_head`: (M, vocab) logits instead of (B, S, vocab), the same loss)
    and runs position-wise work on the real tokens only (`unpadded`: the collator's `token_indices`). On a CPU
    without compilation, attention also runs per group of similar lengths (`grouped_attention`: the collator's
    `attention_groups`), each padded to its own longest sequence instead of the batch's; compiled or CUDA runs keep
    one padded attention (fixed shapes; the GPU check measures varlen attention instead). None of these is
    written into the checkpoint: a saved model's `config.sparse_prediction` stays False, so `pipeline("fill-mask")`
    and `Trainer` users get BERT's (B, S, vocab) logits. tests/test_fast_path.py pins both on the loop's own step.
    """

    objective: str  # "mlm+nsp" (BERT: masked-LM + next-sentence prediction) or "mlm" (masked-LM only)
    sparse_head: bool = True
    unpadded: bool = True
    grouped_attention: bool = False
    streaming: bool = False  # the data is a stream (no length, position saved by checkpoints), not a cached table

    @property
    def next_sentence_prediction(self) -> bool:
        return self.objective == "mlm+nsp"

    @classmethod
    def decide(cls, data_args, args=None, device=None) -> RunPlan:
        """The plan of a run from its data arguments (`--next_sentence_prediction`, `--streaming`), and from the
        training arguments and device where given (`--torch_compile`, CPU or not)."""
        return cls(
            objective="mlm+nsp" if data_args.next_sentence_prediction else "mlm",
            streaming=data_args.streaming,
            grouped_attention=device is not None and cls.groups_attention(device, bool(args and args.torch_compile)),
        )

    @staticmethod
    def groups_attention(device, torch_compile: bool) -> bool:
        """Attention per length group: on a CPU in eager mode only (compiled graphs need fixed shapes; CUDA keeps one
        padded sdpa kernel)."""
        return device.type == "cpu" and not torch_compile
