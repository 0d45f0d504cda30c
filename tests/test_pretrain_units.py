"""The pretraining loop's parts, each against an independent oracle: torch's AdamW for LAMB, a dense forward for
the sparse evaluation statistics, a single process for the two-process LR schedule, a crash for atomic saves."""

import io
import json
import math
import os

import pytest
import torch
from accelerate import Accelerator, debug_launcher
from conftest import TINY
from transformers import get_scheduler

from minibert import MiniBertConfig, MiniBertForPreTraining
from minibert.cli import UserError, parse_args
from pretrain.args import ModelArguments, PretrainingArguments, typed_config_overrides
from pretrain.checkpointing import (
    LATEST_FILE,
    Progress,
    check_compatible,
    latest_checkpoint,
    list_checkpoints,
    resolve_resume,
    rotate_checkpoints,
)
from pretrain.evaluation import per_sequence_stats, summarize
from pretrain.optim import Lamb, build_lr_scheduler, param_groups
from pretrain.train import build_config


# ----------------------------------------------------------------------------------------------------------------
# Optimizers
# ----------------------------------------------------------------------------------------------------------------
def test_weight_decay_only_on_matrices():
    model = MiniBertForPreTraining(MiniBertConfig(**TINY))
    decay, no_decay = param_groups(model, weight_decay=0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"])
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert any("LayerNorm.weight" in n for n in no_decay_names) and any(n.endswith(".bias") for n in no_decay_names)
    assert not any("LayerNorm" in names[id(p)] for p in decay["params"])
    # Every parameter is in exactly one group (tied weights once).
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def _three_steps(opt_factory, seed=0):
    torch.manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(6, 5)), torch.nn.Parameter(torch.randn(5))]
    opt = opt_factory(params)
    for step in range(3):
        torch.manual_seed(100 + step)
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    return [p.detach().clone() for p in params]


