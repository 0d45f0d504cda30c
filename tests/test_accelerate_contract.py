"""The two private accelerate switches minibert relies on, checked against the installed accelerate, so that an
accelerate release that changes them fails here instead of training wrongly (pyproject keeps accelerate < 2).

1. `GradientState._set_sync_gradients` (pretrain/loop.py): a step's micro-batch count varies under batch-size
   warmup, which accelerate's fixed-length `accumulate()` cannot express; the loop says which micro-batch syncs,
   and accelerate's optimizer wrapper steps only when it does.
2. `PartialState._shared_state["distributed_type"]` (pretrain/distributed.py): FSDP on CPU processes, which
   accelerate 1.x only sets up for GPUs.
"""

from accelerate import Accelerator
from accelerate.state import GradientState, PartialState


def test_set_sync_gradients_decides_whether_the_wrapped_optimizer_steps():
    import torch

    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2)
    model = torch.nn.Linear(2, 1)
    optimizer = accelerator.prepare(torch.optim.SGD(model.parameters(), lr=1.0))
    before = model.weight.detach().clone()
    model(torch.ones(1, 2)).sum().backward()
    accelerator.gradient_state._set_sync_gradients(False)
    assert not GradientState().sync_gradients
    optimizer.step()
    assert torch.equal(model.weight, before)  # not a syncing micro-batch: no update
    accelerator.gradient_state._set_sync_gradients(True)
    assert GradientState().sync_gradients
    optimizer.step()
    assert not torch.equal(model.weight, before)


def test_the_shared_state_holds_the_distributed_type():
    Accelerator(cpu=True)
    assert "distributed_type" in PartialState._shared_state
