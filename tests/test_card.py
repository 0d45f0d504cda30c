"""Model cards (`minibert.card`): every card read back by huggingface_hub, every usage snippet run, no path of this
machine in any card, the pretraining objective and architecture as they were.

Oracles: huggingface_hub's own parser (`ModelCard`, `ModelCardData`, its `model-index` -> `EvalResult` reader) and
repo-id validator, transformers' list of pipeline tasks, the saved models themselves for what a snippet prints
(run where minibert cannot be imported), and the folders' real paths.
"""

import ast
import json
import math
import os
import re

import pytest
import torch
import yaml
from conftest import TINY, run_without_minibert
from huggingface_hub import ModelCard
from huggingface_hub.utils import validate_repo_id

from minibert import MiniBertConfig
from minibert.card import FinetuningCardInfo, PretrainingCardInfo, is_hub_id, render_cards
from minibert.cli import UserError

SINGLE, MULTI, REGRESSION = "single_label_classification", "multi_label_classification", "regression"
# A path of this machine: `/x/y` not preceded by a word character (`owner/name` and `path/to/x` are fine).
ABSOLUTE_PATH = re.compile(r"(?<![\w.~/-])/(?:[\w.-]+/)*[\w.-]+")


def check_card(text: str) -> ModelCard:
    """What the Hub's card validation checks and can be checked offline: the front matter is a YAML mapping that
    `ModelCard` reads without ignoring errors (a model-index it can turn into `EvalResult`s), names a pipeline
    transformers has, the library, valid repository ids, finite numeric scores; no path of this machine."""
    from transformers.pipelines import SUPPORTED_TASKS

    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n", 2)[1])
    card = ModelCard(text, ignore_metadata_errors=False)
    assert card.data.to_dict() == front  # nothing the Hub's parser drops or changes
    assert card.data.library_name == "transformers" and card.data.pipeline_tag in SUPPORTED_TASKS
    for repo in ([card.data.base_model] if card.data.base_model else []) + (card.data.datasets or []):
        validate_repo_id(repo)
    for result in card.data.eval_results or []:
        assert isinstance(result.metric_value, float) and math.isfinite(result.metric_value)
        assert result.task_type == card.data.pipeline_tag and result.dataset_name and result.dataset_type
    assert not ABSOLUTE_PATH.search(text), ABSOLUTE_PATH.search(text)
    assert os.getcwd() not in text and os.path.expanduser("~") not in text
    return card


