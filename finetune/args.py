"""Fine-tuning arguments: three dataclasses (model, data, training) with `run_glue.py`'s names, plus the shared
`minibert.cli.HubArguments`. `minibert-finetune --help` lists them all; a YAML/JSON file may hold the same keys."""

from __future__ import annotations

from dataclasses import dataclass, field

from minibert.checks import check_float32
from minibert.cli import HubArguments, UserError, check_positive, check_report_to
from minibert.runs import DEFAULT_PRETRAINED_DIR

from .metrics import PROBLEM_TYPES

DEFAULT_OUTPUT_DIR = "outputs/finetune"


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A minibert checkpoint, or a transformers BERT checkpoint (converted on the fly): a folder or a "
            f"Hub id. Default: {DEFAULT_PRETRAINED_DIR} (what `minibert-pretrain` writes) when it exists, else a "
            "fresh tiny model with a WordPiece tokenizer trained on the training texts."
        },
    )
    from_scratch: bool = field(
        default=False,
        metadata={
            "help": "Keep the checkpoint's config and tokenizer but initialise the weights randomly: the "
            "baseline that shows what pretraining is worth."
        },
    )
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={"help": "Re-initialise weights whose shapes differ (e.g. fine-tuning a classifier on new labels)."},
    )
    classifier_dropout: float | None = field(
        default=None, metadata={"help": "Dropout before the classifier (default: the config's hidden dropout)."}
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Where Hub downloads (models and datasets) are cached."}
    )
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of a Hub checkpoint."})

    def validate(self) -> None:
        if self.classifier_dropout is not None and not 0 <= self.classifier_dropout < 1:
            raise UserError(f"--classifier_dropout must be in [0, 1), not {self.classifier_dropout}")


