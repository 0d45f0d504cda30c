"""`minibert-evaluate glue` end to end on a tiny GLUE-layout folder the test writes (every task's real column layout:
CoLA without a header, MRPC's `#1 String`, STS-B's ten columns, MNLI's matched and mismatched dev sets, ...) with a
tiny model and two fine-tuning steps per run.

The oracles: scikit-learn and scipy on the predictions each run wrote and the labels the test generated; the GLUE
leaderboard's published BERT-large score recomputed from its published per-task figures; huggingface_hub reading the
card back; the list of `finetune` calls (order, starting model) recorded by a wrapper around the real function.
"""

import json
import os
import random
import statistics

import numpy as np
import pytest
import yaml
from conftest import ANIMALS, VEHICLES, make_tokenizer, one_error_line, run_main, snapshot
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from scipy import stats
from sklearn import metrics as skm

from finetune import glue
from finetune import train as finetune_train

SEEDS = [42, 43]
N_TRAIN, N_DEV = 24, 12


# ---- a GLUE folder in GLUE's own layouts ----------------------------------------------------------------------
def _sentence(rng) -> str:
    return f"the {rng.choice(ANIMALS + VEHICLES)} {rng.choice(['eats grass', 'drives on the road', 'needs fuel'])}"


def _write(path, header, rows) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        if header is not None:
            f.write("\t".join(header) + "\n")
        f.writelines("\t".join(map(str, row)) + "\n" for row in rows)


def _rows(task: str, n: int, rng) -> tuple[list, list]:
    """(TSV rows in the task's layout, the label of each as the model predicts it: class id or score)."""
    rows, labels = [], []
    for i in range(n):
        a, b = _sentence(rng), _sentence(rng)
        if task == "cola":
            label = rng.randint(0, 1)
            rows.append(["gj04", label, "" if label else "*", a])
        elif task == "sst2":
            label = rng.randint(0, 1)
            rows.append([a, label])
        elif task == "mrpc":
            label = rng.randint(0, 1)
            rows.append([label, 1000 + i, 2000 + i, a, b])
        elif task == "qqp":
            label = rng.randint(0, 1)
            rows.append([i, 2 * i, 2 * i + 1, a, b, label])
        elif task == "stsb":
            label = round(rng.uniform(0, 5), 3)
            rows.append([i, "main-captions", "MSRvid", "2012test", f"{i:04d}", "none", "none", a, b, f"{label:.3f}"])
        elif task == "mnli":
            label = rng.randint(0, 2)
            name = ("entailment", "neutral", "contradiction")[label]
            rows.append(
                [
                    i,
                    31193,
                    f"{i}n",
                    "government",
                    f"( {a} )",
                    f"( {b} )",
                    f"(ROOT {a})",
                    f"(ROOT {b})",
                    a,
                    b,
                    name,
                    name,
                ]
            )
        elif task in ("qnli", "rte", "wnli"):
            label = rng.randint(0, 1)
            rows.append([i, a, b, ("entailment", "not_entailment")[label] if task != "wnli" else label])
        labels.append(label)
    return rows, labels


HEADERS = {
    "cola": None,
    "sst2": ["sentence", "label"],
    "mrpc": ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
    "qqp": ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
    "stsb": "index genre filename year old_index source1 source2 sentence1 sentence2 score".split(),
    "mnli": "index promptID pairID genre sentence1_binary_parse sentence2_binary_parse sentence1_parse "
    "sentence2_parse sentence1 sentence2 label1 gold_label".split(),
    "qnli": ["index", "question", "sentence", "label"],
    "rte": ["index", "sentence1", "sentence2", "label"],
    "wnli": ["index", "sentence1", "sentence2", "label"],
}
FOLDERS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B", "mnli": "MNLI",
           "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}  # fmt: skip


def write_glue(root) -> dict[str, list]:
    """GLUE's layout under `root`; returns the dev labels per result name (mnli, mnli-mm, ...)."""
    rng = random.Random(0)
    dev_labels = {}
    for task, folder in FOLDERS.items():
        rows, _ = _rows(task, N_TRAIN, rng)
        _write(os.path.join(root, folder, "train.tsv"), HEADERS[task], rows)
        devs = (
            [("dev_matched.tsv", "mnli"), ("dev_mismatched.tsv", "mnli-mm")] if task == "mnli" else [("dev.tsv", task)]
        )
        for name, result in devs:
            rows, labels = _rows(task, N_DEV, rng)
            _write(os.path.join(root, folder, name), HEADERS[task], rows)
            dev_labels[result] = labels
    return dev_labels