def snippets(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def finetuning_info(**overrides) -> FinetuningCardInfo:
    info = dict(
        hub_model_id="me/tiny-sst2",
        output_dir="outputs/finetune",
        config=MiniBertConfig(**TINY),
        num_parameters=123_456,
        base_model="`google-bert/bert-base-uncased`",
        base_model_id="google-bert/bert-base-uncased",
        problem_type=SINGLE,
        label_names=["negative", "positive"],
        data_description="the dataset `glue` (`sst2`)",
        dataset_id="glue",
        dataset_config="sst2",
        metrics={
            "eval_accuracy": 0.91234,
            "eval_f1": 0.9,
            "eval_matthews_correlation": 0.8,
            "eval_loss": 0.3,
            "test_accuracy": 0.9,
            "train_runtime": 12.0,
        },
        hyperparameters={"learning_rate": "5e-05"},
        example="a fine film",
    )
    return FinetuningCardInfo(**{**info, **overrides})


def pretraining_info(config=None, nsp=True, **overrides) -> PretrainingCardInfo:
    results = {"eval_loss": 3.5, "eval_mlm_loss": 3.0, "eval_mlm_accuracy": 0.41234, "perplexity": 20.09}
    if nsp:
        results["eval_nsp_accuracy"] = 0.75
    info = dict(
        hub_model_id=None,
        output_dir="outputs/pretrain",
        config=config or MiniBertConfig(**TINY),
        num_parameters=123_456,
        data_description="`topics.txt`",
        next_sentence_prediction=nsp,
        training={"steps": 300, "hardware": "1 CPU process"},
        results=results,
    )
    return PretrainingCardInfo(**{**info, **overrides})


def scores(card: ModelCard) -> dict:
    return {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}


# ---- metadata --------------------------------------------------------------------------------------------------
def test_finetuning_metadata_reads_back_with_the_scores():
    card = check_card(render_cards(finetuning_info()).model)
    data = card.data
    assert data.pipeline_tag == "text-classification" and "minibert" in data.tags
    assert data.base_model == "google-bert/bert-base-uncased" and data.datasets == ["glue"]
    assert set(data.metrics) == {"accuracy", "f1", "matthews_correlation"}
    assert data.model_name == "me/tiny-sst2"
    # The Hub's metric ids; the validation and test splits apart; loss and runtimes are no Hub metrics.
    assert scores(card) == {
        ("validation", "accuracy"): pytest.approx(0.91234, abs=1e-4),
        ("validation", "f1"): 0.9,
        ("validation", "matthews_correlation"): 0.8,
        ("test", "accuracy"): 0.9,
    }
    assert {(r.dataset_type, r.dataset_config) for r in data.eval_results} == {("glue", "sst2")}


@pytest.mark.parametrize(
    "problem_type, metrics, expected",
    [
        (MULTI, {"eval_exact_match": 0.5, "eval_f1_micro": 0.7}, {"exact_match": 0.5, "f1": 0.7}),
        (REGRESSION, {"eval_pearson": 0.8, "eval_spearmanr": 0.7}, {"pearsonr": 0.8, "spearmanr": 0.7}),
    ],
)
def test_multi_label_and_regression_metadata(problem_type, metrics, expected):
    card = check_card(render_cards(finetuning_info(problem_type=problem_type, metrics=metrics)).model)
    assert {metric: value for (_, metric), value in scores(card).items()} == expected
    assert ("multi-label-classification" if problem_type == MULTI else "regression") in card.data.tags


def test_pretraining_metadata_reads_back_with_the_scores():
    card = check_card(render_cards(pretraining_info(dataset_id="wikitext", dataset_config="wikitext-2-raw-v1")).model)
    assert card.data.pipeline_tag == "fill-mask" and card.data.datasets == ["wikitext"]
    assert card.data.base_model is None  # pretrained from scratch
    assert scores(card) == {("validation", "accuracy"): 0.4123, ("validation", "perplexity"): 20.09}
    assert {r.task_type for r in card.data.eval_results} == {"fill-mask"}
    assert "eval_nsp_accuracy" in card.text  # in the body's table; not a second `accuracy` in the metadata


@pytest.mark.parametrize(
    "name, hub",
    [
        ("bert-base-uncased", True),
        ("google-bert/bert-base-uncased", True),
        ("me/tiny_sst2.v2", True),
        ("/data/ckpt", False),
        ("./ckpt", False),
        ("~/ckpt", False),
        ("a/b/c", False),
        ("me/x--y", False),
        (".hidden", False),
        ("me/x.git", False),
        ("", False),
        (None, False),
    ],
)
def test_hub_ids(name, hub):
    assert is_hub_id(name) is hub


def test_an_existing_folder_is_no_hub_id_and_convert_says_so(tmp_path, monkeypatch):
    from minibert.convert import read_checkpoint_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "me" / "model").mkdir(parents=True)
    assert is_hub_id("me/other") and not is_hub_id("me/model")
    with pytest.raises(UserError, match="no such checkpoint directory"):
        read_checkpoint_config("me/other/model")  # a path, never asked of the Hub
    with pytest.raises(UserError, match="the Hub said"):
        read_checkpoint_config("me/other")  # an id: the (offline) Hub is asked


# ---- paths -----------------------------------------------------------------------------------------------------
def test_local_paths_stay_out_of_every_card(tmp_path):
    pretrained, data = tmp_path / "pretrained", tmp_path / "saved-dataset"
    pretrained.mkdir()
    data.mkdir()
    info = finetuning_info(
        hub_model_id=None,
        output_dir=str(tmp_path / "clf"),
        base_model=f"`{pretrained}`",
        base_model_id=str(pretrained),
        dataset_id=str(data),
        dataset_config=None,
        data_description=f"the dataset `{data}`",
        export_bert=True,
    )
    cards = render_cards(info)
    for text in cards:
        assert str(tmp_path) not in text
        check_card(text)
    card = ModelCard(cards.model)
    assert card.data.base_model is None and card.data.datasets is None  # local folders are no Hub ids
    assert {r.dataset_type for r in card.data.eval_results} == {"custom"}
    assert "pretrained`" in card.text  # still says what it started from

    for nsp in (True, False):
        cards = render_cards(pretraining_info(nsp=nsp, output_dir=str(tmp_path / "out"), export_bert=True))
        for text in cards:
            assert str(tmp_path) not in text
            check_card(text)


