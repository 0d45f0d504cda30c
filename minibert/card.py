"""Every model card minibert writes (README.md): the pretrained model's, the fine-tuned classifier's, and the card of
the plain-BERT twin in `bert/` (`--export_bert`: by default whenever the model is a plain BERT).

The metadata comes from huggingface_hub's `ModelCardData` (scores as `EvalResult`s, which it writes as the Hub's
`model-index`), the body from the sections below, and the usage snippet from one writer, `usage`. `is_hub_id` is
the one test of "is this name a Hub repository?", here and in `minibert-convert`. Cards never show a path of the
training machine: a card travels with its folder (`shown_path`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from typing import NamedTuple

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .configuration_minibert import ARCHITECTURE_FIELDS
from .hub import BERT_TWIN_DIR

# transformers' `config.problem_type` values.
SINGLE_LABEL, MULTI_LABEL, REGRESSION = "single_label_classification", "multi_label_classification", "regression"

# Fine-tuning metric keys -> the Hub's metric ids and display names.
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
# Pretraining's held-out results -> display names, and the Hub's metric id for those in the model-index.
PRETRAINING_METRICS = {
    "eval_loss": ("Loss", None),
    "eval_mlm_loss": ("MLM loss", None),
    "eval_mlm_accuracy": ("MLM accuracy", "accuracy"),
    "eval_nsp_accuracy": ("NSP accuracy", None),  # a second `accuracy` would read as the MLM's on leaderboards
    "perplexity": ("MLM perplexity", "perplexity"),
}
TASK_WORDS = {
    SINGLE_LABEL: "text classification",
    MULTI_LABEL: "multi-label text classification",
    REGRESSION: "text regression (one score per input)",
}


# ---- names and paths -------------------------------------------------------------------------------------------
def is_hub_id(name: str | None) -> bool:
    """`name` or `owner/name` as huggingface_hub accepts a repository id, and no existing local path: `outputs/x`
    is a valid id, but where that folder exists, transformers loads the folder."""
    if not name or not isinstance(name, str) or os.path.exists(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def shown_path(path: str) -> str:
    """A local folder as a card may show it: relative to the directory the run started in when it lies inside it,
    else `path/to/<folder name>` (a path of the training machine means nothing where the card is read)."""
    relative = os.path.normpath(path)
    if os.path.isabs(relative) or relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return f"path/to/{os.path.basename(os.path.abspath(path))}"
    return relative


def _hide_paths(text: str, paths) -> str:
    """`text` (words a caller built, such as "`/data/run1`") with each local path in `paths` as `shown_path` has it."""
    spellings = {}
    for path in filter(None, paths):  # a Hub id is shown as it is: only its (absent) absolute spelling changes
        for spelling in (path, os.path.abspath(path)):
            if spelling != shown_path(path):
                spellings[spelling] = shown_path(path)
    for spelling in sorted(spellings, key=len, reverse=True):  # `/a/out2` before `/a/out`
        text = text.replace(spelling, spellings[spelling])
    return text


def _py(text: str) -> str:
    """`text` as a Python string literal (JSON's escapes are a subset of Python's)."""
    return json.dumps(text, ensure_ascii=False)


# ---- what every card holds -------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class CardInfo:
    """What every card says: which model, where to load it from, what it is, what it learnt from."""

    hub_model_id: str | None  # --hub_model_id: the title and the snippet's model, when a valid id
    output_dir: str  # the folder the card goes into
    config: object  # the model's config: its size, architecture knobs, labels
    num_parameters: int
    data_description: str  # "`train.csv`", "the dataset `glue` (`sst2`)"
    dataset_id: str | None = None  # --dataset_name: in the metadata when it is a Hub id
    dataset_config: str | None = None
    example: str  # the usage snippet's input
    export_bert: bool = False  # a plain-BERT twin in output_dir/bert, with its own card

    @property
    def reference(self) -> str:
        """What the card tells `pipeline(model=...)` to load: the Hub id when the model has one, else its folder."""
        return self.hub_model_id if self.on_hub else shown_path(self.output_dir)

    @property
    def on_hub(self) -> bool:
        return is_hub_id(self.hub_model_id)

    @property
    def title(self) -> str:
        return self.hub_model_id if self.on_hub else os.path.basename(os.path.abspath(self.output_dir))

    def local_paths(self) -> list[str]:
        return [self.output_dir, self.dataset_id]


@dataclass(kw_only=True)
class PretrainingCardInfo(CardInfo):
    next_sentence_prediction: bool  # the objective: MLM + NSP, or MLM only
    training: dict[str, object]  # the "Training" list: steps, batch, optimizer, hardware, ...
    results: dict[str, float]  # held-out evaluation: eval_loss, eval_mlm_accuracy, perplexity, ...
    example: str = "Paris is the [MASK] of France."


@dataclass(kw_only=True)
class FinetuningCardInfo(CardInfo):
    base_model: str  # what was fine-tuned, in words ("`outputs/pretrain`", "a randomly initialised tiny MiniBERT")
    base_model_id: str | None  # --model_name_or_path: in the metadata when it is a Hub id
    problem_type: str
    label_names: list[str]
    metrics: dict[str, float]  # all results, with eval_/test_/train_ prefixes
    hyperparameters: dict[str, object]
    example: str = "Put a sentence to classify here."
    example_pair: str | None = None  # sentence-pair tasks: the second text

    def local_paths(self) -> list[str]:
        return [*super().local_paths(), self.base_model_id]


class Cards(NamedTuple):
    model: str  # output_dir/README.md
    twin: str | None  # output_dir/bert/README.md, when the run writes the twin (--export_bert)


def render_cards(info: CardInfo) -> Cards:
    """The card of `info`'s model, and of its plain-BERT twin when it has one."""
    # Words the caller wrote may hold a path of this machine: they show it as the card shows paths.
    hidden = {"data_description": _hide_paths(info.data_description, info.local_paths())}
    if isinstance(info, FinetuningCardInfo):
        hidden["base_model"] = _hide_paths(info.base_model, info.local_paths())
    info = replace(info, **hidden)
    if isinstance(info, PretrainingCardInfo):
        data, sections = _pretraining(info)
    elif isinstance(info, FinetuningCardInfo):
        data, sections = _finetuning(info)
    else:
        raise TypeError(f"no card for {type(info).__name__}")
    if info.export_bert:
        sections.append(_twin_section(info))
    model = _card(data, info.title, sections)
    twin = _twin_card(info, data) if info.export_bert else None
    return Cards(model, twin)