def test_lamb_without_layer_adaptation_is_adamw():
    """With the trust ratio off, LAMB's update is exactly AdamW's (decoupled decay, bias correction)."""
    kw = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.1)
    ours = _three_steps(lambda ps: Lamb([{"params": ps, "layer_adaptation": False}], **kw))
    ref = _three_steps(lambda ps: torch.optim.AdamW(ps, **kw))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_lamb_trust_ratio_sets_the_step_size_per_tensor():
    """With layer adaptation each tensor moves by lr x ||w|| (its update is rescaled to the weight's norm);
    a group without it (biases, LayerNorm) takes the plain Adam step."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(8, 4) * 3)
    b = torch.nn.Parameter(torch.randn(4))
    w0, b0 = w.detach().clone(), b.detach().clone()
    lr = 1e-2
    opt = Lamb([{"params": [w], "layer_adaptation": True}, {"params": [b], "layer_adaptation": False}], lr=lr)
    w.grad, b.grad = torch.randn_like(w), torch.randn_like(b)
    opt.step()
    torch.testing.assert_close((w.detach() - w0).norm(), lr * w0.norm(), rtol=1e-4, atol=0)
    # The first Adam step is lr * sign(g) (up to eps) for every element.
    torch.testing.assert_close(b.detach() - b0, -lr * torch.sign(b.grad), rtol=1e-3, atol=1e-6)


def test_lamb_state_survives_a_state_dict_round_trip():
    """Saved (through torch.save, as checkpoints are) and loaded into a fresh optimizer mid-run, LAMB then makes
    exactly the updates of the run that never stopped: every moment and step count came back."""
    kw = dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)

    def grads(step, params):
        torch.manual_seed(100 + step)
        for p in params:
            p.grad = torch.randn_like(p)

    def make(values):
        params = [torch.nn.Parameter(v.clone()) for v in values]
        return params, Lamb([{"params": params[:1]}, {"params": params[1:], "layer_adaptation": False}], **kw)

    torch.manual_seed(0)
    start = [torch.randn(4, 3), torch.randn(3)]
    straight, opt = make(start)
    for step in range(6):
        grads(step, straight)
        opt.step()
    first, opt = make(start)
    for step in range(3):
        grads(step, first)
        opt.step()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    resumed, again = make([p.detach() for p in first])
    again.load_state_dict(torch.load(buffer, weights_only=True))
    for step in range(3, 6):
        grads(step, resumed)
        again.step()
    for a, b in zip(resumed, straight):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_lamb_reaches_the_loss_adamw_reaches():
    """On the same small regression (a 2-layer MLP, full batch, the same learning rate) LAMB reaches the loss AdamW
    reaches in 200 steps, within 3x the steps (its trust ratio makes each step lr x ||w||, a slower start on small
    weights): it trains, and is not merely finite."""
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = torch.sin(x @ torch.randn(8, 1))

    def losses(make_opt, steps):
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
        opt = make_opt(model)
        history = []
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            history.append(loss.item())
        return history

    adamw = losses(lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2), 200)
    lamb = losses(lambda m: Lamb(m.parameters(), lr=1e-2), 600)
    assert adamw[-1] < 0.2 * adamw[0]  # the task is learnable in this budget
    assert min(lamb) <= adamw[-1], (min(lamb), adamw[-1])


def timm_lamb():
    """timm's `Lamb` class, loaded from timm's optimizer files alone (run.sh puts timm in .venv/oracles/timm).

    timm is no dev extra: its package's __init__ imports torchvision, for which pip replaces the CPU torch with a
    CUDA build (and the torchvision built for torch 2.13 on PyPI does not load beside torch+cpu); installed among
    the venv's packages without it, it makes transformers 4.x fail to import (tests/test_compat.py). Its LAMB
    (timm/optim/lamb.py, _helpers.py, _types.py) needs only torch, so `timm` and `timm.optim` are stood in for by
    bare packages while it is imported, and taken out of sys.modules again afterwards."""
    import importlib
    import sys
    import types

    root = os.path.join(sys.prefix, "oracles", "timm", "timm")
    if not os.path.isfile(os.path.join(root, "optim", "lamb.py")):
        pytest.skip(f"timm's files are not in {root} (bash run.sh installs them there)")
    try:
        for name, folder in (("timm", root), ("timm.optim", os.path.join(root, "optim"))):
            package = types.ModuleType(name)
            package.__path__ = [folder]
            sys.modules[name] = package
        return importlib.import_module("timm.optim.lamb").Lamb
    finally:
        for name in [n for n in sys.modules if n == "timm" or n.startswith("timm.")]:
            del sys.modules[name]


@pytest.mark.parametrize("weight_decay", [0.01, 0.0])
@pytest.mark.parametrize("foreach", [False, True], ids=["per_tensor", "foreach"])
def test_lamb_matches_timm_lamb(weight_decay, foreach):
    """timm's Lamb (NVIDIA's FusedLAMB algorithm, in PyTorch) is the oracle: a tiny BERT with our weight-decay groups,
    trained 10 steps by each from the same weights on the same batches, ends with the same weights.

    The settings that make them one algorithm: no global gradient clipping (timm clips to max_grad_norm=1.0 unless
    told None; ours leaves clipping to the loop), Adam's bias correction and gradient averaging (both defaults),
    L2 decay added to the update before the trust ratio (timm's decoupled_decay=False), no trust-ratio clipping.
    timm adapts a tensor's step when its group has weight decay or `always_adapt`; ours when `layer_adaptation`:
    so always_adapt = layer_adaptation (the decay group adapts with any weight decay, 0 included; the no-decay
    group, biases and LayerNorm, takes the plain Adam step in both). A group without adaptation but with weight
    decay, which `param_groups` never makes, has no timm equivalent."""
    TimmLamb = timm_lamb()
    config = MiniBertConfig(**TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    ours_model = MiniBertForPreTraining(config)
    timm_model = MiniBertForPreTraining(config)
    timm_model.load_state_dict(ours_model.state_dict())
    start = {n: p.detach().clone() for n, p in ours_model.named_parameters()}
    hyper = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-6)
    ours = Lamb(param_groups(ours_model, weight_decay), **hyper)
    groups = param_groups(timm_model, weight_decay)
    for group in groups:
        group["always_adapt"] = group.pop("layer_adaptation")
    theirs = TimmLamb(
        groups,
        **hyper,
        bias_correction=True,
        grad_averaging=True,
        max_grad_norm=None,
        trust_clip=False,
        decoupled_decay=False,
        foreach=foreach,
    )
    g = torch.Generator().manual_seed(1)
    for _ in range(10):
        input_ids = torch.randint(5, TINY["vocab_size"], (4, 16), generator=g)
        batch = dict(
            input_ids=input_ids,
            labels=input_ids.masked_fill(torch.rand(input_ids.shape, generator=g) > 0.15, -100),
            next_sentence_label=torch.randint(0, 2, (4,), generator=g),
        )
        for model, optimizer in ((ours_model, ours), (timm_model, theirs)):
            optimizer.zero_grad()
            model(**batch).loss.backward()
            optimizer.step()
    theirs_params = dict(timm_model.named_parameters())
    for name, p in ours_model.named_parameters():
        if p.dim() >= 2:  # every adapted tensor moved: the comparison is not vacuous (a key bias has no gradient)
            assert (p - start[name]).abs().max() > 1e-3, name
        torch.testing.assert_close(p, theirs_params[name], rtol=1e-5, atol=1e-6, msg=name)


# ----------------------------------------------------------------------------------------------------------------
# The LR schedule with 1 and 2 processes
# ----------------------------------------------------------------------------------------------------------------
def reset_accelerate_state():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


SCHEDULE = dict(name="linear", num_warmup_steps=4, num_training_steps=12)


def _record_lrs(out_dir: str) -> None:
    """In each process: 12 optimizer updates with our scheduler and with accelerate's prepared one."""
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(2, 1)
    ours_opt = torch.optim.SGD(model.parameters(), lr=1.0)
    theirs_opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
    model, ours_opt = accelerator.prepare(model, ours_opt)
    ours = build_lr_scheduler(ours_opt, **SCHEDULE)
    theirs_sched = get_scheduler(optimizer=theirs_opt, **SCHEDULE)
    theirs_opt, theirs = accelerator.prepare(theirs_opt, theirs_sched)
    ours_lrs, theirs_lrs = [], []
    for _ in range(12):
        ours_opt.step()
        ours.step()
        theirs_opt.step()
        theirs.step()
        ours_lrs.append(ours.get_last_lr()[0])
        theirs_lrs.append(theirs.get_last_lr()[0])
    with open(os.path.join(out_dir, f"lrs_{accelerator.process_index}_{accelerator.num_processes}.json"), "w") as f:
        json.dump({"ours": ours_lrs, "theirs": theirs_lrs}, f)


def test_lr_schedule_is_the_same_on_one_and_two_processes(tmp_path):
    """Our scheduler advances once per update whatever the world size; accelerate's prepared scheduler steps
    once per process per update (accelerate #2318), which is why the loop does not prepare its scheduler."""
    _record_lrs(str(tmp_path))  # one process, in this process
    reset_accelerate_state()  # forked workers would inherit this process's one-process state
    debug_launcher(_record_lrs, args=(str(tmp_path),), num_processes=2)
    reset_accelerate_state()
    one = json.loads((tmp_path / "lrs_0_1.json").read_text())
    two = [json.loads((tmp_path / f"lrs_{r}_2.json").read_text()) for r in range(2)]
    expected = [min((s + 1) / 4, max(0.0, (12 - s - 1) / 8)) for s in range(12)]  # warmup 4, linear decay to 12
    assert one["ours"] == pytest.approx(expected)
    assert one["theirs"] == pytest.approx(expected)  # one process: accelerate's wrapper is right too
    for rank in two:
        assert rank["ours"] == pytest.approx(expected)
        # With two processes accelerate's runs twice as fast: warmup ends after 2 updates, decay after 8.
        assert rank["theirs"] == pytest.approx([expected[min(2 * s + 1, 11)] for s in range(12)])


# ----------------------------------------------------------------------------------------------------------------
# Model configuration
# ----------------------------------------------------------------------------------------------------------------
def test_config_overrides_are_typed_and_keep_bert_proportions():
    tokenizer = type("Tok", (), {"pad_token_id": 0, "__len__": lambda self: 321})()
    args = ModelArguments(
        model_size="mini", config_overrides="hidden_size=64,num_hidden_layers=2,hidden_dropout_prob=0"
    )
    config = build_config(args, tokenizer, max_seq_length=128)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 2, 1)
    assert config.intermediate_size == 256 and config.hidden_dropout_prob == 0.0 and config.vocab_size == 321
    fresh = build_config(ModelArguments(), tokenizer, max_seq_length=1024)  # tiny by default
    assert (fresh.num_hidden_layers, fresh.hidden_size, fresh.max_position_embeddings) == (2, 128, 1024)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ("hidden_sise=64", "not a MiniBertConfig field"),
        ("hidden_size=big", "hidden_size=big"),
        ("hidden_size", "name=value"),
        ("hidden_size=30,num_attention_heads=4", "divisible"),
    ],
)
def test_bad_config_overrides_are_user_errors(overrides, message):
    tokenizer = type("Tok", (), {"pad_token_id": 0, "__len__": lambda self: 100})()
    with pytest.raises(UserError, match=message):
        ModelArguments(config_overrides=overrides).validate()
        build_config(ModelArguments(config_overrides=overrides), tokenizer, 128)