@dataclass
class DataArguments:
    train_file: str | None = field(default=None, metadata={"help": "Training data: CSV, TSV, JSON or JSON Lines."})
    validation_file: str | None = field(
        default=None,
        metadata={
            "help": "Evaluation data (same columns). Default: --validation_split_percentage of the training data."
        },
    )
    test_file: str | None = field(
        default=None,
        metadata={"help": "Rows to predict into predict_results.jsonl (labels optional: with them, test_* metrics)."},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A `datasets` dataset instead of files: a Hub id or a folder (also one saved with "
            "`save_to_disk`). Its ClassLabel names become the label names."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration (e.g. sst2)."})
    train_split_name: str = field(default="train", metadata={"help": "Split of --dataset_name to train on."})
    validation_split_name: str = field(
        default="validation", metadata={"help": "Split of --dataset_name to evaluate on."}
    )
    test_split_name: str = field(default="test", metadata={"help": "Split of --dataset_name to predict."})
    text_column: str | None = field(
        default=None,
        metadata={
            "help": "Column with the (first) text. Default: sentence1 (+ sentence2) when present, likewise "
            "question1/question2, premise/hypothesis, question/sentence; else sentence or text."
        },
    )
    text_pair_column: str | None = field(default=None, metadata={"help": "Column with the second text of a pair."})
    label_column: str = field(
        default="label",
        metadata={"help": "Strings: class names; integers: class ids; floats: regression; lists: multi-label."},
    )
    problem_type: str | None = field(
        default=None,
        metadata={"help": f"Override what the labels imply: one of {', '.join(PROBLEM_TYPES)}."},
    )
    validation_split_percentage: float = field(
        default=10.0,
        metadata={
            "help": "Percentage of the training rows held out for evaluation when there is no validation "
            "data (0: no evaluation)."
        },
    )
    max_seq_length: int = field(
        default=128, metadata={"help": "Longer inputs are truncated (pairs: the longer text first)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N validation rows."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Predict only the first N test rows."})

    @property
    def has_data(self) -> bool:
        return bool(self.train_file or self.dataset_name)

    def validate(self) -> None:
        if self.dataset_name and (self.train_file or self.validation_file or self.test_file):
            raise UserError("pass either --dataset_name or --train_file/--validation_file/--test_file, not both")
        if not self.has_data and (self.validation_file or self.test_file):
            raise UserError("--validation_file / --test_file need --train_file")
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise UserError(f"--problem_type must be one of {', '.join(PROBLEM_TYPES)}, not {self.problem_type!r}")
        if not 0 <= self.validation_split_percentage < 100:
            raise UserError(
                f"--validation_split_percentage must be in [0, 100), not {self.validation_split_percentage}"
            )
        if self.max_seq_length < 2:
            raise UserError(f"--max_seq_length must be at least 2 ([CLS] and [SEP]), not {self.max_seq_length}")
        check_positive(self, "max_train_samples", "max_eval_samples", "max_predict_samples")


@dataclass
class FinetuneArguments:
    """The training knobs; `train.build_training_arguments` turns them into `transformers.TrainingArguments`."""

    output_dir: str = field(
        default=DEFAULT_OUTPUT_DIR,
        metadata={"help": "Where the fine-tuned checkpoint goes (Trainer checkpoints in its checkpoints/ folder)."},
    )
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch size per device."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size per device."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Peak learning rate of AdamW. Default: BERT-base's 5e-5 scaled by 768 / hidden_size, at "
            "most 1e-3 (3e-4 for hidden 128): small models barely move at BERT-base's rate."
        },
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases and LayerNorms)."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Fraction of the steps spent warming up linearly."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "linear, cosine, constant_with_warmup, ..."})
    num_train_epochs: float | None = field(
        default=None, metadata={"help": "Passes over the training data. Default: 3 (10 for the built-in demo)."}
    )
    max_train_steps: int | None = field(
        default=None, metadata={"help": "Stop after this many steps (overrides epochs)."}
    )
    eval_steps: int | None = field(
        default=None, metadata={"help": "Evaluate and checkpoint every N steps instead of every epoch."}
    )
    metric_for_best_model: str | None = field(
        default=None,
        metadata={
            "help": "Validation metric that picks the kept checkpoint. Default: accuracy (classes), "
            "f1_micro (multi-label), pearson (regression)."
        },
    )
    save_total_limit: int = field(default=2, metadata={"help": "Trainer checkpoints kept (the best one always)."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace an earlier fine-tuning run in OUTPUT_DIR (its checkpoints and results are deleted, "
            "once every input has been checked). The demo (no data arguments) always replaces its own."
        },
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "A Trainer checkpoint folder, or `last` (or `latest`) for the newest in OUTPUT_DIR/checkpoints. Without it "
            "a folder holding an earlier run is refused unless --overwrite_output_dir."
        },
    )
    logging_steps: int = field(default=50, metadata={"help": "Log the training loss every N steps."})
    report_to: str = field(default="none", metadata={"help": "Trackers: none, tensorboard, wandb, ... or all."})
    seed: int = field(default=42, metadata={"help": "Seed for initialisation, shuffling and the validation split."})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 mixed precision."})
    fp16: bool = field(default=False, metadata={"help": "float16 mixed precision (CUDA)."})
    num_examples_shown: int = field(default=5, metadata={"help": "Test predictions printed at the end."})

    def validate(self) -> None:
        check_positive(
            self,
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
            "save_total_limit",
        )
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise UserError(f"--learning_rate must be positive, not {self.learning_rate}")
        if not self.weight_decay >= 0:
            raise UserError(f"--weight_decay must be a finite number >= 0, not {self.weight_decay}")
        for name in ("learning_rate", "weight_decay"):  # finite, and within float32 (AdamW's dtype)
            check_float32(getattr(self, name), f"--{name}")
        if not 0 <= self.seed < 2**32:
            raise UserError(f"--seed must be in [0, 2**32), not {self.seed}")
        from transformers.trainer_utils import SchedulerType

        # Not reduce_lr_on_plateau: it needs an evaluation at each step.
        schedulers = [s.value for s in SchedulerType if s.value != "reduce_lr_on_plateau"]
        if self.lr_scheduler_type not in schedulers:
            raise UserError(
                f"--lr_scheduler_type must be one of {', '.join(schedulers)}, not {self.lr_scheduler_type!r}"
            )
        check_report_to(self.report_to, trainer=True)
        if not 0 <= self.warmup_ratio < 1:
            raise UserError(f"--warmup_ratio must be in [0, 1), not {self.warmup_ratio}")
        if self.num_train_epochs is not None and self.num_train_epochs <= 0:
            raise UserError(f"--num_train_epochs must be positive, not {self.num_train_epochs}")
        check_positive(self, "max_train_steps", "eval_steps")
        if self.bf16 and self.fp16:
            raise UserError("pass --bf16 or --fp16, not both")


GROUPS = (ModelArguments, DataArguments, FinetuneArguments, HubArguments)  # minibert-finetune's flags, finetune()'s

# The fields a resume (--resume_from_checkpoint) may change: each leaves what is trained, and on what, as it was.
# Every other field of the dataclasses above and of minibert.cli.HubArguments must match the checkpoint's run
# (`finetune.train.run_settings`): a new flag is checked on resume unless it joins this list with its reason.
RESUMABLE = frozenset(
    {
        # Where things are, not what is trained.
        "output_dir",  # a run's folder may have moved
        "resume_from_checkpoint",
        "overwrite_output_dir",  # read by a fresh run only
        "cache_dir",  # where Hub downloads are kept
        "ignore_mismatched_sizes",  # how the base model's head is loaded; a resume loads the checkpoint's weights
        # Around training, not in it.
        "per_device_eval_batch_size",  # evaluation only (padding is masked: the same scores)
        "logging_steps",
        "report_to",
        "save_total_limit",  # how many checkpoints stay on disk
        "num_examples_shown",
        # The run's length, as pretraining allows: a finished run may be continued for more steps or epochs.
        "num_train_epochs",
        "max_train_steps",
        # The test split is read after training only.
        "test_file",
        "test_split_name",
        "max_predict_samples",
        # HubArguments: what the finished model becomes (a BERT twin, an upload), not how it is trained. The token
        # is a secret: never written into a checkpoint.
        "export_bert",
        "push_to_hub",
        "hub_model_id",
        "hub_token",
        "hub_private_repo",
    }
)