def _card(data: ModelCardData, title: str, sections: list[str]) -> str:
    """YAML front matter from `data`, then the title and the sections (read back through `ModelCard`, which
    raises on metadata the Hub could not parse)."""
    body = "\n".join([f"# {title}\n", *sections])
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


# ---- the parts every card shares -------------------------------------------------------------------------------
def usage(
    reference: str,
    task: str,
    example: str,
    *,
    example_pair: str | None = None,
    problem_type: str | None = None,
    subfolder: str | None = None,
    remote_code: bool = True,
    local: bool = False,
) -> str:
    """The card's "Usage": a `pipeline(...)` call that runs as written where `reference` (a Hub id, or a folder when
    `local`) is found. `remote_code`: minibert's own folder (its model code ships beside the weights); the twin has
    none, and lies in `subfolder` of the model's folder."""
    kwargs = [_py(task), f"model={_py(reference)}"]
    if subfolder:  # a folder inside the repository (works for a Hub id and a local folder alike)
        kwargs.append(f'model_kwargs={{"subfolder": {_py(subfolder)}}}')
    if remote_code:
        kwargs.append("trust_remote_code=True")
    notes = []
    if problem_type == MULTI_LABEL:
        kwargs.append("top_k=None")
        notes.append("`top_k=None` gives every label with its own (sigmoid) score.")
    elif problem_type == REGRESSION:
        kwargs.append('function_to_apply="none"')
        notes.append('`function_to_apply="none"` gives the raw predicted score.')
    name = "fill" if task == "fill-mask" else "classifier"
    if example_pair is not None:
        call = f'{name}({{"text": {_py(example)}, "text_pair": {_py(example_pair)}}})'
    else:
        call = f"{name}({_py(example)})"
    code = f"from transformers import pipeline\n\n{name} = pipeline({', '.join(kwargs)})\nprint({call})\n"
    if remote_code:
        notes.append(
            "`trust_remote_code=True` runs the model code stored beside the weights (`modeling_minibert.py`, "
            "`configuration_minibert.py`). With the `minibert` package imported it is not needed: `import minibert` "
            "registers the classes with transformers' Auto classes."
        )
    else:
        notes.append("A plain transformers BERT: no remote code, no minibert needed.")
    if local:
        notes.append(f"`{reference}` is the model's folder; give its path on your machine.")
    return f"```python\n{code}```\n\n" + " ".join(notes) + "\n"


def _usage_section(info: CardInfo, task: str, **where) -> str:
    """ "## Usage" of `info`'s model with its own example; `where`: the twin's `subfolder` and `remote_code`."""
    return "## Usage\n\n" + usage(
        info.reference,
        task,
        info.example,
        example_pair=getattr(info, "example_pair", None),
        problem_type=getattr(info, "problem_type", None),
        local=not info.on_hub,
        **where,
    )