def test_a_relative_output_dir_is_shown_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (code,) = snippets(render_cards(finetuning_info(hub_model_id=None, output_dir="outputs/clf")).model)
    assert _pipeline_model(code) == "outputs/clf"
    (code,) = snippets(render_cards(finetuning_info(hub_model_id=None, output_dir="../elsewhere/clf")).model)
    assert not _pipeline_model(code).startswith("..")


# ---- what the pretraining card says ------------------------------------------------------------------------------
def test_an_mlm_only_card_claims_no_next_sentence_prediction():
    from pretrain.recipes import RECIPES

    fast = RECIPES["fast"]
    assert fast["next_sentence_prediction"] is False
    config = MiniBertConfig(**TINY)
    config.update_from_string(fast["config_overrides"])
    text = render_cards(pretraining_info(config, nsp=False)).model
    check_card(text)
    assert "masked-language modelling" in text
    assert "next-sentence" not in text.lower() and "nsp" not in text.lower()
    assert "next-sentence prediction" in render_cards(pretraining_info(nsp=True)).model


def test_the_architecture_knobs_are_named_when_they_differ_from_bert():
    from pretrain.recipes import RECIPES

    config = MiniBertConfig(**TINY)
    config.update_from_string(RECIPES["fast"]["config_overrides"])  # pre-LN, no biases
    config.update_from_string("gated_feed_forward=true")  # and a GEGLU feed-forward, a knob of its own
    fast = render_cards(pretraining_info(config, nsp=False)).model
    assert "pre-LN" in fast and "GEGLU" in fast and "no biases" in fast
    assert "equal to transformers' `BertModel`" not in fast
    swiglu = MiniBertConfig(**TINY, gated_feed_forward=True, hidden_act="silu", mlp_bias=False)
    text = render_cards(pretraining_info(swiglu)).model
    assert "SwiGLU" in text and "feed-forward layers" in text and "pre-LN" not in text
    bert = render_cards(pretraining_info()).model
    assert "equal to transformers' `BertModel`" in bert and "pre-LN" not in bert and "GLU" not in bert
    # A fine-tuned model of that architecture says it too.
    assert "GEGLU" in render_cards(finetuning_info(config=config)).model


# ---- the usage snippets run ----------------------------------------------------------------------------------------
def _pipeline_model(code: str) -> str:
    (call,) = [
        node
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "pipeline"
    ]
    return next(k.value.value for k in call.keywords if k.arg == "model")


def _pointed_at(code: str, folder) -> str:
    """`code` with its `pipeline(model=...)` replaced by `folder` (the Hub id or placeholder the card shows)."""
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "pipeline":
            for keyword in node.keywords:
                if keyword.arg == "model":
                    keyword.value = ast.Constant(str(folder))
    return ast.unparse(tree)


def _only(printed):
    """The one result a snippet printed (pipelines wrap one input's result in lists, more or fewer by version)."""
    while isinstance(printed, list) and len(printed) == 1:
        printed = printed[0]
    return printed


RUN_SNIPPETS = """
import json, sys
sys.modules["minibert"] = None  # only the checkpoints' own code (or plain BERT) can serve
printed = {}
for name, code in json.loads(open(sys.argv[1]).read()).items():
    printed[name] = []
    exec(code, {"print": printed[name].append})
print(json.dumps(printed, default=float))
"""


