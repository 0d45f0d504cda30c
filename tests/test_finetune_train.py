"""End-to-end fine-tuning with tiny models (hidden 32, 2 layers): pretraining vs from scratch, the Hub-ready output
and its upload, `pipeline(...)` with and without minibert, regression, multi-label, pairs, a transformers BERT
checkpoint, resuming, the demo, and the CLI's one-line errors.

The pretraining-vs-scratch task is built so that the answer is known: a synthetic language where animal words and
vehicle words occur in different contexts. A tiny MLM is pretrained on those contexts; the classifier then sees
sentences in *neutral* contexts ("i saw a cow yesterday") with half of the words of each class, and is validated
on the other half. Words it never saw during fine-tuning can only be classified through what pretraining put in
their embeddings, so the from-scratch run sits near chance and the pretrained run near 100%. (The task's words,
contexts, tokenizer and files come from conftest.py: other test modules fine-tune on it too.)
"""

import fnmatch
import json
import os
import random
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import (
    ANIMALS,
    CONTEXTS,
    FINETUNE_TINY,
    NEUTRAL,
    VEHICLES,
    accelerate_launch,
    finetune_argv,
    make_tokenizer,
    run_without_minibert,
    write_jsonl,
    write_task,
)

from finetune import train as T
from minibert.cli import UserError

REPO_ID = "someone/minibert-animals"


def pretrain_mlm(tokenizer, steps: int = 600, seed: int = 0):
    """A hand-written masked-language-model loop (15% of the words masked) over the context sentences."""
    from minibert import MiniBertConfig, MiniBertForMaskedLM

    corpus = [
        t.format(w)
        for label, words in (("animal", ANIMALS), ("vehicle", VEHICLES))
        for w in words
        for t in CONTEXTS[label]
    ]
    encoded = tokenizer(corpus)["input_ids"]
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = MiniBertForMaskedLM(MiniBertConfig(vocab_size=len(tokenizer), **FINETUNE_TINY))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    for step in range(steps):
        batch = [encoded[i] for i in rng.sample(range(len(encoded)), 64)]
        length = max(map(len, batch))
        ids = torch.tensor([b + [tokenizer.pad_token_id] * (length - len(b)) for b in batch])
        masked = (torch.rand(ids.shape) < 0.15) & (ids >= 5)  # never the special tokens
        for group in optimizer.param_groups:
            group["lr"] = 3e-3 * min(1.0, (step + 1) / 20)
        loss = model(
            input_ids=ids.masked_fill(masked, tokenizer.mask_token_id),
            attention_mask=(ids != 0).long(),
            labels=ids.masked_fill(~masked, -100),
        ).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, loss.item()


class RecordingHfApi:
    """Stands in for `huggingface_hub.HfApi`: records the calls and what `upload_folder` would send."""

    def __init__(self):
        self.calls = []
        self.uploaded: dict[str, bytes] = {}

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, ignore_patterns=(), **kwargs):
        self.calls.append(("upload_folder", repo_id, {"ignore_patterns": ignore_patterns, **kwargs}))
        for root, _, files in os.walk(folder_path):
            for name in files:
                rel = os.path.relpath(os.path.join(root, name), folder_path).replace(os.sep, "/")
                if not any(fnmatch.fnmatch(rel, pattern) for pattern in ignore_patterns):
                    with open(os.path.join(root, name), "rb") as f:
                        self.uploaded[rel] = f.read()


def args(output_dir, paths=None, model=None, **options) -> dict:
    """`finetune`'s keyword options (its flags) for a run on `paths` (train / validation / test files) from `model`."""
    paths = paths or {}
    defaults = dict(
        model_name_or_path=model,
        train_file=paths.get("train"),
        validation_file=paths.get("validation"),
        test_file=paths.get("test"),
        output_dir=str(output_dir),
        num_train_epochs=10,
        per_device_train_batch_size=16,
        logging_steps=1000,
        num_examples_shown=0,
    )
    return {**defaults, **options}


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return write_task(str(tmp_path_factory.mktemp("task")))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from minibert.hub import save_model_folder

    tokenizer = make_tokenizer()
    model, loss = pretrain_mlm(tokenizer)
    assert loss < 1.5, f"the MLM did not learn the contexts (loss {loss:.2f})"
    path = str(tmp_path_factory.mktemp("pretrained"))
    save_model_folder(model, tokenizer, path)
    return path


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, pretrained, task):
    """Fine-tune the pretrained tiny model and 'push' the result through a recording HfApi."""
    output_dir = tmp_path_factory.mktemp("finetuned") / "out"
    api = RecordingHfApi()
    hub = dict(push_to_hub=True, hub_model_id=REPO_ID)
    metrics = T.finetune(**args(output_dir, task, model=pretrained, **hub), hub_api=api)
    return {"metrics": metrics, "dir": str(output_dir), "api": api}