def architecture_differences(config) -> list[str]:
    """How `config` departs from BERT's architecture, in words (empty for a BERT)."""
    knobs = {name: getattr(config, name, bert) for name, bert in ARCHITECTURE_FIELDS.items()}
    words = []
    if knobs["pre_layer_norm"]:
        words.append("LayerNorm before each sublayer (pre-LN) instead of after the residual sum")
    if knobs["gated_feed_forward"]:
        act = getattr(config, "hidden_act", "gelu")
        gate = "GEGLU" if act.startswith("gelu") else "SwiGLU" if act in ("silu", "swish") else f"gated {act}"
        words.append(f"a gated feed-forward block ({gate})")
    if not knobs["attention_bias"] and not knobs["mlp_bias"]:
        words.append("no biases in the attention and feed-forward layers")
    elif not knobs["attention_bias"]:
        words.append("no biases in the attention layers")
    elif not knobs["mlp_bias"]:
        words.append("no biases in the feed-forward layers")
    return words


def describe_size(config, num_parameters: int) -> str:
    """ "2 layers, hidden size 128, 2 heads, 4.4M parameters": a model's size in words (cards, log lines)."""
    n = num_parameters
    size = f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"
    return (
        f"{config.num_hidden_layers} layers, hidden size {config.hidden_size}, {config.num_attention_heads} heads, "
        f"{size} parameters"
    )


def _model_facts(info: CardInfo) -> list[str]:
    """The size and the architecture, as list items."""
    c = info.config
    facts = [f"- Size: {describe_size(c, info.num_parameters)}, vocabulary {c.vocab_size}"]
    differences = architecture_differences(c)
    if differences:
        facts.append(
            f"- Architecture: BERT's, except {'; '.join(differences)}. transformers' `BertModel` cannot compute "
            "this: it runs on minibert's code only"
        )
    else:
        facts.append("- Architecture: BERT's; equal to transformers' `BertModel` with the same weights")
    return facts


def _table(rows, header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "| --- | --- |"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float):
        return str(value) if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def _dataset_ids(info: CardInfo) -> list[str] | None:
    return [info.dataset_id] if is_hub_id(info.dataset_id) else None


def _twin_section(info: CardInfo) -> str:
    ref = info.reference
    return (
        "## Two folders, the same weights\n\n"
        f"- `{ref}`: minibert (remote code; `trust_remote_code=True` where minibert is not installed).\n"
        f"- `{ref.rstrip('/')}/{BERT_TWIN_DIR}`: a plain transformers BERT (`model_type: bert`, no remote code), equal "
        f'outputs; load it with `subfolder="{BERT_TWIN_DIR}"`.\n\n'
        "| client | folder |\n|---|---|\n"
        "| transformers (Auto classes, pipelines, `Trainer`), peft, sentence-transformers | either |\n"
        "| optimum (ONNX export, `ORTModel...`), sentence-transformers' ONNX / OpenVINO backends, GLiNER, stacks "
        f"that forbid remote code | `{BERT_TWIN_DIR}/` (they look a model up by its `model_type`) |\n"
    )


def _twin_card(info: CardInfo, data: ModelCardData) -> str:
    ref = info.reference
    twin = ModelCardData(
        library_name="transformers",
        pipeline_tag=data.pipeline_tag,
        tags=["bert", "minibert", data.pipeline_tag],
        datasets=data.datasets,
    )
    sections = [
        f"The same weights as the minibert model in the folder above (`{ref}`), as a plain transformers BERT "
        "(`model_type: bert`): it loads with `BertModel` / `AutoModel` and `pipeline(...)` without "
        "`trust_remote_code`, and serves from stacks that know only BERT (ONNX exporters, embedding servers). Its "
        "outputs equal minibert's. The model card of the folder above says how it was trained and how it scores.\n",
        _usage_section(info, data.pipeline_tag, subfolder=BERT_TWIN_DIR, remote_code=False),
    ]
    return _card(twin, f"{info.title}: the plain-BERT twin", sections)


