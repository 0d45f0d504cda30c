"""The fast path, pinned on the code the CLI runs: `PretrainingLoop.train_step` as `pretrain()` builds it.

A refactor once dropped the sparse MLM head from the loop while a benchmark that called the model by hand kept
reporting the speed-up. These tests build the loop through `pretrain()` itself (the same set-up as
`minibert-pretrain`), take its real batches from its real collator, and check what its step does: which head
shape, which layout, and how many times it reads the device from the host.
"""

from __future__ import annotations

import pytest
import torch
from conftest import args_for, topics_corpus
from torch.utils._python_dispatch import TorchDispatchMode

import minibert.modeling_minibert as modeling
from pretrain.loop import PretrainingLoop

aten = torch.ops.aten


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return topics_corpus(tmp_path_factory, "fast_path", n_docs=60)


def built_loop(corpus, cache, output_dir, monkeypatch, *extra) -> PretrainingLoop:
    """The loop `pretrain()` builds for a tiny run, captured at its first step instead of training."""
    from pretrain.__main__ import parse
    from pretrain.train import run

    captured = {}

    def capture(self, stop):
        captured["loop"] = self

    monkeypatch.setattr(PretrainingLoop, "train", capture)
    monkeypatch.setattr(PretrainingLoop, "save", lambda self: None)
    monkeypatch.setattr("pretrain.train.write_outputs", lambda *a, **k: None)
    monkeypatch.setattr(PretrainingLoop, "run_evaluation", lambda self, max_batches=None: {})
    run(*parse(args_for(corpus, cache, output_dir, *extra)))
    return captured["loop"]


def first_window(loop: PretrainingLoop) -> list[dict]:
    batches = iter(loop._begin_epoch())
    return [next(batches) for _ in range(loop.window_size())]


class Shapes:
    """Records the input of the MLM decoder and the layout the encoder was given, for every forward."""

    def __init__(self, monkeypatch):
        self.head_inputs: list[tuple[int, ...]] = []
        self.token_indices: list[bool] = []
        self.attention_groups: list[bool] = []
        head_forward, model_forward = modeling.MiniBertLMPredictionHead.forward, modeling.MiniBertModel.forward

        def head(module, hidden):
            self.head_inputs.append(tuple(hidden.shape))
            return head_forward(module, hidden)

        def model(module, *args, **kwargs):
            self.token_indices.append(kwargs.get("token_indices") is not None)
            self.attention_groups.append(kwargs.get("attention_groups") is not None)
            return model_forward(module, *args, **kwargs)

        monkeypatch.setattr(modeling.MiniBertLMPredictionHead, "forward", head)
        monkeypatch.setattr(modeling.MiniBertModel, "forward", model)


@pytest.mark.parametrize("objective", ["mlm+nsp", "mlm"])
def test_the_loops_step_runs_the_mlm_head_on_masked_positions_only(objective, corpus, cache, tmp_path, monkeypatch):
    extra = [] if objective == "mlm+nsp" else ["--next_sentence_prediction", "false"]
    loop = built_loop(corpus, cache, tmp_path / "out", monkeypatch, *extra)
    assert loop.plan.objective == objective and loop.plan.sparse_head and loop.plan.unpadded
    window = first_window(loop)
    batch = window[0]
    assert "token_indices" in batch and "masked_positions" in batch  # the collator's unpadded layout
    shapes = Shapes(monkeypatch)
    loop.train_step(window, signalled=False, clock_s=0.0)

    b, s = batch["input_ids"].shape
    masked = int((batch["labels"] != -100).sum())
    (head_input,) = shapes.head_inputs  # one micro-batch, one head call
    assert head_input[0] == batch["masked_positions"].numel()  # (M, H): the masked positions (bucketed), ...
    assert masked <= head_input[0] < b * s  # ... not every position of the (B, S) batch
    assert shapes.token_indices == [True]  # the encoder ran on the real tokens only
    assert loop.plan.grouped_attention and "attention_groups" in batch  # a CPU run without --torch_compile ...
    assert shapes.attention_groups == [True]  # ... attends per group of similar lengths


def test_the_plan_groups_attention_on_a_cpu_in_eager_mode_only():
    from types import SimpleNamespace

    from pretrain.args import RunPlan

    data = SimpleNamespace(next_sentence_prediction=True, streaming=False)
    eager, compiled = SimpleNamespace(torch_compile=False), SimpleNamespace(torch_compile=True)
    assert RunPlan.decide(data, eager, torch.device("cpu")).grouped_attention
    assert not RunPlan.decide(data, compiled, torch.device("cpu")).grouped_attention  # fixed shapes to compile
    assert not RunPlan.decide(data, eager, torch.device("cuda")).grouped_attention  # one padded sdpa kernel


def test_a_saved_checkpoint_gives_fill_mask_and_trainer_the_dense_logits(corpus, cache, tmp_path):
    """The sparse head is the run's choice, not the model's: the exported config keeps sparse_prediction False."""
    from conftest import records, run
    from transformers import AutoModelForMaskedLM

    out = tmp_path / "out"
    run(args_for(corpus, cache, out, max_train_steps=2, logging_steps=1))
    for record in records(out):  # what the user sees while training: real tokens/s and model TFLOP/s
        assert record["tokens_per_second"] > 0 and record["model_tflops_per_device"] > 0
        assert "mfu" not in record  # no GPU, no peak to compare with
    model = AutoModelForMaskedLM.from_pretrained(out)
    assert model.config.sparse_prediction is False
    ids = torch.tensor([[2, 10, 4, 11, 3]])
    labels = torch.full_like(ids, -100)
    labels[0, 2] = 10
    logits = model(input_ids=ids, labels=labels).logits
    assert logits.shape == (1, 5, model.config.vocab_size)  # (B, S, vocab), as BERT's