# ---- a tiny checkpoint with a card ----------------------------------------------------------------------------
def save_checkpoint(folder) -> str:
    import torch

    from minibert import MiniBertConfig, MiniBertForPreTraining

    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    config = MiniBertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
        max_position_embeddings=64,
    )  # fmt: skip
    MiniBertForPreTraining(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    pretraining = EvalResult(
        task_type="fill-mask", dataset_type="custom", dataset_name="held-out text", metric_type="accuracy",
        metric_value=0.25,
    )  # fmt: skip
    data = ModelCardData(library_name="transformers", tags=["minibert"], model_name="tiny", eval_results=[pretraining])
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n# tiny\n\nA tiny test checkpoint.\n").save(
        os.path.join(folder, "README.md")
    )
    return str(folder)


TINY_RUNS = {
    "defaults": {
        "max_train_steps": 2,
        "per_device_train_batch_size": 8,
        "logging_steps": 1,
        "max_seq_length": 32,
        "learning_rate": 1e-3,
        "save_total_limit": 1,
    }
}


class Calls:
    """Wraps the real `finetune.train.finetune`: which (task, seed) ran, in order, from which model."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = finetune_train.finetune

        def recorded(**options):
            run = os.path.normpath(options["output_dir"]).split(os.sep)
            self.calls.append((run[-2], int(run[-1].removeprefix("seed-")), options["model_name_or_path"]))
            return real(**options)

        monkeypatch.setattr(finetune_train, "finetune", recorded)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue")
    dev_labels = write_glue(root / "glue_data")
    model = save_checkpoint(root / "model")
    hp = root / "tiny.yaml"
    hp.write_text(yaml.safe_dump(TINY_RUNS))
    argv = ["glue", "--model_name_or_path", model, "--data_dir", str(root / "glue_data"), "--output_dir",
            str(root / "out"), "--seeds", "2", "--protocol", "mnli-init", "--hyperparameters", str(hp)]  # fmt: skip
    before = snapshot(model)
    with pytest.MonkeyPatch.context() as mp:
        calls = Calls(mp)
        assert glue.main(argv) == 0
    return dict(root=root, out=root / "out", model=model, argv=argv, dev_labels=dev_labels, calls=calls.calls,
                before=before)  # fmt: skip


def _predictions(out, task: str, seed: int) -> list:
    with open(out / "runs" / task / f"seed-{seed}" / "predict_results.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    if task == "stsb":
        return [r["score"] for r in rows]
    classes = glue.TASKS[task].classes
    return [classes.index(r["label"]) for r in rows]


def oracle(result: str, predictions, references) -> dict:
    p, r = np.asarray(predictions), np.asarray(references)
    if result == "cola":
        return {"matthews_correlation": skm.matthews_corrcoef(r, p) if len(set(p) | set(r)) > 1 else 0.0}
    if result in ("mrpc", "qqp"):
        return {"f1": skm.f1_score(r, p, zero_division=0), "accuracy": skm.accuracy_score(r, p)}
    if result == "stsb":
        return {"pearson": stats.pearsonr(p, r)[0], "spearmanr": stats.spearmanr(p, r)[0]}
    return {"accuracy": skm.accuracy_score(r, p)}


def test_every_metric_mean_std_and_average_match_scikit_learn_and_scipy(suite):
    out, dev = suite["out"], suite["dev_labels"]
    summary = json.load(open(out / "eval_results.json"))
    assert summary["protocol"] == "mnli-init" and summary["seeds"] == SEEDS
    assert set(summary["tasks"]) == {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "mnli-mm", "qnli", "rte"}
    task_scores = {}
    for result, metrics in summary["tasks"].items():
        task = "mnli" if result == "mnli-mm" else result
        per_seed = []
        for seed in SEEDS:
            predictions = _predictions(out, task, seed)
            if task == "mnli":  # matched rows first, then mismatched
                predictions = predictions[:N_DEV] if result == "mnli" else predictions[N_DEV:]
            assert len(predictions) == len(dev[result])
            per_seed.append(oracle(result, predictions, dev[result]))
            assert summary["per_seed"][result][str(seed)] == pytest.approx(per_seed[-1], abs=1e-9)
        assert set(metrics) == {m for m in per_seed[0]} | {f"{m}_std" for m in per_seed[0]}
        for metric in per_seed[0]:
            values = [s[metric] for s in per_seed]
            assert metrics[metric] == pytest.approx(np.mean(values), abs=1e-9), (result, metric)
            assert metrics[f"{metric}_std"] == pytest.approx(statistics.stdev(values), abs=1e-9), (result, metric)
        task_scores.setdefault(task, []).append(np.mean([metrics[m] for m in per_seed[0]]))
    # The leaderboard's average: a task's metrics averaged, MNLI's matched and mismatched averaged, then the tasks.
    assert summary["glue_score"] == pytest.approx(np.mean([np.mean(v) for v in task_scores.values()]), abs=1e-9)
    with open(out / "glue_scores.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_glue_average_reproduces_the_leaderboards_bert_large_score():
    """BERT-large's published test figures (Devlin et al. 2019, table 1 and the leaderboard) give its published 80.5."""
    published = {
        "mnli": {"accuracy": 86.7}, "mnli-mm": {"accuracy": 85.9}, "qqp": {"f1": 72.1, "accuracy": 89.3},
        "qnli": {"accuracy": 92.7}, "sst2": {"accuracy": 94.9}, "cola": {"matthews_correlation": 60.5},
        "stsb": {"pearson": 87.1, "spearmanr": 86.5}, "mrpc": {"f1": 89.3, "accuracy": 85.4}, "rte": {"accuracy": 70.1},
        "wnli": {"accuracy": 65.1},
    }  # fmt: skip
    assert round(glue.glue_average(published), 1) == 80.5


