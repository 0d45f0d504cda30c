"""The model card (README.md) of a fine-tuned checkpoint: Hub metadata in YAML front matter, then what the model
does, its labels, its scores, how to use it and how it was trained."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import yaml

from .metrics import MULTI_LABEL, REGRESSION, SINGLE_LABEL

# Our metric keys -> the Hub's metric ids and display names.
HUB_METRICS = {
    "accuracy": ("accuracy", "Accuracy"),
    "f1": ("f1", "Macro F1"),
    "matthews_correlation": ("matthews_correlation", "Matthews correlation"),
    "exact_match": ("exact_match", "Exact match (all labels right)"),
    "f1_micro": ("f1", "Micro F1"),
    "f1_macro": ("f1", "Macro F1"),
    "pearson": ("pearsonr", "Pearson correlation"),
    "spearmanr": ("spearmanr", "Spearman correlation"),
}
TASK_WORDS = {
    SINGLE_LABEL: "text classification",
    MULTI_LABEL: "multi-label text classification",
    REGRESSION: "text regression (one score per input)",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$|^[A-Za-z0-9][\w.-]*$")


@dataclass
class CardInfo:
    model_name: str  # Hub id when pushing, else the output folder's name
    model_path: str  # what `pipeline(model=...)` takes: the Hub id, or the output folder
    base_model: str  # what was fine-tuned, in words ("`outputs/pretrain`", "a randomly initialised tiny MiniBERT")
    base_model_id: str | None  # --model_name_or_path: in the metadata when it is a Hub id
    problem_type: str
    label_names: list[str]
    data_description: str  # "train_file data/train.csv" / "dataset glue/sst2"
    dataset_id: str | None  # a Hub dataset id, for the metadata
    dataset_config: str | None
    metrics: dict[str, float]  # all results, with eval_/test_/train_ prefixes
    hyperparameters: dict[str, object]
    architecture: str  # "2 layers, hidden size 128, 4 heads, 4.4M parameters"
    is_pair: bool = False
    example_text: str = "Put a sentence to classify here."
    example_pair: str | None = None
    extra_tags: list[str] = field(default_factory=list)


def _is_hub_id(name: str | None) -> bool:
    return bool(name) and not os.path.exists(name) and bool(_HUB_ID.match(name)) and not name.startswith(("/", "."))


def _metrics_for(prefix: str, metrics: dict[str, float]) -> list[tuple[str, float]]:
    return [
        (key[len(prefix) :], value)
        for key, value in metrics.items()
        if key.startswith(prefix) and key[len(prefix) :] in HUB_METRICS
    ]


def front_matter(info: CardInfo) -> dict:
    tags = ["minibert", "bert", "text-classification", *info.extra_tags]
    if info.problem_type == MULTI_LABEL:
        tags.append("multi-label-classification")
    elif info.problem_type == REGRESSION:
        tags.append("regression")
    meta: dict = {"library_name": "transformers", "pipeline_tag": "text-classification", "tags": tags}
    if _is_hub_id(info.base_model_id):
        meta["base_model"] = info.base_model_id
    if info.dataset_id and _is_hub_id(info.dataset_id):
        meta["datasets"] = [info.dataset_id]
    evaluated = _metrics_for("eval_", info.metrics)
    meta["metrics"] = sorted({HUB_METRICS[key][0] for key, _ in evaluated})
    if evaluated:
        dataset = {"name": info.data_description, "type": info.dataset_id or "custom", "split": "validation"}
        if info.dataset_config:
            dataset["config"] = info.dataset_config
        meta["model-index"] = [
            {
                "name": info.model_name,
                "results": [
                    {
                        "task": {"type": "text-classification", "name": TASK_WORDS[info.problem_type].capitalize()},
                        "dataset": dataset,
                        "metrics": [
                            {"type": HUB_METRICS[key][0], "value": round(float(value), 4), "name": HUB_METRICS[key][1]}
                            for key, value in evaluated
                        ],
                    }
                ],
            }
        ]
    return meta


def _usage(info: CardInfo) -> str:
    kwargs = ""
    if info.problem_type == MULTI_LABEL:
        kwargs = ", top_k=None"  # every label with its own sigmoid score
    elif info.problem_type == REGRESSION:
        kwargs = ', function_to_apply="none"'  # the raw score, no softmax/sigmoid
    if info.is_pair:
        call = f'classifier({{"text": {info.example_text!r}, "text_pair": {info.example_pair or ""!r}}})'
    else:
        call = f"classifier({info.example_text!r})"
    return (
        "```python\n"
        "from transformers import pipeline\n\n"
        f'classifier = pipeline("text-classification", model="{info.model_path}", trust_remote_code=True{kwargs})\n'
        f"print({call})\n"
        "```\n\n"
        "`trust_remote_code=True` runs the model code stored beside the weights (`modeling_minibert.py`, "
        "`configuration_minibert.py`). With the `minibert` package imported it is not needed: `import minibert` "
        "registers the classes with transformers' Auto classes.\n"
    )


def _table(rows: list[tuple[str, str]], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "| --- | --- |"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines) + "\n"


def render_model_card(info: CardInfo) -> str:
    meta = yaml.safe_dump(front_matter(info), sort_keys=False, allow_unicode=True)
    parts = [f"---\n{meta}---\n", f"# {info.model_name}\n"]
    parts.append(
        f"A MiniBERT ({info.architecture}) fine-tuned for {TASK_WORDS[info.problem_type]} on "
        f"{info.data_description}, starting from {info.base_model}. MiniBERT is BERT's encoder, numerically "
        "identical to transformers' `BertModel`.\n"
    )
    if info.is_pair:
        parts.append("Inputs are pairs of texts, encoded as `[CLS] text [SEP] text_pair [SEP]`.\n")
    if info.problem_type != REGRESSION:
        shown = info.label_names[:50]
        more = (
            f"\n… and {len(info.label_names) - 50} more (see `id2label` in config.json).\n"
            if len(info.label_names) > 50
            else ""
        )
        parts.append(
            "## Labels\n\n" + _table([(str(i), f"`{n}`") for i, n in enumerate(shown)], ("id", "label")) + more
        )
    for prefix, title in (("eval_", "validation set"), ("test_", "test set")):
        rows = _metrics_for(prefix, info.metrics)
        if rows:
            parts.append(
                f"## Results on the {title}\n\n"
                + _table([(HUB_METRICS[k][1], f"{v:.4f}") for k, v in rows], ("metric", "value"))
            )
    parts.append("## Usage\n\n" + _usage(info))
    hyper = [(k, f"`{v}`") for k, v in info.hyperparameters.items()]
    parts.append(
        "## Training\n\nFine-tuned with `minibert-finetune` (transformers' `Trainer`), keeping the checkpoint "
        "with the best validation score.\n\n" + _table(hyper, ("hyperparameter", "value"))
    )
    return "\n".join(parts)
