"""FSDP2 pretraining on two CPU processes (a gloo group), launched with the shipped fsdp.yaml as a user launches it.

Only what a CPU machine cannot have is changed in the config (2 processes, no bf16, any free port); one run also
turns on its activation checkpointing. The oracles are independent of FSDP:

- a one-process run (no FSDP) with the same global batch: the same weights to float tolerance;
- a run resumed from another run's mid-run sharded checkpoint: every tensor equal to that uninterrupted run;
- the sharded checkpoint consolidated offline (torch.distributed.checkpoint's `dcp_to_torch_save`) and the
  parameters gathered in the processes at the end of training: equal to the exported model.safetensors.

What the processes hold (DTensors, FSDP units) is recorded by this file itself, run as the launched script: it
wraps `Trainer.train` and then calls `python -m pretrain`'s `main`, so the run is the CLI's, unchanged.
DeepSpeed is not run on CPU (see docs/pretraining.md): its launch must refuse with one `error:` line.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_FSDP = os.path.join(ROOT, "pretrain", "accelerate_configs", "fsdp.yaml")
PROBE_DIR = "MINIBERT_TEST_FSDP_PROBE"  # where the launched processes write what they hold
STEPS, CHECKPOINT_AT = 6, 3

needs_cpu_only = pytest.mark.skipif(
    torch.cuda.is_available(), reason="tests FSDP on CPU processes; with a GPU accelerate runs FSDP itself"
)


# ----------------------------------------------------------------------------------------------------------------
# The launched side: record the sharding, then run the CLI
# ----------------------------------------------------------------------------------------------------------------
def _canonical(name: str) -> str:
    return name.replace("_checkpoint_wrapped_module.", "")


def _probe_main(argv: list[str]) -> int:
    from safetensors.torch import save_file
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    import pretrain.loop as loop
    from pretrain.__main__ import main

    out = os.environ[PROBE_DIR]
    original = loop.PretrainingLoop.train

    def train_and_record(self, stop):
        model, rank = self.model, self.accelerator.process_index
        params = {}
        for name, p in model.named_parameters():
            sharded = isinstance(p, DTensor)
            params[_canonical(name)] = {
                "dtensor": sharded,
                "placements": [f"Shard({x.dim})" if x.is_shard() else str(x) for x in p.placements] if sharded else [],
                "shape": list(p.shape),
                "local_shape": list(p.to_local().shape if sharded else p.shape),
            }
        record = {
            "distributed_type": self.accelerator.distributed_type.value,
            "num_processes": self.accelerator.num_processes,
            "params": params,
            "fsdp_units": [_canonical(n + ".")[:-1] for n, m in model.named_modules() if isinstance(m, FSDPModule)],
            "checkpointed": [n for n, m in model.named_modules() if isinstance(m, CheckpointWrapper)],
        }
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump(record, f)
        original(self, stop)
        # The trained weights as the processes hold them, gathered (a collective: every process calls it).
        full = {
            _canonical(n): (p.full_tensor() if isinstance(p, DTensor) else p).detach().clone()
            for n, p in model.named_parameters()
        }
        if rank == 0:
            save_file(full, os.path.join(out, "trained.safetensors"))

    loop.PretrainingLoop.train = train_and_record
    return main(argv)


if __name__ == "__main__":
    sys.exit(_probe_main(sys.argv[1:]))


# ----------------------------------------------------------------------------------------------------------------
# The test side
# ----------------------------------------------------------------------------------------------------------------
from conftest import NO_DROPOUT, TINY_MODEL, args_for, assert_same_weights, cli_env, topics_corpus, weights  # noqa: E402


def cpu_config(tmp_dir, activation_checkpointing: bool | None = None) -> str:
    """The shipped fsdp.yaml with what a CPU machine cannot have changed: 2 processes, no bf16, a free port."""
    with open(SHIPPED_FSDP) as f:
        config = yaml.safe_load(f)
    config.update(num_processes=2, mixed_precision="no", main_process_port=0)
    if activation_checkpointing is not None:
        config["fsdp_config"]["fsdp_activation_checkpointing"] = activation_checkpointing
    path = os.path.join(tmp_dir, f"fsdp_cpu_ac{activation_checkpointing}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return path


def launch(config: str, probe_dir, argv: list) -> None:
    os.makedirs(probe_dir, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        config,
        os.path.abspath(__file__),
        *map(str, argv),
    ]
    done = subprocess.run(cmd, env=cli_env(**{PROBE_DIR: str(probe_dir)}), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]


def probe(probe_dir) -> tuple[dict, dict]:
    return tuple(json.load(open(os.path.join(probe_dir, f"rank{r}.json"))) for r in (0, 1))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return topics_corpus(tmp_path_factory, "fsdp_corpus", n_docs=80, seed=2)


def run_args(corpus, cache, output_dir, *extra, dropout: bool = False) -> list:
    return args_for(
        corpus,
        cache,
        output_dir,
        "--max_train_steps",
        STEPS,
        "--checkpointing_steps",
        CHECKPOINT_AT,
        "--logging_steps",
        1,
        "--per_device_train_batch_size",
        8,
        "--config_overrides",
        TINY_MODEL + ("" if dropout else NO_DROPOUT),
        *extra,
    )


@pytest.fixture(scope="module")
def one_process(corpus, cache, tmp_path_factory):
    """The oracle: one process, no FSDP, the same global batch of 16 (this also fills the data cache)."""
    out = tmp_path_factory.mktemp("one_process")
    argv = run_args(corpus, cache, out, "--per_device_train_batch_size", 16)
    cmd = [sys.executable, "-m", "pretrain", *map(str, argv)]
    subprocess.run(cmd, env=cli_env(), check=True, capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="module")
def shipped(one_process, corpus, cache, tmp_path_factory):
    """Two CPU processes under the shipped config (activation checkpointing off, as shipped)."""
    base = tmp_path_factory.mktemp("fsdp_shipped")
    out, probe_dir = base / "run", base / "probe"
    launch(cpu_config(base), probe_dir, run_args(corpus, cache, out))
    return out, probe_dir


@pytest.fixture(scope="module")
def checkpointed(one_process, corpus, cache, tmp_path_factory):
    """Two CPU processes with activation checkpointing on and dropout on (the resume test's uninterrupted run)."""
    base = tmp_path_factory.mktemp("fsdp_ac")
    out, probe_dir = base / "run", base / "probe"
    config = cpu_config(base, activation_checkpointing=True)
    launch(config, probe_dir, run_args(corpus, cache, out, dropout=True))
    return out, probe_dir, config


@needs_cpu_only
def test_parameters_are_sharded_in_half_over_the_two_processes(shipped):
    rank0, rank1 = probe(shipped[1])
    for record in (rank0, rank1):
        assert record["distributed_type"] == "FSDP" and record["num_processes"] == 2
    assert rank0["params"].keys() == rank1["params"].keys()
    held = [0, 0]
    for name, p0 in rank0["params"].items():
        p1 = rank1["params"][name]
        assert p0["dtensor"] and p1["dtensor"], f"{name} is not sharded"
        assert p0["placements"] == p1["placements"] == ["Shard(0)"], name
        rows = p0["shape"][0]
        assert p0["local_shape"][0] + p1["local_shape"][0] == rows, name  # the two halves make the whole
        assert p0["local_shape"][0] == (rows + 1) // 2, name  # FSDP2 pads the last shard: rank 0 takes the odd row
        for r, p in enumerate((p0, p1)):
            held[r] += torch.Size(p["local_shape"]).numel()
    total = sum(torch.Size(p["shape"]).numel() for p in rank0["params"].values())
    assert held[0] + held[1] == total
    assert abs(held[0] - held[1]) / total < 0.01  # each process holds half of the model


@needs_cpu_only
def test_each_minibert_layer_is_an_fsdp_unit_as_the_shipped_config_says(shipped, checkpointed):
    rank0, _ = probe(shipped[1])
    layers = sorted(n for n in rank0["fsdp_units"] if n.startswith("bert.encoder.layer."))
    assert layers == ["bert.encoder.layer.0", "bert.encoder.layer.1"]
    # The root, and the unit of the tied word embeddings + MLM head (`shard_tied_head`).
    assert {"", "bert.embeddings.word_embeddings", "cls.predictions"} <= set(rank0["fsdp_units"])
    assert rank0["checkpointed"] == []  # activation checkpointing is off in the shipped config

    with_ac, _ = probe(checkpointed[1])
    assert with_ac["checkpointed"] == ["bert.encoder.layer.0", "bert.encoder.layer.1"]
    assert sorted(n for n in with_ac["fsdp_units"] if n.startswith("bert.encoder.layer.")) == layers


@needs_cpu_only
def test_two_sharded_processes_match_one_process_with_the_same_global_batch(shipped, one_process):
    results = json.load(open(shipped[0] / "all_results.json"))
    oracle = json.load(open(one_process / "all_results.json"))
    assert results["num_processes"] == 2 and results["global_batch_size"] == oracle["global_batch_size"] == 16
    assert results["train_tokens"] == oracle["train_tokens"]
    assert results["eval_loss"] == pytest.approx(oracle["eval_loss"], rel=1e-5)
    assert_same_weights(weights(shipped[0]), weights(one_process), exact=False)
    card = (shipped[0] / "README.md").read_text()
    assert "Hardware: 2 CPU processes" in card and "FSDP2" in card  # the model card says how it was trained


@needs_cpu_only
def test_checkpoints_are_sharded(shipped):
    step = shipped[0] / "checkpoints" / f"step_{STEPS}"
    names = set(os.listdir(step))
    assert "model.safetensors" not in names and "optimizer.bin" not in names  # not DDP's whole-model files
    for folder in ("pytorch_model_fsdp_0", "optimizer_0"):  # torch.distributed.checkpoint: one file per process
        assert {"__0_0.distcp", "__1_0.distcp"} <= set(os.listdir(step / folder)), folder


@needs_cpu_only
def test_the_export_gathers_the_trained_weights_into_a_loadable_checkpoint(shipped, tmp_path):
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    from minibert import MiniBertForPreTraining

    out, probe_dir = shipped
    exported = weights(out)
    # 1. The parameters as the processes held them at the end of training, gathered there.
    trained = load_file(os.path.join(probe_dir, "trained.safetensors"))
    assert set(trained) <= set(exported)
    for name, tensor in trained.items():
        assert torch.equal(exported[name], tensor), name
    # 2. The final sharded checkpoint, consolidated offline, without FSDP.
    dcp_to_torch_save(str(out / "checkpoints" / f"step_{STEPS}" / "pytorch_model_fsdp_0"), str(tmp_path / "full.pt"))
    consolidated = torch.load(tmp_path / "full.pt", weights_only=True)["model"]
    assert set(exported) <= set(consolidated)
    for name, tensor in exported.items():
        assert torch.equal(consolidated[name], tensor), name
    # 3. It loads as a whole model, every weight in place (the tied decoder too).
    model = MiniBertForPreTraining.from_pretrained(out)
    state = model.state_dict()
    for name, tensor in exported.items():
        assert torch.equal(state[name], tensor), name
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


@needs_cpu_only
def test_a_resumed_sharded_run_equals_the_uninterrupted_one(checkpointed, corpus, cache, tmp_path):
    """Stop at K (the uninterrupted run's checkpoint at K), resume to 2K: every tensor equal; dropout on."""
    uninterrupted, _, config = checkpointed
    resumed = tmp_path / "resumed"
    stopped_at = uninterrupted / "checkpoints" / f"step_{CHECKPOINT_AT}"
    argv = run_args(corpus, cache, resumed, "--resume_from_checkpoint", stopped_at, dropout=True)
    launch(config, tmp_path / "probe", argv)
    assert_same_weights(weights(resumed), weights(uninterrupted), exact=True)
    a, b = (json.load(open(d / "all_results.json")) for d in (resumed, uninterrupted))
    assert a["train_steps"] == b["train_steps"] == STEPS and a["train_tokens"] == b["train_tokens"]
    assert a["eval_loss"] == b["eval_loss"]
    # The final sharded checkpoints hold the same shards, optimizer state included.
    for folder in ("pytorch_model_fsdp_0", "optimizer_0"):
        for run in (resumed, uninterrupted):
            assert os.path.isdir(run / "checkpoints" / f"step_{STEPS}" / folder)


# ----------------------------------------------------------------------------------------------------------------
# Refusals: never a silent fallback to DDP
# ----------------------------------------------------------------------------------------------------------------
def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr
    return errors[0]


@needs_cpu_only
@pytest.mark.parametrize(
    "launch_env, message",
    [
        ({"ACCELERATE_USE_DEEPSPEED": "true"}, "DeepSpeed config needs GPUs"),
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}, "no process group"),  # not started by accelerate launch
    ],
)
def test_distributed_modes_that_cannot_run_here_refuse_with_one_line(launch_env, message, tmp_path):
    """What `accelerate launch` sets in the environment for these configs, given to `python -m pretrain`."""
    cmd = [sys.executable, "-m", "pretrain", "--output_dir", str(tmp_path / "out"), "--dry_run", "true"]
    done = subprocess.run(cmd, env=cli_env(**launch_env), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    assert message in _one_error_line(done.stderr)


@needs_cpu_only
@pytest.mark.parametrize(
    "setting, message",
    [
        ({"FSDP_VERSION": "1"}, "fsdp_version 1 needs GPUs"),
        ({"FSDP_VERSION": "2", "FSDP_CPU_RAM_EFFICIENT_LOADING": "true"}, "fsdp_cpu_ram_efficient_loading"),
    ],
)
def test_fsdp_settings_that_cpu_processes_cannot_run_are_refused(setting, message, monkeypatch):
    from minibert.cli import UserError
    from pretrain.args import PretrainingArguments
    from pretrain.distributed import make_accelerator

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    for key, value in setting.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UserError, match=message):  # before any accelerate state is made
        make_accelerator(PretrainingArguments(output_dir="unused"))


@pytest.mark.parametrize("written_by_fsdp, run_is_fsdp", [(True, False), (False, True)])
def test_a_checkpoint_resumes_only_under_the_mode_that_wrote_it(written_by_fsdp, run_is_fsdp, tmp_path):
    """Else FSDP would look for shards in a DDP checkpoint (a traceback deep in torch.distributed.checkpoint), and
    DDP would call an FSDP checkpoint incomplete."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from minibert.cli import UserError
    from pretrain.distributed import check_checkpoint_layout

    (tmp_path / ("pytorch_model_fsdp_0" if written_by_fsdp else "model.safetensors")).mkdir()
    accelerator = SimpleNamespace(distributed_type=DistributedType.FSDP if run_is_fsdp else DistributedType.MULTI_CPU)
    with pytest.raises(UserError, match="resume it with the accelerate config that wrote it"):
        check_checkpoint_layout(str(tmp_path), accelerator)
    same = SimpleNamespace(distributed_type=DistributedType.FSDP if written_by_fsdp else DistributedType.MULTI_CPU)
    check_checkpoint_layout(str(tmp_path), same)
