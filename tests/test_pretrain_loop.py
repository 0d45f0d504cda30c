"""The pretraining loop end to end, in this process, on a generated corpus that has something to learn
(conftest.synthetic_documents).

The oracle for resume is a second, uninterrupted run (every tensor equal); for gradient accumulation and
checkpointing, a run without them; for learning, chance level.
"""

import json
import os
import signal

import pytest
import torch
from conftest import (
    BATCH,
    NO_DROPOUT,
    TINY_MODEL,
    args_for,
    assert_same_weights,
    records,
    run,
    synthetic_documents,
    topics_corpus,
    weights,
)

from minibert.cli import UserError
from pretrain.__main__ import main, parse
from pretrain.checkpointing import LATEST_FILE, Progress
from pretrain.loop import MAX_NONFINITE_STEPS, PretrainingLoop


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> str:
    return topics_corpus(tmp_path_factory, "corpus")


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> str:
    """Fewer documents: epochs of a few steps, for the resume tests."""
    return topics_corpus(tmp_path_factory, "small_corpus", n_docs=60, seed=1)


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> str:
    """One preprocessing cache for the whole session: the same corpus is tokenized and paired once."""
    return str(tmp_path_factory.mktemp("data_cache"))


# ----------------------------------------------------------------------------------------------------------------
# Learning
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(corpus, data_cache, tmp_path_factory) -> tuple[str, dict]:
    """The learning run (also the checkpoint the export tests load)."""
    out = tmp_path_factory.mktemp("trained")
    result = run(
        args_for(
            corpus,
            data_cache,
            out,
            per_device_train_batch_size=32,
            max_train_steps=300,
            eval_steps=100,
            checkpointing_steps=100,
            with_tracking="true",
        )
    )
    return str(out), result


def test_mlm_and_nsp_accuracy_rise_well_above_chance(trained):
    out, result = trained
    assert result["status"] == "completed"
    evals = records(out, "eval")
    assert [r["step"] for r in evals] == [100, 200, 300]
    vocab = json.load(open(os.path.join(out, "config.json")))["vocab_size"]
    assert result["eval_mlm_accuracy"] > 0.15 > 10 / vocab  # chance: 1 / vocabulary
    assert result["eval_nsp_accuracy"] > 0.65  # chance: 0.5
    assert result["eval_loss"] < evals[0]["eval_loss"]
    train = records(out)
    assert train[-1]["loss"] < train[0]["loss"] - 1.0