class HostReads(TorchDispatchMode):
    """Counts the operations that make the host wait for the device: scalar reads (`.item()`, `float()`,
    `bool()`), copies to the CPU (`.cpu()`, `.tolist()` of a device tensor), and ops whose output size depends on
    the data (`nonzero`, boolean masks, `masked_select`, `unique`). On a CPU run nothing waits; what is counted is
    what would wait on a GPU. The optimizer's step counters live on the host in a GPU run too (torch keeps them on
    the CPU unless fused or capturable), so reads of them are not counted."""

    DATA_DEPENDENT = {
        aten.nonzero.default,
        aten.masked_select.default,
        aten._unique2.default,
        aten.unique_dim.default,
        aten.unique_consecutive.default,
        aten.repeat_interleave.Tensor,
    }

    INDEXING = {aten.index.Tensor, aten.index_put_.default, aten.index_put.default}

    def __init__(self, host_tensors=()):
        super().__init__()
        self.host = {id(t) for t in host_tensors}
        self.reads: list[str] = []

    # A CPU tensor's `.tolist()` / `.numpy()` read its memory without dispatching an op: counted by hand.
    def __enter__(self):
        self._saved = torch.Tensor.tolist, torch.Tensor.numpy
        tolist, numpy = self._saved

        def counted(name, method):
            def read(tensor, *args, **kwargs):
                if id(tensor) not in self.host and tensor.device.type == "cpu" and not self._copied(tensor):
                    self.reads.append(name)
                return method(tensor, *args, **kwargs)

            return read

        torch.Tensor.tolist, torch.Tensor.numpy = counted("tolist", tolist), counted("numpy", numpy)
        self._copies: list = []
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist, torch.Tensor.numpy = self._saved
        return super().__exit__(*exc)

    def _copied(self, tensor) -> bool:
        """A tensor just copied to the host (counted as that copy): reading it is the same read."""
        return any(tensor is c for c in self._copies)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default and id(args[0]) not in self.host:
            self.reads.append("item")
        elif func is aten._to_copy.default and kwargs.get("device") is not None:
            if torch.device(kwargs["device"]).type == "cpu":
                self.reads.append("copy to host")
                out = func(*args, **kwargs)
                self._copies.append(out)
                return out
        elif func in self.DATA_DEPENDENT:
            self.reads.append(str(func))
        elif func in self.INDEXING and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]):
            self.reads.append("boolean index")
        return func(*args, **kwargs)


def optimizer_step_counters(optimizer) -> list[torch.Tensor]:
    return [s["step"] for s in optimizer.state.values() if torch.is_tensor(s.get("step"))]


@pytest.mark.parametrize("objective", ["mlm+nsp", "mlm"])
def test_one_host_read_per_optimizer_step(objective, corpus, cache, tmp_path, monkeypatch):
    extra = ["--gradient_accumulation_steps", "2"]
    if objective == "mlm":
        extra += ["--next_sentence_prediction", "false"]
    loop = built_loop(corpus, cache, tmp_path / "out", monkeypatch, *extra)
    batches = iter(loop._begin_epoch())
    loop.train_step([next(batches), next(batches)], signalled=False, clock_s=0.0)  # creates the optimizer's state
    for _ in range(2):
        window = [next(batches), next(batches)]
        with HostReads(optimizer_step_counters(loop.optimizer)) as mode:
            skipped, stop = loop.train_step(window, signalled=False, clock_s=1.0)
        assert not skipped and stop is None
        assert mode.reads == ["copy to host"], mode.reads  # the step's one read: is the gradient finite?


def test_the_counter_sees_what_a_careless_step_would_do():
    """The oracle's own check: a `.item()`, a boolean mask, a `nonzero` and a `.tolist()` are each counted."""
    x = torch.arange(6.0)
    with HostReads() as mode:
        x.sum().item()
        x[x > 2].sum()
        (x > 2).nonzero()
        x.to("cpu", copy=True).tolist()
        x.sum().tolist()
    assert mode.reads == ["item", "boolean index", str(aten.nonzero.default), "copy to host", "tolist"]


def test_a_step_that_signals_or_runs_out_of_time_still_reads_once(corpus, cache, tmp_path, monkeypatch):
    loop = built_loop(corpus, cache, tmp_path / "out", monkeypatch, "--time_budget", "1")
    batches = iter(loop._begin_epoch())
    loop.train_step([next(batches)], signalled=False, clock_s=0.0)
    with HostReads(optimizer_step_counters(loop.optimizer)) as mode:
        skipped, stop = loop.train_step([next(batches)], signalled=True, clock_s=61.0)
    assert stop == "signal" and not skipped
    assert mode.reads == ["copy to host"]


@pytest.mark.gpu
def test_on_a_gpu_the_loops_step_synchronises_once(corpus, cache, tmp_path, monkeypatch):
    """The loop's own step on CUDA (bf16 autocast, fused AdamW, batches moved by the prepared dataloader), under
    torch's sync debug mode: the one synchronisation is the step's host read."""
    import warnings

    loop = built_loop(corpus, cache, tmp_path / "out", monkeypatch, "--mixed_precision", "bf16")
    assert loop.accelerator.device.type == "cuda"
    batches = iter(loop._begin_epoch())
    loop.train_step([next(batches)], signalled=False, clock_s=0.0)  # the optimizer's state is made
    for _ in range(2):
        window = [next(batches)]
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                skipped, _ = loop.train_step(window, signalled=False, clock_s=1.0)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
        assert not skipped
        assert len(syncs) == 1, syncs