# ---- the pretrained model -----------------------------------------------------------------------------------------
def _pretraining(info: PretrainingCardInfo) -> tuple[ModelCardData, list[str]]:
    objective = (
        "masked-language modelling (MLM) and next-sentence prediction (NSP); the checkpoint holds both heads"
        if info.next_sentence_prediction
        else "masked-language modelling (MLM) only; the checkpoint holds the MLM head and no sentence-pair head"
    )
    dataset = f"held-out part of {info.data_description}"
    eval_results = [
        EvalResult(
            task_type="fill-mask",
            task_name="Masked-language modelling",
            dataset_type=info.dataset_id if is_hub_id(info.dataset_id) else "custom",
            dataset_name=dataset,
            dataset_config=info.dataset_config,
            dataset_split="validation",
            metric_type=hub_id,
            metric_name=name,
            metric_value=round(float(info.results[key]), 4),
        )
        for key, (name, hub_id) in PRETRAINING_METRICS.items()
        if hub_id and key in info.results and math.isfinite(info.results[key])
    ]
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="fill-mask",
        tags=["minibert", "bert", "fill-mask"],
        datasets=_dataset_ids(info),
        metrics=sorted({r.metric_type for r in eval_results}) or None,
        model_name=info.title if eval_results else None,
        eval_results=eval_results or None,
    )
    training = [f"- Data: {info.data_description}"]
    training += [f"- {k.replace('_', ' ').capitalize()}: {_fmt(v)}" for k, v in info.training.items()]
    sections = [
        f"A BERT encoder pretrained from scratch by minibert's `minibert-pretrain` on {info.data_description}.\n",
        "\n".join([f"- Objective: {objective}", *_model_facts(info)]) + "\n",
        "## Training\n\n" + "\n".join(training) + "\n",
    ]
    if info.results:
        rows = [(f"{PRETRAINING_METRICS.get(k, (k,))[0]} (`{k}`)", _fmt(v)) for k, v in info.results.items()]
        sections.append(f"## Evaluation ({dataset})\n\n" + _table(rows, ("metric", "value")))
    sections.append(_usage_section(info, "fill-mask"))
    return data, sections


# ---- the fine-tuned classifier ------------------------------------------------------------------------------------
def _scores(prefix: str, metrics: dict[str, float]) -> list[tuple[str, float]]:
    return [
        (key[len(prefix) :], value)
        for key, value in metrics.items()
        if key.startswith(prefix) and key[len(prefix) :] in HUB_METRICS and math.isfinite(value)
    ]


def _finetuning(info: FinetuningCardInfo) -> tuple[ModelCardData, list[str]]:
    tags = ["minibert", "bert", "text-classification"]
    if info.problem_type == MULTI_LABEL:
        tags.append("multi-label-classification")
    elif info.problem_type == REGRESSION:
        tags.append("regression")
    eval_results = [
        EvalResult(
            task_type="text-classification",
            task_name=TASK_WORDS[info.problem_type].capitalize(),
            dataset_type=info.dataset_id if is_hub_id(info.dataset_id) else "custom",
            dataset_name=info.data_description,
            dataset_config=info.dataset_config,
            dataset_split=split,
            metric_type=HUB_METRICS[key][0],
            metric_name=HUB_METRICS[key][1],
            metric_value=round(float(value), 4),
        )
        for prefix, split in (("eval_", "validation"), ("test_", "test"))
        for key, value in _scores(prefix, info.metrics)
    ]
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=tags,
        base_model=info.base_model_id if is_hub_id(info.base_model_id) else None,
        datasets=_dataset_ids(info),
        metrics=sorted({HUB_METRICS[key][0] for key, _ in _scores("eval_", info.metrics)}) or None,
        model_name=info.title if eval_results else None,
        eval_results=eval_results or None,
    )
    sections = [
        f"A MiniBERT fine-tuned for {TASK_WORDS[info.problem_type]} on {info.data_description}, starting from "
        f"{info.base_model}.\n",
        "\n".join(_model_facts(info)) + "\n",
    ]
    if info.example_pair is not None:
        sections.append("Inputs are pairs of texts, encoded as `[CLS] text [SEP] text_pair [SEP]`.\n")
    if info.problem_type != REGRESSION:
        shown = info.label_names[:50]
        more = len(info.label_names) - len(shown)
        sections.append(
            "## Labels\n\n"
            + _table([(str(i), f"`{n}`") for i, n in enumerate(shown)], ("id", "label"))
            + (f"\n… and {more} more (see `id2label` in config.json).\n" if more else "")
        )
    for prefix, title in (("eval_", "validation set"), ("test_", "test set")):
        rows = _scores(prefix, info.metrics)
        if rows:
            sections.append(
                f"## Results on the {title}\n\n"
                + _table([(HUB_METRICS[k][1], f"{v:.4f}") for k, v in rows], ("metric", "value"))
            )
    sections.append(_usage_section(info, "text-classification"))
    sections.append(
        "## Training\n\nFine-tuned with `minibert-finetune` (transformers' `Trainer`), keeping the checkpoint with "
        "the best validation score.\n\n"
        + _table([(k, f"`{v}`") for k, v in info.hyperparameters.items()], ("hyperparameter", "value"))
    )
    return data, sections