def test_pretraining_helps_on_words_the_classifier_never_saw(finetuned, pretrained, task, tmp_path):
    scratch = T.finetune(**args(tmp_path / "scratch", task, model=pretrained, from_scratch=True))
    pretrained_accuracy = finetuned["metrics"]["eval_accuracy"]
    scratch_accuracy = scratch["eval_accuracy"]
    print(
        f"\nvalidation accuracy on unseen words: pretrained {pretrained_accuracy:.3f}, "
        f"from scratch {scratch_accuracy:.3f}"
    )
    assert pretrained_accuracy >= 0.9
    # From scratch, unseen words keep random embeddings: near chance (0.5). The margin is wide on purpose.
    assert pretrained_accuracy >= scratch_accuracy + 0.2


def test_output_is_a_hub_ready_checkpoint(finetuned):
    out = finetuned["dir"]
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["model_type"] == "minibert"
    assert config["id2label"] == {"0": "animal", "1": "vehicle"} and config["label2id"] == {"animal": 0, "vehicle": 1}
    assert config["problem_type"] == "single_label_classification"
    assert config["auto_map"]["AutoModel"] == "modeling_minibert.MiniBertModel"
    assert (
        config["auto_map"]["AutoModelForSequenceClassification"]
        == "modeling_minibert.MiniBertForSequenceClassification"
    )

    with open(os.path.join(out, "all_results.json")) as f:
        results = json.load(f)
    for key in (
        "eval_accuracy",
        "eval_f1",
        "eval_matthews_correlation",
        "eval_loss",
        "train_runtime",
        "train_loss",
        "test_accuracy",
        "train_samples",
        "eval_samples",
        "test_samples",
    ):
        assert key in results, key
    assert results["eval_accuracy"] == finetuned["metrics"]["eval_accuracy"]

    with open(os.path.join(out, "predict_results.jsonl")) as f:
        predictions = [json.loads(line) for line in f]
    assert len(predictions) == results["test_samples"] == 24
    assert {p["label"] for p in predictions} <= {"animal", "vehicle"}
    assert all(0.5 <= p["score"] <= 1 and p["text"] for p in predictions)

    with open(os.path.join(out, "README.md")) as f:
        card = f.read()
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-classification"
    assert "minibert" in meta["tags"] and {"accuracy", "f1", "matthews_correlation"} <= set(meta["metrics"])
    reported = {m["name"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert reported["Accuracy"] == pytest.approx(results["eval_accuracy"], abs=1e-4)
    assert f'pipeline("text-classification", model="{REPO_ID}", trust_remote_code=True)' in body
    assert "| 1 | `vehicle` |" in body
    assert os.listdir(os.path.join(out, "checkpoints"))  # Trainer checkpoints, kept for resuming


def test_push_uploads_the_checkpoint_and_nothing_else(finetuned):
    api = finetuned["api"]
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[0][1] == REPO_ID and api.calls[0][2]["exist_ok"] is True
    uploaded = api.uploaded
    for name in (
        "config.json",
        "model.safetensors",
        "modeling_minibert.py",
        "configuration_minibert.py",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    ):
        assert name in uploaded, name
    assert not [name for name in uploaded if name.startswith("checkpoints/")]
    config = json.loads(uploaded["config.json"])
    assert {"AutoModel", "AutoModelForSequenceClassification", "AutoConfig"} <= set(config["auto_map"])
    assert uploaded["README.md"].startswith(b"---\n")


def test_pipeline_with_minibert_installed(finetuned):
    from transformers import pipeline

    import minibert  # noqa: F401  (registers the Auto classes)

    classifier = pipeline("text-classification", model=finetuned["dir"])
    with open(os.path.join(finetuned["dir"], "predict_results.jsonl")) as f:
        first = json.loads(f.readline())
    (got,) = classifier(first["text"])
    assert got["label"] == first["label"] and got["score"] == pytest.approx(first["score"], abs=1e-4)


def test_pipeline_without_minibert(finetuned, tmp_path):
    code = f"""
import sys, json
sys.modules["minibert"] = None  # `import minibert` now fails: only the checkpoint's own code can serve
from transformers import pipeline
classifier = pipeline("text-classification", model={finetuned["dir"]!r}, trust_remote_code=True)
print(json.dumps(classifier(["i saw a tiger yesterday", "look at that tram"])))
"""
    predictions = run_without_minibert(["-c", code], cwd=tmp_path, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    assert [p["label"] for p in predictions] == ["animal", "vehicle"]


def finetune_rows(rows, n_test, model, tmp_path) -> tuple[dict, dict]:
    """3 steps on `rows`, predicting the first `n_test` of them: the metrics and the saved config.json."""
    paths = {
        "train": write_jsonl(tmp_path / "train.jsonl", rows),
        "test": write_jsonl(tmp_path / "test.jsonl", rows[:n_test]),
    }
    metrics = T.finetune(**args(tmp_path / "out", paths, model=model, max_train_steps=3))
    with open(tmp_path / "out" / "config.json") as f:
        return metrics, json.load(f)


def test_regression(pretrained, tmp_path):
    rng = random.Random(0)
    rows = [{"text": t.format(w), "label": round(rng.random() * 5, 2)} for w in ANIMALS[:8] for t in NEUTRAL[:3]]
    metrics, config = finetune_rows(rows, 4, pretrained, tmp_path)
    assert (config["problem_type"], len(config["id2label"])) == ("regression", 1)
    assert {"eval_pearson", "eval_spearmanr", "eval_loss", "train_runtime"} <= set(metrics)
    with open(tmp_path / "out" / "predict_results.jsonl") as f:
        assert set(json.loads(f.readline())) == {"index", "text", "score"}
    with open(tmp_path / "out" / "README.md") as f:
        assert 'function_to_apply="none"' in f.read()


def test_multi_label(pretrained, tmp_path):
    rows = [
        {"text": t.format(w), "label": labels}
        for w, labels in [
            ("cat", ["animal", "small"]),
            ("horse", ["animal", "big"]),
            ("bike", ["vehicle", "small"]),
            ("truck", ["vehicle", "big"]),
            ("goose", ["animal"]),
            ("van", []),
        ]
        for t in NEUTRAL
    ]
    metrics, config = finetune_rows(rows, 3, pretrained, tmp_path)
    assert config["problem_type"] == "multi_label_classification"
    assert config["id2label"] == {"0": "animal", "1": "big", "2": "small", "3": "vehicle"}
    assert {"eval_exact_match", "eval_f1_micro", "eval_f1_macro"} <= set(metrics)
    with open(tmp_path / "out" / "predict_results.jsonl") as f:
        first = json.loads(f.readline())
    assert set(first["scores"]) == {"animal", "big", "small", "vehicle"} and isinstance(first["labels"], list)


def test_pairs_with_class_label_names_from_a_transformers_bert_checkpoint(tmp_path):
    """A transformers BertForPreTraining checkpoint is converted on the fly; ClassLabel names become label names."""
    import datasets
    from transformers import BertConfig, BertForPreTraining

    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    bert_dir = str(tmp_path / "bert")
    BertForPreTraining(BertConfig(vocab_size=len(tokenizer), **FINETUNE_TINY)).save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    features = datasets.Features(
        {
            "sentence1": datasets.Value("string"),
            "sentence2": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["same", "different"]),
        }
    )
    rows = {"sentence1": [], "sentence2": [], "label": []}
    for a in ANIMALS[:6]:
        for b in (ANIMALS[0], VEHICLES[0]):
            rows["sentence1"].append(f"i saw a {a}")
            rows["sentence2"].append(f"look at that {b}")
            rows["label"].append(0 if b in ANIMALS else 1)
    dataset = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(rows, features=features),
            "validation": datasets.Dataset.from_dict(rows, features=features).select(range(4)),
        }
    )
    dataset.save_to_disk(str(tmp_path / "pairs"))

    metrics = T.finetune(
        **args(tmp_path / "out", model=bert_dir, max_train_steps=2, dataset_name=str(tmp_path / "pairs"))
    )
    assert "eval_accuracy" in metrics
    with open(tmp_path / "out" / "config.json") as f:
        config = json.load(f)
    assert config["model_type"] == "minibert" and config["id2label"] == {"0": "same", "1": "different"}

    from transformers import pipeline

    import minibert  # noqa: F401

    classifier = pipeline("text-classification", model=str(tmp_path / "out"))
    assert classifier({"text": "i saw a cow", "text_pair": "look at that car"})["label"] in ("same", "different")


