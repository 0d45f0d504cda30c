"""Where a pretraining run runs: one accelerate `Accelerator` for one CPU, GPUs, nodes, FSDP or DeepSpeed.

`make_accelerator` checks the launch against the machine (a GPU launch config on a machine without GPUs, DeepSpeed
without GPUs) and forms the process group CPU launches need; `_fsdp_on_cpu` and `shard_tied_head` make FSDP2 run
on CPU processes as on GPUs; `export_model` gathers the trained weights of a sharded run.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import DistributedType, GradientAccumulationPlugin, InitProcessGroupKwargs, ProjectConfiguration

from minibert.cli import UserError
from minibert.runs import has_accelerator, usable_cores

from .args import PretrainingArguments

SHARDED = (DistributedType.FSDP, DistributedType.DEEPSPEED)


def make_accelerator(args: PretrainingArguments, timeout: timedelta | None = None) -> Accelerator:
    """`timeout`: the process group's (every collective's, and the barrier the data preparation waits in)."""
    # `accelerate launch --multi_gpu --num_processes N` on a machine without GPUs starts N processes, but
    # accelerate 1.x only forms a (gloo) process group when told to use the CPU; otherwise each process would
    # silently train alone on the whole data, all writing the same output_dir. An FSDP launch needs the group
    # even for one process (`_fsdp_on_cpu`).
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    fsdp, deepspeed = _launched_with("FSDP"), _launched_with("DEEPSPEED")
    if deepspeed and not has_accelerator():
        raise UserError(
            "the DeepSpeed config needs GPUs and this machine has none (accelerate would silently run plain DDP "
            "instead); on CPU processes use pretrain/accelerate_configs/fsdp.yaml, which shards there too"
        )
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = usable_cores()
    if local_processes > cores and not has_accelerator():
        # A GPU launch config (e.g. multi_gpu_8.yaml) on a machine without GPUs: N CPU processes on fewer cores end
        # minutes later in collective timeouts and hundreds of lines of tracebacks. Say so at the start instead,
        # once per machine (the other processes leave with the same status, silently).
        if int(os.environ.get("LOCAL_RANK", "0")) != 0:
            raise SystemExit(2)
        raise UserError(
            f"this launch starts {local_processes} processes on this machine, which has no GPU and {cores} CPU "
            f"core(s): the launch config asks for GPUs. Without GPUs use at most one process per core, e.g. "
            f"accelerate launch --config_file pretrain/accelerate_configs/cpu_2proc.yaml"
        )
    cpu = (world_size > 1 or fsdp) and not has_accelerator()
    fsdp_plugin = _cpu_fsdp_plugin() if fsdp and cpu else None
    try:
        accelerator = Accelerator(
            cpu=cpu,
            mixed_precision=args.mixed_precision,
            # Windows of exactly `gradient_accumulation_steps` micro-batches (see `_train_epoch`), so the
            # accumulation boundary never depends on where a dataloader happens to end.
            gradient_accumulation_plugin=GradientAccumulationPlugin(
                num_steps=args.gradient_accumulation_steps, sync_with_dataloader=False
            ),
            # Same shuffling on every process, reseeded per epoch: the order is a function of (seed, epoch).
            # non_blocking: host-to-GPU copies from pinned memory overlap with compute.
            dataloader_config=DataLoaderConfiguration(
                use_seedable_sampler=True, data_seed=args.seed, dispatch_batches=False, non_blocking=True
            ),
            log_with=args.report_to if args.with_tracking else None,  # accelerate reads "all" itself
            kwargs_handlers=[InitProcessGroupKwargs(timeout=timeout)] if timeout else None,
            project_config=ProjectConfiguration(
                project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "runs")
            ),
        )
    except (ValueError, NotImplementedError) as e:  # e.g. fp16 without a GPU
        raise UserError(f"cannot set up accelerate: {e}") from None
    if accelerator.num_processes != world_size:
        raise UserError(
            f"launched as {world_size} processes, but accelerate formed a group of {accelerator.num_processes}"
        )
    if fsdp_plugin is not None:
        _fsdp_on_cpu(accelerator, fsdp_plugin)
    elif fsdp and accelerator.distributed_type != DistributedType.FSDP:
        raise UserError(f"the launch asked for FSDP but accelerate set up {accelerator.distributed_type.value}")
    return accelerator


def _launched_with(kind: str) -> bool:
    """Whether `accelerate launch` was given an FSDP / DEEPSPEED config (it says so in the environment)."""
    return os.environ.get(f"ACCELERATE_USE_{kind}", "false").lower() == "true"


def _cpu_fsdp_plugin():
    """The FSDP plugin of the launch (its FSDP_* variables), if minibert can run it on CPU processes; else refuse."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise UserError(f"fsdp_version {plugin.fsdp_version} needs GPUs; on CPU processes use fsdp_version: 2 (FSDP2)")
    if plugin.cpu_ram_efficient_loading:
        raise UserError("fsdp_cpu_ram_efficient_loading is not supported by minibert-pretrain: set it to false")
    return plugin