def test_mnli_init_runs_mnli_first_and_starts_rte_mrpc_stsb_from_its_model(suite):
    calls, out, model = suite["calls"], suite["out"], suite["model"]
    assert len(calls) == 8 * len(SEEDS)
    order = [task for task, _, _ in calls]
    assert order[: len(SEEDS)] == ["mnli"] * len(SEEDS)
    for task, seed, init in calls:
        if task in ("rte", "mrpc", "stsb"):
            assert os.path.samefile(init, out / "runs" / "mnli" / f"seed-{seed}")
        else:
            assert init == model
    # every seed of every task ran once, with its own seed
    assert sorted((t, s) for t, s, _ in calls) == sorted((t, s) for t in glue.TASKS for s in SEEDS)
    config = json.load(open(out / "runs" / "rte" / "seed-42" / "config.json"))
    assert len(config["id2label"]) == 2  # MNLI's three-way head replaced by RTE's


def test_the_card_holds_the_checkpoints_card_and_the_scores_as_model_index(suite):
    out = suite["out"]
    summary = json.load(open(out / "eval_results.json"))
    card = ModelCard.load(out / "README.md")
    assert "A tiny test checkpoint." in card.text and "## GLUE (dev sets)" in card.text
    results = card.data.eval_results
    assert any(r.task_type == "fill-mask" and r.metric_value == 0.25 for r in results)  # the checkpoint's own
    glue_results = [r for r in results if r.dataset_type == "nyu-mll/glue"]
    assert len(glue_results) == sum(len([k for k in m if not k.endswith("_std")]) for m in summary["tasks"].values())
    for r in glue_results:
        split_to_result = {"validation_matched": "mnli", "validation_mismatched": "mnli-mm"}
        result = split_to_result.get(r.dataset_split, r.dataset_config)
        metric = {"pearsonr": "pearson"}.get(r.metric_type, r.metric_type)
        assert r.metric_value == pytest.approx(summary["tasks"][result][metric], abs=1e-4)
    assert snapshot(suite["model"]) == suite["before"]  # the evaluated checkpoint is never modified