def test_gradient_accumulation_matches_one_big_batch(task, tmp_path):
    """Batch 16 in one step = batch 8 accumulated twice: same loss, same weights (dropout off)."""
    from safetensors.torch import load_file

    from minibert import MiniBertConfig, MiniBertForSequenceClassification
    from minibert.hub import save_model_folder

    tokenizer = make_tokenizer()
    config = MiniBertConfig(
        vocab_size=len(tokenizer), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **FINETUNE_TINY
    )
    save_model_folder(MiniBertForSequenceClassification(config), tokenizer, str(tmp_path / "base"))
    runs = {}
    for batch, accumulation in ((16, 1), (8, 2)):
        out = tmp_path / f"b{batch}"
        metrics = T.finetune(
            **args(
                out,
                {"train": task["train"]},
                model=str(tmp_path / "base"),
                max_train_steps=3,
                per_device_train_batch_size=batch,
                gradient_accumulation_steps=accumulation,
                learning_rate=1e-2,
                warmup_ratio=0.0,
            )
        )
        runs[batch] = (metrics["train_loss"], load_file(str(out / "model.safetensors")))
    assert runs[16][0] == pytest.approx(runs[8][0], rel=1e-4)
    for name, weight in runs[16][1].items():
        torch.testing.assert_close(runs[8][1][name], weight, atol=1e-5, rtol=1e-4, msg=name)