def _fsdp_on_cpu(accelerator: Accelerator, plugin) -> None:
    """Turn the gloo group of CPU processes into the FSDP2 run the launch asked for, or refuse.

    accelerate 1.16 applies its FSDP plugin only on GPU-like devices (AcceleratorState keeps MULTI_CPU), so a CPU
    launch of fsdp.yaml would run DDP, silently. FSDP2 itself shards over gloo: give the state what AcceleratorState
    gives a GPU run (the plugin with its mixed precision, the distributed type); `prepare`, `save_state`,
    `load_state`, `get_state_dict` and `clip_grad_norm_` then take accelerate's FSDP2 path unchanged, the one a GPU
    run takes.
    """
    from accelerate.state import PartialState

    if accelerator.distributed_type != DistributedType.MULTI_CPU:
        raise UserError(
            f"the launch asked for FSDP but accelerate set up {accelerator.distributed_type.value} (no process group): "
            "start the run with `accelerate launch --config_file .../fsdp.yaml -m pretrain ...`"
        )
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # private: tests/test_accelerate_contract.py


def shard_tied_head(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Under FSDP2, shard the MLM head and the word embeddings as one unit, before `accelerator.prepare`.

    BERT ties two parameters to the output layer (cls.predictions.decoder): its weight is the word embeddings',
    its bias is cls.predictions.bias. accelerate puts the input and output embeddings in one unit but leaves
    cls.predictions (owner of the bias) to the root unit, and torch >= 2.13 refuses a parameter seen by two units.
    So every module owning a tied parameter is sharded here, in one unit (with accelerate's settings); the decoder,
    whose parameters that unit holds, is marked as sharded (a unit of its own with no parameters) so that
    accelerate's carving skips it. The same on GPUs and CPUs.
    """
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    tied = {id(p) for p in model.get_output_embeddings().parameters()}
    owners = []  # word_embeddings, cls.predictions, cls.predictions.decoder
    for _, module in model.named_modules(remove_duplicate=False):
        if module not in owners and any(id(p) in tied for p in module.parameters(recurse=False)):
            owners.append(module)
    roots = [m for m in owners if not any(m is not o and any(m is s for s in o.modules()) for o in owners)]
    plugin = accelerator.state.fsdp_plugin
    mesh = getattr(accelerator, "torch_device_mesh", None)
    fully_shard(
        roots,
        reshard_after_forward=False,  # as accelerate's unit of the embeddings: used at the start and the end
        mp_policy=plugin.mixed_precision_policy or MixedPrecisionPolicy(),
        offload_policy=plugin.cpu_offload,
        mesh=mesh[tuple(accelerator.parallelism_config.fsdp_dim_names)] if mesh is not None else None,
    )
    for module in owners:
        if not isinstance(module, FSDPModule):
            fully_shard(module, ignored_params=set(module.parameters()))


def check_checkpoint_layout(path: str, accelerator) -> None:
    """Resume under the mode that wrote the checkpoint: FSDP's sharded weights are not the whole-model files of DDP."""
    by_fsdp = any(name.startswith("pytorch_model_fsdp") for name in os.listdir(path))
    fsdp = accelerator.distributed_type == DistributedType.FSDP
    if by_fsdp != fsdp:
        written = "an FSDP run (pytorch_model_fsdp_0)" if by_fsdp else "a run without FSDP (model.safetensors)"
        raise UserError(
            f"{path} was written by {written} and this run is {'' if fsdp else 'not '}FSDP: resume it with the "
            "accelerate config that wrote it"
        )


def is_sharded(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type in SHARDED


def export_model(accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module | None:
    """A plain model holding the trained weights (a collective under FSDP / DeepSpeed; None off the main process)."""
    if not is_sharded(accelerator):
        return accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model)  # gathered on the main process
    unwrapped = accelerator.unwrap_model(model)
    if not accelerator.is_main_process:
        return None
    fresh = type(unwrapped)(unwrapped.config)
    fresh.load_state_dict(state_dict)
    return fresh