def test_a_rerun_skips_finished_runs_and_does_the_rest(suite, monkeypatch):
    """A kill between two runs leaves the first recorded and the second not: the rerun does only the second."""
    out = suite["out"]
    before = json.load(open(out / "eval_results.json"))
    os.remove(out / "results" / "sst2-seed43.json")  # as if killed before (sst2, 43) finished
    calls = Calls(monkeypatch)
    assert glue.main(suite["argv"]) == 0
    assert [(t, s) for t, s, _ in calls.calls] == [("sst2", 43)]
    after = json.load(open(out / "eval_results.json"))
    for result in before["tasks"]:
        if result != "sst2":
            assert after["tasks"][result] == before["tasks"][result]
    # All finished: nothing runs, the same results are written again.
    calls.calls.clear()
    assert glue.main(suite["argv"]) == 0
    assert calls.calls == []
    assert json.load(open(out / "eval_results.json")) == after


def test_a_plain_transformers_bert_and_one_seed(tmp_path, monkeypatch):
    """A transformers BERT checkpoint (converted on the fly by fine-tuning), a subset of tasks, one seed."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    write_glue(tmp_path / "glue_data")
    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)  # fmt: skip
    BertForMaskedLM(config).save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_RUNS))
    argv = ["glue", "--model_name_or_path", str(tmp_path / "bert"), "--data_dir", str(tmp_path / "glue_data"),
            "--output_dir", str(tmp_path / "out"), "--tasks", "sst2,wnli", "--seeds", "1",
            "--hyperparameters", str(tmp_path / "tiny.yaml")]  # fmt: skip
    assert glue.main(argv) == 0
    summary = json.load(open(tmp_path / "out" / "eval_results.json"))
    assert list(summary["tasks"]) == ["sst2"] and summary["glue_score"] is None
    assert summary["tasks"]["sst2"]["accuracy_std"] == 0.0
    assert summary["average"] == summary["tasks"]["sst2"]["accuracy"]
    card = ModelCard.load(tmp_path / "out" / "README.md")  # the checkpoint had no card: a new one
    assert [r.dataset_config for r in card.data.eval_results] == ["sst2"]


@pytest.fixture
def small(tmp_path):
    write_glue(tmp_path / "glue_data")
    model = save_checkpoint(tmp_path / "model")
    return tmp_path, ["glue", "--model_name_or_path", model, "--output_dir", str(tmp_path / "out"), "--data_dir",
                      str(tmp_path / "glue_data")]  # fmt: skip


@pytest.mark.parametrize(
    "damage, flags, expected",
    [
        ("rm MRPC", ["--tasks", "mrpc"], "no MRPC/ folder for MRPC"),
        ("rm MNLI/dev_mismatched.tsv", ["--tasks", "mnli"], "no MNLI/dev_mismatched.tsv"),
        ("header MRPC", ["--tasks", "mrpc"], "not GLUE's MRPC layout"),
        ("header CoLA", ["--tasks", "cola"], "not GLUE's CoLA layout"),
        (None, ["--tasks", "sst2,colaa"], "unknown GLUE task 'colaa'"),
        (None, ["--tasks", "rte", "--protocol", "mnli-init"], "add mnli to --tasks"),
        (None, ["--protocol", "mnli"], "--protocol must be one of"),
    ],
)
def test_user_errors_are_one_line(small, capsys, damage, flags, expected):
    import shutil

    root, argv = small
    data = root / "glue_data"
    if damage == "rm MRPC":
        shutil.rmtree(data / "MRPC")
    elif damage == "rm MNLI/dev_mismatched.tsv":
        os.remove(data / "MNLI" / "dev_mismatched.tsv")
    elif damage == "header MRPC":  # a CSV export's column names instead of GLUE's
        text = (data / "MRPC" / "train.tsv").read_text().split("\n", 1)[1]
        (data / "MRPC" / "train.tsv").write_text("label\tid1\tid2\tsentence1\tsentence2\n" + text)
    elif damage == "header CoLA":
        text = (data / "CoLA" / "train.tsv").read_text()
        (data / "CoLA" / "train.tsv").write_text("sentence\tlabel\n" + text)
    code, err = run_main(glue.main, argv + flags, capsys)
    assert code == 2
    assert expected in one_error_line(err)


@pytest.mark.parametrize(
    "text, rte, cola",
    [
        ("defaults:\n  learning_rate: 1e-4\n", 1e-4, 1e-4),
        ("tasks: {rte: {learning_rate: 2e-5}}\n", 2e-5, None),  # docs/finetuning.md's example
        ("defaults: {learning_rate: 1e-4, num_train_epochs: 2}\ntasks: {rte: {learning_rate: 2e-5}}\n", 2e-5, 1e-4),
    ],
)
def test_hyperparameters_are_typed_as_their_flags(small, monkeypatch, text, rte, cola):
    """YAML 1.1 reads `1e-4` as a string: a hyper-parameter file's values are typed as minibert-finetune's flags
    would give them (as every config file's are), so each run gets the float, under `defaults` and under a task."""
    root, argv = small
    (root / "hp.yaml").write_text(text)
    seen = []

    def stopped(**options):  # records what the run got, then stops
        seen.append(options)
        return {"status": "interrupted", "signal": 15}

    monkeypatch.setattr(finetune_train, "finetune", stopped)
    assert glue.main(argv + ["--tasks", "rte", "--seeds", "1", "--hyperparameters", str(root / "hp.yaml")]) == 128 + 15
    assert type(seen[0]["learning_rate"]) is float and seen[0]["learning_rate"] == rte
    assert isinstance(seen[0]["num_train_epochs"], float)
    assert glue.load_hyperparameters(str(root / "hp.yaml"))["cola"].get("learning_rate") == cola


@pytest.mark.parametrize(
    "text, expected",
    [
        ("defaults: {learning_rate: fast}\n", "--hyperparameters {hp}: defaults: learning_rate: could not convert"),
        (
            "tasks: {rte: {max_seq_length: 1.5}}\n",
            "--hyperparameters {hp}: tasks.rte: max_seq_length: expected an integer",
        ),
        ("tasks: {rte: {learning_rate: [1, 2]}}\n", "tasks.rte: learning_rate: expected a single value"),
        ("defaults: {learning_rate: true}\n", "defaults: learning_rate: expected a number"),
        ("defaults: {seed: 3}\n", "defaults sets 'seed', not a fine-tuning setting the suite leaves to you"),
        ("tasks: {wnli: {}}\n", "unknown task 'wnli'"),
        ("model: x\n", "expected `defaults:` and/or `tasks:` at the top level"),
        ("defaults: [1]\n", "`defaults` and `tasks` must be mappings"),
        ("defaults: {learning_rate: 1e-4\n", "cannot parse --hyperparameters {hp}"),
    ],
)
def test_a_bad_hyperparameter_file_is_one_error_line(small, capsys, text, expected):
    root, argv = small
    hp = root / "hp.yaml"
    hp.write_text(text)
    code, err = run_main(glue.main, argv + ["--tasks", "rte", "--hyperparameters", hp], capsys)
    assert code == 2
    assert expected.format(hp=hp) in one_error_line(err)
    assert not (root / "out").exists()  # refused before anything is written


def test_a_killed_suite_continues_with_the_next_unfinished_run(tmp_path, monkeypatch):
    """A real SIGKILL once the first (task, seed) is recorded: the rerun keeps that record byte for byte, redoes
    nothing finished, and completes the rest."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import cli_env

    write_glue(tmp_path / "glue_data")
    model = save_checkpoint(tmp_path / "model")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_RUNS))
    out = tmp_path / "out"
    flags = ["glue", "--model_name_or_path", model, "--data_dir", str(tmp_path / "glue_data"), "--output_dir", str(out),
             "--tasks", "cola,sst2,rte", "--seeds", "1", "--hyperparameters", str(tmp_path / "tiny.yaml")]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "finetune.glue", *flags],
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = out / "results" / "cola-seed42.json"
    deadline = time.monotonic() + 600
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert first.exists()
    recorded = first.read_bytes()
    finished = {p.name for p in (out / "results").iterdir()}
    calls = Calls(monkeypatch)
    assert glue.main(flags) == 0
    assert first.read_bytes() == recorded
    ran = {f"{t}-seed{s}.json" for t, s, _ in calls.calls}
    assert not ran & finished and ran | finished == {"cola-seed42.json", "sst2-seed42.json", "rte-seed42.json"}
    assert set(json.load(open(out / "eval_results.json"))["tasks"]) == {"cola", "sst2", "rte"}