def test_resume_from_the_last_checkpoint(pretrained, task, tmp_path):
    first = T.finetune(**args(tmp_path / "out", task, model=pretrained, max_train_steps=4, eval_steps=2))
    checkpoints = sorted(os.listdir(tmp_path / "out" / "checkpoints"))
    assert checkpoints == ["checkpoint-2", "checkpoint-4"]
    resumed = T.finetune(
        **args(tmp_path / "out", task, model=pretrained, max_train_steps=6, eval_steps=2, resume_from_checkpoint="last")
    )
    assert "checkpoint-6" in os.listdir(tmp_path / "out" / "checkpoints")
    assert resumed["epoch"] > first["epoch"]
    # A new run without --resume_from_checkpoint replaces the old one only when told to; then the old checkpoints go.
    with pytest.raises(UserError, match="--overwrite_output_dir to replace it"):
        T.finetune(**args(tmp_path / "out", task, model=pretrained, max_train_steps=1))
    T.finetune(**args(tmp_path / "out", task, model=pretrained, max_train_steps=1, overwrite_output_dir=True))
    assert os.listdir(tmp_path / "out" / "checkpoints") == ["checkpoint-1"]


def test_output_dir_with_other_files_is_refused(task, pretrained, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"holds files that a fine-tuning run does not write \(notes.txt\)"):
        T.finetune(**args(tmp_path, task, model=pretrained, max_train_steps=1))
    assert (tmp_path / "notes.txt").read_text() == "mine"
    # The pretrained checkpoint itself (a MiniBertForMaskedLM) is not overwritten either.
    with pytest.raises(UserError, match="is the checkpoint given as --model_name_or_path"):
        T.finetune(**args(pretrained, task, model=pretrained, max_train_steps=1))
    with pytest.raises(UserError, match="holds a MiniBertForMaskedLM checkpoint, not a fine-tuned classifier"):
        T.finetune(**args(pretrained, task, max_train_steps=1))