def test_config_overrides_are_typed_once_into_the_dict_every_reader_uses():
    from pretrain.train import planned_architecture

    tokenizer = type("Tok", (), {"pad_token_id": 0, "__len__": lambda self: 100})()
    args = ModelArguments(config_overrides="hidden_size=64,hidden_dropout_prob=0")
    assert args.overrides == {"hidden_size": 64, "hidden_dropout_prob": 0.0}
    assert type(args.overrides["hidden_dropout_prob"]) is float
    args.config_overrides = "hidden_size=not-read-again"  # the text is the flag; the readers read the typed dict
    assert build_config(args, tokenizer, 128).hidden_size == 64
    assert planned_architecture(args)["hidden_size"] == 64


def test_typed_overrides_cast_against_the_defaults():
    typed = typed_config_overrides("classifier_dropout=0.2,tie_word_embeddings=false,hidden_act=relu", MiniBertConfig())
    assert typed == {"classifier_dropout": 0.2, "tie_word_embeddings": False, "hidden_act": "relu"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--learning_rate", "0"], "learning_rate"),
        (["--per_device_train_batch_size", "0"], "per_device_train_batch_size"),
        (["--num_warmup_steps", "10", "--warmup_ratio", "0.1"], "not both"),
        (["--checkpointing_steps", "often"], "checkpointing_steps"),
        (["--time_budget", "-1"], "time_budget"),
        (["--model_name_or_path", "x", "--model_size", "mini"], "not both"),
    ],
)
def test_bad_training_arguments(argv, message):
    with pytest.raises(UserError, match=message):
        parse_args([ModelArguments, PretrainingArguments], argv)