def test_every_usage_snippet_runs_as_written(tmp_path, wordpiece_tokenizer):
    """Real folders (weights, code, tokenizer, card), each card's snippet run where minibert is not installed,
    with its model pointed at the folder; what it prints is what the model computes."""
    from transformers import AutoTokenizer

    from minibert import MiniBertForPreTraining, MiniBertForSequenceClassification
    from minibert.hub import save_bert_twin, save_model_folder

    tok = wordpiece_tokenizer
    vocab = len(tok)
    pair = ("what is the capital of france?", "paris is the capital of france.")
    folders, code = {}, {}

    def save(name, model, info):
        cards = render_cards(info)
        folders[name] = tmp_path / name
        save_model_folder(model, tok, str(folders[name]), model_card=cards.model)
        if cards.twin:
            save_bert_twin(model, tok, str(folders[name]), model_card=cards.twin)
            # the card says which clients need the twin (those keyed by model type)
            assert "| optimum" in cards.model and "`bert/` (they look a model up by its `model_type`)" in cards.model
        for folder in (folders[name], folders[name] / "bert"):
            if (folder / "README.md").exists():
                text = (folder / "README.md").read_text()
                check_card(text)
                (snippet,) = snippets(text)
                code[name if folder == folders[name] else f"{name}-twin"] = _pointed_at(snippet, folders[name])

    torch.manual_seed(0)
    config = MiniBertConfig(**{**TINY, "vocab_size": vocab})
    save(
        "pretrain",
        MiniBertForPreTraining(config).eval(),
        pretraining_info(
            output_dir=str(tmp_path / "pretrain"), example="paris is the [MASK] of france.", export_bert=True
        ),
    )
    labels = {SINGLE: ["negative", "positive"], MULTI: ["a", "b", "c"], REGRESSION: ["LABEL_0"]}
    models = {}
    for problem_type, names in labels.items():
        models[problem_type] = MiniBertForSequenceClassification(
            MiniBertConfig(
                **{**TINY, "vocab_size": vocab},
                problem_type=problem_type,
                id2label=dict(enumerate(names)),
                label2id={n: i for i, n in enumerate(names)},
            )
        ).eval()
        save(
            problem_type,
            models[problem_type],
            finetuning_info(
                hub_model_id="me/tiny" if problem_type == SINGLE else None,  # a Hub id, then local folders
                output_dir=str(tmp_path / problem_type),
                problem_type=problem_type,
                label_names=names,
                example=pair[0],
                example_pair=pair[1] if problem_type == REGRESSION else None,
                export_bert=problem_type == SINGLE,
            ),
        )
    assert set(code) == {"pretrain", "pretrain-twin", SINGLE, f"{SINGLE}-twin", MULTI, REGRESSION}
    assert "top_k=None" in code[MULTI] and "function_to_apply='none'" in code[REGRESSION]

    (tmp_path / "snippets.json").write_text(json.dumps(code))
    (tmp_path / "run.py").write_text(RUN_SNIPPETS)
    (tmp_path / "elsewhere").mkdir()
    printed = run_without_minibert(
        [tmp_path / "run.py", tmp_path / "snippets.json"], cwd=tmp_path / "elsewhere", HF_HUB_OFFLINE="1"
    )

    # Fill-mask: five candidates, the same from minibert's folder and from the plain-BERT twin.
    (fill,), (twin,) = printed["pretrain"], printed["pretrain-twin"]
    assert len(fill) == 5 and all("[MASK]" not in f["sequence"] for f in fill)
    assert [f["token"] for f in fill] == [f["token"] for f in twin]
    assert [f["score"] for f in fill] == pytest.approx([f["score"] for f in twin], abs=1e-5)

    def logits(problem_type, *texts):
        encode = AutoTokenizer.from_pretrained(folders[problem_type])  # the folder's (segment ids for pairs)
        with torch.no_grad():
            return models[problem_type](**encode(*texts, return_tensors="pt")).logits[0]

    # Single-label: the softmax's top label; the twin says the same.
    single = _only(printed[SINGLE])
    probs = logits(SINGLE, pair[0]).softmax(-1)
    assert single["label"] == labels[SINGLE][int(probs.argmax())]
    assert single["score"] == pytest.approx(float(probs.max()), abs=1e-5)
    twin = _only(printed[f"{SINGLE}-twin"])
    assert twin["label"] == single["label"] and twin["score"] == pytest.approx(single["score"], abs=1e-5)
    # Multi-label (top_k=None): every label with its own sigmoid.
    (multi,) = printed[MULTI]
    multi = multi[0] if isinstance(multi[0], list) else multi  # transformers 5 nests one input's list
    expected = dict(zip(labels[MULTI], logits(MULTI, pair[0]).sigmoid().tolist()))
    assert {s["label"]: s["score"] for s in multi} == pytest.approx(expected, abs=1e-5)
    # Regression on a pair (function_to_apply="none"): the raw output for `[CLS] text [SEP] text_pair [SEP]`.
    score = _only(printed[REGRESSION])
    assert score["score"] == pytest.approx(float(logits(REGRESSION, *pair)[0]), abs=1e-5)


@pytest.mark.parametrize("bad", ["two words", "a/b/c", "double--dash", "x" * 97])
def test_a_bad_hub_model_id_is_refused_before_training(bad):
    """--hub_model_id names the card's title and the upload: an id the Hub would refuse is one error at parse time,
    not a silent fallback to the folder's name after the run."""
    from minibert.cli import UserError
    from pretrain.__main__ import parse

    with pytest.raises(UserError, match="not a Hub repository id"):
        parse(["--train_file", "corpus.txt", "--hub_model_id", bad])
    parse(["--train_file", "corpus.txt", "--hub_model_id", "someone/my-bert"])  # a valid id passes