def test_demo_runs_without_arguments(tmp_path, monkeypatch, capsys):
    """No data arguments: the built-in demo (a fresh tiny model here, as there is no outputs/pretrain)."""
    monkeypatch.chdir(tmp_path)
    from finetune.__main__ import main

    code = main(
        [
            "--max_train_steps",
            "2",
            "--max_train_samples",
            "64",
            "--max_eval_samples",
            "32",
            "--max_predict_samples",
            "4",
            "--num_examples_shown",
            "3",
        ]
    )
    assert code == 0
    out = tmp_path / "outputs" / "finetune"
    assert sorted(os.listdir(out / "demo_data")) == ["test.csv", "train.csv", "validation.csv"]
    with open(out / "config.json") as f:
        assert json.load(f)["id2label"] == {
            "0": "built-in types",
            "1": "debugger",
            "2": "expressions",
            "3": "statements",
        }
    assert "Example predictions (3 of 4)" in capsys.readouterr().out


def test_not_a_bert_checkpoint_is_one_clear_error(task, tmp_path, capsys):
    from finetune.__main__ import main

    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    code = main(["--model_name_or_path", str(gpt), "--train_file", task["train"], "--output_dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: ") and "'gpt2' checkpoint, not a BERT" in err[0]


def test_cli_missing_column_exits_2_with_one_line(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("review,stars\ngreat,5\nawful,1\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "finetune",
            "--train_file",
            str(train),
            "--text_column",
            "review",
            "--output_dir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: train_file {train} has no label column 'label' (--label_column); columns: review, stars"
    ]


def test_two_processes_share_the_data(pretrained, task, tmp_path):
    """`accelerate launch --num_processes 2` on CPUs: one gloo group, each process half of every global batch
    (8 steps of 2 x 8 rows per epoch of 120, not 15 each on its own), one set of outputs."""
    out = tmp_path / "out"
    argv = finetune_argv(out, task, pretrained, num_train_epochs=1, per_device_train_batch_size=8, num_examples_shown=0)
    command = accelerate_launch("-m", "finetune", *argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.listdir(out / "checkpoints") == ["checkpoint-8"]
    with open(out / "all_results.json") as f:
        results = json.load(f)
    assert results["train_samples"] == 120 and 0 <= results["eval_accuracy"] <= 1


def test_a_classifier_with_other_labels_needs_a_new_head(finetuned, tmp_path):
    rows = [
        {"text": t.format(w), "label": label}
        for w, label in (("cat", "a"), ("car", "b"), ("cow", "c"))
        for t in NEUTRAL
    ]
    paths = {"train": write_jsonl(tmp_path / "train.jsonl", rows)}
    with pytest.raises(UserError, match="classifier with 2 outputs and this task needs 3; pass --ignore_mismatched"):
        T.finetune(**args(tmp_path / "out", paths, model=finetuned["dir"], max_train_steps=1))
    T.finetune(**args(tmp_path / "out", paths, model=finetuned["dir"], max_train_steps=1, ignore_mismatched_sizes=True))
    with open(tmp_path / "out" / "config.json") as f:
        assert json.load(f)["id2label"] == {"0": "a", "1": "b", "2": "c"}


def test_export_bert_writes_a_native_twin(pretrained, task, tmp_path):
    from transformers import AutoTokenizer, BertForSequenceClassification

    from minibert.modeling_minibert import MiniBertForSequenceClassification

    out = tmp_path / "out"
    T.finetune(**args(out, task, model=pretrained, max_train_steps=2, export_bert=True))
    config = json.loads((out / "bert" / "config.json").read_text())
    assert config["model_type"] == "bert" and "auto_map" not in config
    assert not any(name.endswith(".py") for name in os.listdir(out / "bert"))  # no remote code at all
    twin = BertForSequenceClassification.from_pretrained(out / "bert", trust_remote_code=False).eval()
    mini = MiniBertForSequenceClassification.from_pretrained(out).eval()
    assert twin.config.id2label == mini.config.id2label
    enc = AutoTokenizer.from_pretrained(out / "bert")(
        ["a first sentence", "and another one"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        torch.testing.assert_close(twin(**enc).logits, mini(**enc).logits, rtol=1e-5, atol=1e-5)
    card = (out / "README.md").read_text()
    assert f"{out}/bert" in card or "/bert`" in card  # the card says which folder is which