# ----------------------------------------------------------------------------------------------------------------
# Evaluation statistics
# ----------------------------------------------------------------------------------------------------------------
def test_sparse_evaluation_statistics_match_a_dense_forward():
    torch.manual_seed(0)
    model = MiniBertForPreTraining(MiniBertConfig(**TINY)).eval()
    input_ids = torch.randint(5, 99, (4, 12))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 8:] = 0
    labels = torch.full_like(input_ids, -100)
    chosen = torch.rand(4, 12) < 0.3
    chosen[3] = False  # a sequence without masked tokens
    chosen[:, 0] = True
    chosen &= attention_mask.bool()
    labels[chosen] = input_ids[chosen]
    batch = dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        token_type_ids=torch.zeros_like(input_ids),
        labels=labels,
        next_sentence_label=torch.tensor([0, 1, 1, 0]),
    )
    with torch.no_grad():
        sparse = per_sequence_stats(
            model(**{k: v for k, v in batch.items() if k != "next_sentence_label"}, sparse_prediction=True),
            batch,
            next_sentence_prediction=True,
        )
        dense_out = model(**{k: v for k, v in batch.items() if k != "next_sentence_label"})
    # Oracle: loss and accuracy per sequence from the dense (B, S, V) logits.
    for row in range(4):
        m = labels[row] != -100
        logits = dense_out.prediction_logits[row][m]
        loss = (
            torch.nn.functional.cross_entropy(logits, labels[row][m], reduction="sum") if m.any() else torch.tensor(0.0)
        )
        torch.testing.assert_close(sparse[row, 0], loss, atol=1e-4, rtol=1e-5)
        assert sparse[row, 1] == m.sum()
        assert sparse[row, 2] == (logits.argmax(-1) == labels[row][m]).sum()
    nsp = torch.nn.functional.cross_entropy(
        dense_out.seq_relationship_logits, batch["next_sentence_label"], reduction="none"
    )
    torch.testing.assert_close(sparse[:, 3], nsp, atol=1e-5, rtol=1e-5)
    metrics = summarize(sparse.sum(0).double().tolist(), 4)
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["eval_mlm_loss"]))
    assert metrics["eval_loss"] == pytest.approx(metrics["eval_mlm_loss"] + metrics["eval_nsp_loss"])


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint files
# ----------------------------------------------------------------------------------------------------------------
class FakeAccelerator:
    """What `save_checkpoint_state` uses of an Accelerator; `save_state` can be made to crash half-way."""

    is_main_process = True

    def __init__(self, crash=False):
        self.crash = crash

    def wait_for_everyone(self):
        pass

    def save_state(self, path):
        with open(os.path.join(path, "model.safetensors"), "w") as f:
            f.write("weights")
        if self.crash:
            raise RuntimeError("killed while saving")