def test_run_outputs(trained):
    out, result = trained
    results = json.load(open(os.path.join(out, "all_results.json")))
    for key in (
        "eval_loss",
        "eval_mlm_loss",
        "eval_mlm_accuracy",
        "eval_nsp_accuracy",
        "perplexity",
        "train_steps",
        "train_tokens_per_second",
        "train_runtime",
        "num_processes",
    ):
        assert key in results, key
    assert results["train_steps"] == 300 and results["num_processes"] == 1
    assert results["train_tokens"] > 0 and results["train_tokens_per_second"] > 0
    with open(os.path.join(out, "training_curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # Training records every --logging_steps, with the learning rate following warmup + linear decay.
    train = records(out)
    assert [r["step"] for r in train] == list(range(5, 301, 5))
    lrs = [r["learning_rate"] for r in train]
    assert max(lrs) == pytest.approx(3e-3, rel=0.1) and lrs[-1] == pytest.approx(0.0, abs=1e-9)
    assert all(r["tokens_per_second"] > 0 and r["grad_norm"] > 0 for r in train)
    # TensorBoard (--with_tracking) under runs/, which the Hub upload leaves out.
    events = [f for _, _, fs in os.walk(os.path.join(out, "runs")) for f in fs if "tfevents" in f]
    assert events
    # Checkpoints every 100 steps, the newest 3 kept, `latest` naming the last.
    ckpts = os.path.join(out, "checkpoints")
    assert sorted(os.listdir(ckpts)) == ["latest", "step_100", "step_200", "step_300"]
    assert open(os.path.join(ckpts, LATEST_FILE)).read().strip() == "step_300"
    state = Progress.read(os.path.join(ckpts, "step_300"))
    assert state.completed_steps == 300 and state.tokens_seen == results["train_tokens"]
    card = open(os.path.join(out, "README.md")).read()
    assert "pipeline_tag: fill-mask" in card and "eval_mlm_accuracy" in card and "topics.txt" in card


def test_output_dir_loads_through_auto_classes_and_fill_mask(trained):
    from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForPreTraining, AutoTokenizer, pipeline

    import minibert  # noqa: F401

    out, _ = trained
    saved = weights(out)
    pretraining = AutoModelForPreTraining.from_pretrained(out)
    assert type(pretraining).__name__ == "MiniBertForPreTraining"
    for name, tensor in pretraining.state_dict().items():
        if name in saved:
            assert torch.equal(tensor, saved[name]), name
    assert type(AutoModel.from_pretrained(out)).__name__ == "MiniBertModel"
    mlm = AutoModelForMaskedLM.from_pretrained(out)
    torch.testing.assert_close(mlm.cls.predictions.decoder.weight, pretraining.bert.embeddings.word_embeddings.weight)
    tokenizer = AutoTokenizer.from_pretrained(out)
    documents = synthetic_documents()
    sentence = documents[0][0].split()  # MARKER NOUN VERB OBJECT .
    predictions = pipeline("fill-mask", model=out)(" ".join([*sentence[:2], tokenizer.mask_token, *sentence[3:]]))
    assert len(predictions) == 5 and all(p["token_str"] for p in predictions)


def test_continue_pretraining_from_the_output_dir(trained, corpus, data_cache, tmp_path):
    """--model_name_or_path starts from the weights and the tokenizer of a checkpoint."""
    out, result = trained
    again = run(
        args_for(
            corpus,
            data_cache,
            tmp_path,
            model_name_or_path=out,
            max_train_steps=2,
            config_overrides="hidden_dropout_prob=0.0",
        )
    )
    assert again["status"] == "completed"
    # The first evaluation of the continued run starts where the trained one ended (2 small steps later).
    assert again["eval_mlm_accuracy"] > 0.6 * result["eval_mlm_accuracy"]
    assert json.load(open(tmp_path / "config.json"))["hidden_dropout_prob"] == 0.0


# ----------------------------------------------------------------------------------------------------------------
# Exact resume
# ----------------------------------------------------------------------------------------------------------------
def steps_per_epoch(small_corpus, data_cache) -> int:
    from pretrain.data import prepare

    _, data_args, _, _ = parse(args_for(small_corpus, data_cache, "unused"))
    data = prepare(data_args, seed=0)
    return len(data.train_dataset) // BATCH


@pytest.fixture(scope="module")
def resume_setup(small_corpus, data_cache, tmp_path_factory):
    """An uninterrupted run of 1.5 epochs (dropout on: resume must restore the RNG too)."""
    per_epoch = steps_per_epoch(small_corpus, data_cache)
    assert per_epoch >= 6
    total = per_epoch + per_epoch // 2
    out = tmp_path_factory.mktemp("uninterrupted")
    run(args_for(small_corpus, data_cache, out, max_train_steps=total, checkpointing_steps=1000, logging_steps=1))
    return per_epoch, total, str(out)


def sigterm_after(monkeypatch, step: int) -> None:
    """Deliver SIGTERM to this process right after optimizer step `step`, as a preempting scheduler would."""
    original = PretrainingLoop._after_step

    def after_step(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.progress.completed_steps == step:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(PretrainingLoop, "_after_step", after_step)


@pytest.mark.parametrize("where", ["mid_epoch_0", "end_of_epoch_0", "mid_epoch_1"])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(
    where, resume_setup, small_corpus, data_cache, tmp_path, monkeypatch
):
    per_epoch, total, uninterrupted = resume_setup
    # SIGTERM after step k; the loop notices at the next step boundary, so it stops (and saves) after k + 1.
    stop_at = {"mid_epoch_0": per_epoch // 2, "end_of_epoch_0": per_epoch, "mid_epoch_1": per_epoch + 2}[where]
    argv = args_for(
        small_corpus, data_cache, tmp_path, max_train_steps=total, checkpointing_steps=1000, logging_steps=1
    )
    with monkeypatch.context() as m:
        sigterm_after(m, stop_at - 1)
        first = run(argv)
    assert first == {"status": "interrupted", "signal": signal.SIGTERM, "train_steps": stop_at}
    state = Progress.read(str(tmp_path / "checkpoints" / f"step_{stop_at}"))
    assert (state.epoch, state.step_in_epoch) == divmod(stop_at, per_epoch)
    assert not (tmp_path / "model.safetensors").exists()  # preempted: no export, only the checkpoint

    second = run(argv + ["--resume_from_checkpoint", "latest"])
    assert second["status"] == "completed" and second["train_steps"] == total
    assert_same_weights(weights(tmp_path), weights(uninterrupted), exact=True)
    # The training log reads as one run: the same losses, each step once.
    keys = ("step", "loss", "mlm_loss", "nsp_loss", "learning_rate", "grad_norm", "tokens_seen")
    resumed_log = [tuple(r[k] for k in keys) for r in records(tmp_path)]
    assert resumed_log == [tuple(r[k] for k in keys) for r in records(uninterrupted)]
    results = json.load(open(tmp_path / "all_results.json"))
    assert results["train_tokens"] == json.load(open(os.path.join(uninterrupted, "all_results.json")))["train_tokens"]


def test_gradient_accumulation_and_checkpointing_change_nothing(small_corpus, data_cache, tmp_path):
    """Batch 16 in one step, 2 x 8 accumulated, and 16 with activation checkpointing: the same weights
    (the loss is normalised by the masked tokens of the whole global batch, not averaged per micro-batch)."""
    common = ["--max_train_steps", 6, "--config_overrides", TINY_MODEL + NO_DROPOUT]
    run(args_for(small_corpus, data_cache, tmp_path / "big", *common))
    run(
        args_for(
            small_corpus,
            data_cache,
            tmp_path / "accumulated",
            *common,
            "--per_device_train_batch_size",
            8,
            "--gradient_accumulation_steps",
            2,
        )
    )
    run(args_for(small_corpus, data_cache, tmp_path / "recomputed", *common, "--gradient_checkpointing", "true"))
    big = weights(tmp_path / "big")
    assert_same_weights(weights(tmp_path / "accumulated"), big, exact=False)
    assert_same_weights(weights(tmp_path / "recomputed"), big, exact=False)


# ----------------------------------------------------------------------------------------------------------------
# Stopping: time budget, non-finite losses, dry runs
# ----------------------------------------------------------------------------------------------------------------
def test_time_budget_stops_checkpoints_and_exports(small_corpus, data_cache, tmp_path):
    result = run(args_for(small_corpus, data_cache, tmp_path, "--max_train_steps", 100000, "--time_budget", 0.03))
    assert result["status"] == "completed" and result["stopped_by_time_budget"]
    assert 0 < result["train_steps"] < 100000
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "all_results.json").exists()
    assert (tmp_path / "checkpoints" / f"step_{result['train_steps']}").is_dir()
    assert "eval_mlm_accuracy" in result


def poison_losses(monkeypatch, calls: set[int]) -> None:
    """Make the model's loss (and its MLM part) NaN on the given forward calls (counted from 0)."""
    from minibert import MiniBertForPreTraining

    original = MiniBertForPreTraining.forward
    counter = {"n": 0}

    def forward(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if self.training:
            if counter["n"] in calls:
                out.loss, out.mlm_loss = out.loss * float("nan"), out.mlm_loss * float("nan")
            counter["n"] += 1
        return out

    monkeypatch.setattr(MiniBertForPreTraining, "forward", forward)


def test_non_finite_steps_are_skipped(small_corpus, data_cache, tmp_path, monkeypatch, caplog):
    poison_losses(monkeypatch, {2, 3})
    result = run(args_for(small_corpus, data_cache, tmp_path, "--max_train_steps", 6))
    assert result["status"] == "completed" and result["skipped_steps"] == 2 and result["train_steps"] == 6
    assert all(torch.isfinite(t).all() for t in weights(tmp_path).values())
    assert "non-finite loss or gradient, update skipped" in caplog.text
    log = records(tmp_path)
    assert log[-1]["skipped_steps"] == 2 and all(r["loss"] == r["loss"] for r in log)  # no nan in the log


def test_too_many_non_finite_steps_end_the_run(small_corpus, data_cache, tmp_path, monkeypatch, capsys):
    poison_losses(monkeypatch, set(range(1, 1000)))
    code = main(args_for(small_corpus, data_cache, tmp_path, "--max_train_steps", 50))
    err = capsys.readouterr().err
    assert code == 2
    assert f"error: {MAX_NONFINITE_STEPS} optimizer steps in a row had a non-finite loss" in err


def test_dry_run_writes_nothing(small_corpus, data_cache, tmp_path):
    result = run(args_for(small_corpus, data_cache, tmp_path, "--dry_run", "true", "--checkpointing_steps", 1))
    assert result["status"] == "completed" and result["train_steps"] == 3
    assert "eval_mlm_accuracy" in result
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------------------------------------
# Output directories and continuing runs
# ----------------------------------------------------------------------------------------------------------------
def test_a_second_run_in_the_same_output_dir_must_say_what_it_wants(small_corpus, data_cache, tmp_path):
    argv = args_for(small_corpus, data_cache, tmp_path, "--max_train_steps", 2)
    run(argv)
    with pytest.raises(UserError, match="--resume_from_checkpoint latest to continue it, or --overwrite_output_dir"):
        run(argv)
    assert run(argv + ["--overwrite_output_dir", "true"])["status"] == "completed"
    # Resuming a finished run with more steps extends it.
    longer = run(
        args_for(small_corpus, data_cache, tmp_path, "--max_train_steps", 4, "--resume_from_checkpoint", "latest")
    )
    assert longer["train_steps"] == 4
    with pytest.raises(UserError, match="per_device_train_batch_size=16"):
        run(
            args_for(
                small_corpus,
                data_cache,
                tmp_path,
                max_train_steps=6,
                resume_from_checkpoint="latest",
                per_device_train_batch_size=8,
            )
        )


def test_lamb_trains(small_corpus, data_cache, tmp_path):
    result = run(args_for(small_corpus, data_cache, tmp_path, "--max_train_steps", 4, "--optimizer", "lamb"))
    assert result["status"] == "completed" and result["skipped_steps"] == 0


def test_push_to_hub_uploads_the_output_dir(small_corpus, data_cache, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    class RecordingApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, exist_ok, private):
            calls.append(("create_repo", repo_id, private))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, repo_id, folder_path, commit_message, ignore_patterns):
            calls.append(("upload_folder", repo_id, sorted(os.listdir(folder_path)), ignore_patterns))

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    run(
        args_for(small_corpus, data_cache, tmp_path, max_train_steps=2, push_to_hub="true", hub_model_id="me/tiny-bert")
    )
    (_, repo, private), (_, repo2, files, ignored) = calls[1], calls[2]
    assert repo == repo2 == "me/tiny-bert" and private is False
    assert {"model.safetensors", "config.json", "README.md", "all_results.json"} <= set(files)
    assert "checkpoints/*" in ignored
    assert "me/tiny-bert" in open(tmp_path / "README.md").read()


def test_streamed_data_resumes_exactly(small_corpus, data_cache, tmp_path, monkeypatch):
    """--streaming: no length, no sampler; the resumed run re-reads and skips the batches already trained on."""
    argv = lambda out: args_for(  # noqa: E731
        small_corpus,
        data_cache,
        out,
        "--streaming",
        "true",
        "--max_train_steps",
        30,  # noqa: E731
        "--logging_steps",
        1,
        "--checkpointing_steps",
        1000,
    )
    run(argv(tmp_path / "full"))
    with monkeypatch.context() as m:
        sigterm_after(m, 11)
        assert run(argv(tmp_path / "part"))["status"] == "interrupted"
    assert run(argv(tmp_path / "part") + ["--resume_from_checkpoint", "latest"])["train_steps"] == 30
    assert_same_weights(weights(tmp_path / "part"), weights(tmp_path / "full"), exact=True)


def test_export_bert_writes_a_native_twin(corpus, data_cache, tmp_path):
    from transformers import BertForPreTraining

    from minibert.modeling_minibert import MiniBertForPreTraining

    out = tmp_path / "out"
    run(args_for(corpus, data_cache, out, "--max_train_steps", "2", "--export_bert", "true"))
    config = json.loads((out / "bert" / "config.json").read_text())
    assert config["model_type"] == "bert" and "auto_map" not in config
    twin = BertForPreTraining.from_pretrained(out / "bert", trust_remote_code=False).eval()
    mini = MiniBertForPreTraining.from_pretrained(out).eval()
    ids = torch.randint(5, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    with torch.no_grad():
        a, b = twin(input_ids=ids, attention_mask=mask), mini(input_ids=ids, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(a.prediction_logits[real], b.prediction_logits[real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.seq_relationship_logits, b.seq_relationship_logits, rtol=1e-5, atol=1e-5)
    assert "/bert`" in (out / "README.md").read_text()


def test_a_plain_bert_gets_its_twin_by_default_and_nothing_else_does(corpus, data_cache, tmp_path):
    """--export_bert auto (the default): the twin whenever transformers' BertModel holds the model (clients that
    look a model up by its type find a "bert" there); none for a model that is not a BERT, and no error; a rerun
    that writes no twin removes the one an earlier run left (it would hold the earlier weights)."""
    from minibert.hub import BERT_TWIN_DIR

    out = tmp_path / "out"
    run(args_for(corpus, data_cache, out, "--max_train_steps", "1"))
    assert json.loads((out / BERT_TWIN_DIR / "config.json").read_text())["model_type"] == "bert"
    again = ["--max_train_steps", "1", "--overwrite_output_dir", "true"]
    run(args_for(corpus, data_cache, out, *again, "--export_bert", "false"))
    assert not (out / BERT_TWIN_DIR).exists() and (out / "config.json").exists()
    pre_ln = "hidden_size=64,num_hidden_layers=2,num_attention_heads=4,pre_layer_norm=true"
    run(args_for(corpus, data_cache, tmp_path / "pre_ln", "--max_train_steps", "1", model=pre_ln))
    assert not (tmp_path / "pre_ln" / BERT_TWIN_DIR).exists()


# ----------------------------------------------------------------------------------------------------------------
# Schedules over time, batch-size warmup
# ----------------------------------------------------------------------------------------------------------------
def test_move_schedule_to_follows_the_schedule_formula():
    """--schedule_by time puts transformers' schedule at a tick of the budget: linear decay at tick t of T is
    peak x (1 - t / T) after warmup, whatever path of ticks led there; the position never moves back."""
    from pretrain.optim import SCHEDULE_TICKS, build_lr_scheduler, move_schedule_to

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=2.0)
    warmup = SCHEDULE_TICKS // 10
    schedule = build_lr_scheduler(optimizer, "linear", warmup, SCHEDULE_TICKS)
    for tick in (3, 500, 2000, 2000, 7000, 6000, SCHEDULE_TICKS + 5):
        optimizer.step()
        move_schedule_to(schedule, tick)
        expected_tick = min(max(tick, 7000 if tick == 6000 else 0), SCHEDULE_TICKS)
        if expected_tick < warmup:
            expected = 2.0 * expected_tick / warmup
        else:
            expected = 2.0 * (SCHEDULE_TICKS - expected_tick) / (SCHEDULE_TICKS - warmup)
        assert schedule.get_last_lr()[0] == pytest.approx(expected, abs=1e-9), tick


def test_schedule_by_time_decays_to_zero_as_the_budget_ends(small_corpus, data_cache, tmp_path):
    """A 4-second budget with a linear schedule over time: the run stops on the budget, the LR rises during the
    warmup share and falls to ~0 at the end, and every logged LR equals the schedule at that record's clock."""
    argv = args_for(
        small_corpus,
        data_cache,
        tmp_path,
        schedule_by="time",
        time_budget=4 / 60,
        warmup_ratio=0.1,
        logging_steps=1,
        checkpointing_steps=100000,
    )
    result = run(argv)
    assert result["status"] == "completed" and result["stopped_by_time_budget"]
    lrs = [r["learning_rate"] for r in records(tmp_path)]
    assert len(lrs) > 10
    peak = max(lrs)
    assert peak <= 3e-3 + 1e-12 and peak > 2e-3  # reached the peak after warmup
    top = lrs.index(peak)
    assert all(a >= b for a, b in zip(lrs[top:], lrs[top + 1 :]))  # then only decays
    assert lrs[-1] < 0.1 * 3e-3  # ... to about zero where the budget ends
    assert result["train_runtime"] == pytest.approx(4.0, abs=1.5)


def test_schedule_by_time_needs_a_budget(small_corpus, data_cache, tmp_path):
    with pytest.raises(UserError, match="--time_budget"):
        run(args_for(small_corpus, data_cache, tmp_path, "--schedule_by", "time"))


def test_batch_size_warmup_ramps_the_accumulation(small_corpus, data_cache, tmp_path):
    """With 4 accumulation steps and a ramp over half of 16 steps, step k (0-based) takes 1 + floor(3 k / 8)
    micro-batches, then 4: the logged batch size and the sequences trained on follow that formula."""
    total, gas = 16, 4
    argv = args_for(
        small_corpus,
        data_cache,
        tmp_path,
        max_train_steps=total,
        gradient_accumulation_steps=gas,
        per_device_train_batch_size=4,
        batch_size_warmup_ratio=0.5,
        logging_steps=1,
    )
    result = run(argv)
    windows = [min(gas, 1 + (gas - 1) * k // 8) if k < 8 else gas for k in range(total)]
    assert result["train_samples"] == 4 * sum(windows)
    # Each record shows the batch of the *next* step.
    logged = [r["batch_size"] for r in records(tmp_path)]
    assert logged == [4 * w for w in windows[1:]] + [4 * gas]
    assert Progress.read(str(tmp_path / "checkpoints" / f"step_{total}")).samples_seen == 4 * sum(windows)


def test_resume_during_batch_size_warmup_is_exact(small_corpus, data_cache, tmp_path, monkeypatch):
    """Interrupted mid-ramp (steps of varying length, across an epoch end), the resumed run ends with the
    uninterrupted run's weights, bit for bit: the position in the data is counted in micro-batches."""
    argv = args_for(
        small_corpus,
        data_cache,
        tmp_path / "a",
        max_train_steps=48,
        gradient_accumulation_steps=3,
        per_device_train_batch_size=4,
        batch_size_warmup_ratio=0.8,
        checkpointing_steps=1000,
    )
    assert run(argv)["train_epochs"] > 1
    resumed = [a if a != str(tmp_path / "a") else str(tmp_path / "b") for a in argv]
    with monkeypatch.context() as m:
        sigterm_after(m, 10)
        assert run(resumed)["status"] == "interrupted"
    assert Progress.read(str(tmp_path / "b" / "checkpoints" / "step_11")).batches_in_epoch < 11 * 3  # mid-ramp
    assert run(resumed + ["--resume_from_checkpoint", "latest"])["status"] == "completed"
    assert_same_weights(weights(tmp_path / "b"), weights(tmp_path / "a"), exact=True)