def test_checkpoints_are_atomic_rotated_and_found_by_their_json(tmp_path):
    from pretrain.checkpointing import save_checkpoint_state

    out = str(tmp_path)
    for step in (10, 20, 30):
        save_checkpoint_state(FakeAccelerator(), out, Progress(completed_steps=step, epoch=step // 25), total_limit=2)
    root = tmp_path / "checkpoints"
    assert sorted(os.listdir(root)) == ["latest", "step_20", "step_30"]
    assert (root / LATEST_FILE).read_text().strip() == "step_30"
    # A crash during the next save leaves a temporary folder, and `latest` still names a complete checkpoint.
    with pytest.raises(RuntimeError):
        save_checkpoint_state(FakeAccelerator(crash=True), out, Progress(completed_steps=40), total_limit=2)
    assert latest_checkpoint(out) == str(root / "step_30")
    assert resolve_resume("latest", out) == str(root / "step_30")
    assert Progress.read(str(root / "step_30")).epoch == 1
    # The folder name means nothing: the position comes from the JSON.
    os.rename(root / "step_20", root / "renamed")
    assert [s for s, _ in list_checkpoints(str(root))] == [20, 30]
    # A stale pointer falls back to the newest complete checkpoint.
    (root / LATEST_FILE).write_text("step_999\n")
    assert latest_checkpoint(out) == str(root / "step_30")
    # The next successful save replaces the crashed one's leftovers.
    save_checkpoint_state(FakeAccelerator(), out, Progress(completed_steps=40), total_limit=2)
    assert sorted(os.listdir(root)) == ["latest", "step_30", "step_40"]


def test_rotation_never_deletes_the_protected_checkpoint(tmp_path):
    for step in (5, 1, 3):
        d = tmp_path / f"c{step}"
        d.mkdir()
        Progress(completed_steps=step).write(str(d))
    rotate_checkpoints(str(tmp_path), keep=1, protect=str(tmp_path / "c1"))
    assert sorted(os.listdir(tmp_path)) == ["c1", "c5"]


def test_resume_arguments(tmp_path):
    assert resolve_resume(None, str(tmp_path)) is None
    assert resolve_resume("latest", str(tmp_path)) is None  # nothing yet: a fresh start
    with pytest.raises(UserError, match="does not exist"):
        resolve_resume(str(tmp_path / "nope"), str(tmp_path))
    with pytest.raises(UserError, match="holds no checkpoint"):
        resolve_resume(str(tmp_path), str(tmp_path))
    ckpt = tmp_path / "run" / "checkpoints" / "step_7"
    ckpt.mkdir(parents=True)
    Progress(completed_steps=7).write(str(ckpt))
    # A checkpoint folder, the run's output_dir, or its checkpoints/ folder all resolve to the checkpoint.
    for given in (ckpt, tmp_path / "run", tmp_path / "run" / "checkpoints"):
        assert resolve_resume(str(given), str(tmp_path)) == str(ckpt)


def test_resume_refuses_a_differently_shaped_run():
    saved = Progress(num_processes=2, per_device_train_batch_size=8, gradient_accumulation_steps=1)
    with pytest.raises(UserError, match="2 process"):
        check_compatible(saved, Progress(num_processes=1, per_device_train_batch_size=16), "ckpt")
    with pytest.raises(UserError, match="per_device_train_batch_size=8"):
        check_compatible(
            saved, Progress(num_processes=2, per_device_train_batch_size=4, gradient_accumulation_steps=2), "ckpt"
        )
    check_compatible(saved, Progress(num_processes=2, per_device_train_batch_size=8), "ckpt")
    assert saved.global_batch_size == 16


# ----------------------------------------------------------------------------------------------------------------
# Shipped configuration files
# ----------------------------------------------------------------------------------------------------------------
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pretrain")


@pytest.mark.parametrize(
    "name", sorted(n for n in os.listdir(os.path.join(CONFIG_DIR, "configs")) if n.endswith(".yaml"))
)
def test_run_configs_parse(name):
    """Every shipped run config holds only known keys with valid values; a shipped name works without a path."""
    from pretrain.__main__ import parse

    model_args, data_args, training_args, _ = parse([name.removesuffix(".yaml"), "--seed", "7"])
    assert training_args.seed == 7  # flags override the file
    assert training_args.output_dir.startswith("outputs/")
    if name != "demo.yaml":
        assert not training_args.overwrite_output_dir  # real runs never delete checkpoints by default


@pytest.mark.parametrize("name", sorted(os.listdir(os.path.join(CONFIG_DIR, "configs", "recipes"))))
def test_every_shipped_recipe_parses_and_types_its_config_overrides(name):
    """A recipe is a defaults file: known keys only, and its config overrides typed against MiniBertConfig."""
    from pretrain.__main__ import parse

    model_args, *_ = parse(["--train_file", "corpus.txt", "--recipe", name.removesuffix(".yaml")])
    for key, value in model_args.overrides.items():
        assert type(value) is type(getattr(MiniBertConfig(), key)) or getattr(MiniBertConfig(), key) is None, key


def test_the_demo_recipe_is_the_default_for_the_demo_corpus():
    from pretrain.__main__ import parse

    _, data_args, training_args, _ = parse([])
    assert training_args.max_train_steps is not None and data_args.train_file is None
    _, _, changed, _ = parse(["--max_train_steps", "7", "--output_dir", "/tmp/x"])
    assert (changed.max_train_steps, changed.learning_rate) == (7, training_args.learning_rate)
    _, _, own_data, _ = parse(["--train_file", "corpus.txt"])
    assert own_data.max_train_steps is None  # another corpus: the plain defaults


EXPECTED_DISTRIBUTION = {
    "single_gpu.yaml": ("NO", 1),
    "multi_gpu_8.yaml": ("MULTI_GPU", 8),
    "multi_node_2x8.yaml": ("MULTI_GPU", 16),
    "fsdp.yaml": ("FSDP", 8),
    "deepspeed_zero2.yaml": ("DEEPSPEED", 8),
    "cpu_2proc.yaml": ("MULTI_GPU", 2),
}


@pytest.mark.parametrize("name", sorted(os.listdir(os.path.join(CONFIG_DIR, "accelerate_configs"))))
def test_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(os.path.join(CONFIG_DIR, "accelerate_configs", name))
    assert (config.distributed_type.value, config.num_processes) == EXPECTED_DISTRIBUTION[name]
    if name == "fsdp.yaml":
        assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "MiniBertLayer"


@pytest.mark.parametrize("decay_type", ["linear", "cosine", "1-sqrt"])
def test_warmup_stable_decay_follows_its_formula(decay_type):
    """Warmup to the peak, flat, then the last 20% decays to 0 by the named shape (1-sqrt: 1 - sqrt(progress))."""
    import math

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    total, warmup = 50, 5
    schedule = build_lr_scheduler(
        optimizer, "warmup_stable_decay", warmup, total, decay_ratio=0.2, decay_type=decay_type
    )
    lrs = []
    for _ in range(total):
        lrs.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    decay_start = total - 10
    shape = {
        "linear": lambda p: 1 - p,
        "cosine": lambda p: 0.5 * (1 + math.cos(math.pi * p)),
        "1-sqrt": lambda p: 1 - math.sqrt(p),
    }[decay_type]
    for step, lr in enumerate(lrs):
        if step < warmup:
            expected = step / warmup
        elif step < decay_start:
            expected = 1.0
        else:
            expected = shape((step - decay_start) / 10)
        assert lr == pytest.approx(expected, abs=1e-6), (step, lr, expected)
