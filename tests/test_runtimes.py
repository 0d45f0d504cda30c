"""The runtimes a user hands a model to, run for real: torch.export, ONNX (+ onnxruntime), full-graph compile of a
whole pretraining step, accelerate's disk offload, peft LoRA with BERT's target names.

Each one needs a forward with no data-dependent Python branch and no device-to-host read; transformers' own
`BertModel` passes the same checks, and so must MiniBERT on every head.
"""

import pytest
import torch
from conftest import TINY, assert_close, make_batch, mlm_labels, real
from transformers import BertForSequenceClassification

from minibert import AUTO_CLASSES, MiniBertForPreTraining, MiniBertForSequenceClassification, MiniBertModel
from minibert.convert import bert_to_minibert
from pretrain.collator import unpadding_inputs

HEADS = list(AUTO_CLASSES.values())  # every MiniBERT class


def tiny(cls, **overrides):
    from minibert import MiniBertConfig

    torch.manual_seed(0)
    return cls(MiniBertConfig(**{**TINY, "num_labels": 3, **overrides})).eval()


def inputs_for(cls, batch: dict) -> dict:
    """The batch as `cls` takes it: (B, S), or (B, 2, S) for multiple choice (each row, and it left-padded)."""
    if cls.__name__ != "MiniBertForMultipleChoice":
        return batch
    return {k: torch.stack([v, v.flip(-1)], dim=1) for k, v in batch.items()}


def first_output(out):
    return out[0] if isinstance(out, tuple) else next(iter(out.values()))


# --------------------------------------------------------------------------------------------------------------
# torch.export
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strict", [True, False], ids=["strict", "non_strict"])
@pytest.mark.parametrize("cls", HEADS, ids=lambda c: c.__name__)
def test_torch_export_with_attention_mask(cls, strict):
    model = tiny(cls)
    batch = inputs_for(cls, make_batch())
    exported = torch.export.export(
        model, (batch["input_ids"],), kwargs={k: batch[k] for k in ("attention_mask", "token_type_ids")}, strict=strict
    )
    with torch.no_grad():
        expected = model(**batch)
        # The exported program runs the padded batch it was traced on and another one with other padding.
        for other in (batch, {k: v.flip(-1) for k, v in batch.items()}):
            got = exported.module()(
                other["input_ids"], attention_mask=other["attention_mask"], token_type_ids=other["token_type_ids"]
            )
            want = model(**other)
            assert_close(first_output(got), first_output(want))
    assert first_output(expected).shape == first_output(got).shape


def test_torch_export_of_the_unpadded_training_forward():
    """The fast path too: the collator's indices are ordinary inputs, nothing reads their values."""
    model = tiny(MiniBertForPreTraining)
    batch = make_batch()
    labels = mlm_labels(batch)
    extra = unpadding_inputs(batch["attention_mask"].numpy(), labels.numpy(), 8)
    inputs = {**batch, **extra, "labels": labels, "next_sentence_label": torch.tensor([0, 1, 0])}
    exported = torch.export.export(model, (), kwargs={**inputs, "sparse_prediction": True}, strict=False)
    with torch.no_grad():
        assert_close(exported.module()(**inputs, sparse_prediction=True).loss, model(**inputs).loss)


# --------------------------------------------------------------------------------------------------------------
# ONNX (the default, dynamo-based exporter) + onnxruntime
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [MiniBertModel, MiniBertForSequenceClassification], ids=lambda c: c.__name__)
def test_onnx_export_and_onnxruntime_parity_on_a_padded_batch(cls, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = tiny(cls)
    batch = make_batch()
    names = ("input_ids", "attention_mask", "token_type_ids")
    path = tmp_path / "model.onnx"
    batch_dim, seq_dim = torch.export.Dim("batch", max=64), torch.export.Dim("seq", max=TINY["max_position_embeddings"])
    torch.onnx.export(
        model,
        tuple(batch[k] for k in names),
        str(path),
        input_names=list(names),
        dynamic_shapes={k: {0: batch_dim, 1: seq_dim} for k in names},
        dynamo=True,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(names)  # the mask is an input, not folded away
    # Another batch size, sequence length and padding than the traced one.
    other = make_batch(lengths=(5, 13, 2, 9), seed=3)
    for feed in (batch, other):
        got = session.run(None, {k: feed[k].numpy() for k in names})[0]
        with torch.no_grad():
            want = first_output(model(**feed))
        got = torch.from_numpy(got)
        if want.dim() == 3:
            got, want = real(got, feed), real(want, feed)
        assert_close(got, want, atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------------------------------------------
# torch.compile(fullgraph=True): a whole pretraining step on the collator's inputs
# --------------------------------------------------------------------------------------------------------------
def test_full_graph_compile_of_a_pretraining_step():
    """Forward, backward and the update in one graph. The update is plain SGD written out: torch.optim's `step`
    breaks the graph on purpose (pytorch#104053), whatever the model does."""
    if not hasattr(torch._dynamo.config, "trace_autograd_ops"):
        pytest.skip("this torch cannot trace backward() inside a compiled graph")
    model = tiny(MiniBertForPreTraining, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    reference = tiny(MiniBertForPreTraining, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()

    def step(model, inputs, lr=0.1):
        loss = model(**inputs, sparse_prediction=True).loss
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p.sub_(lr * p.grad)
                p.grad = None
        return loss.detach()

    # fullgraph=True: any graph break is an error, so a forward that read a tensor value on the host fails here.
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    for seed in range(2):  # same bucketed shapes, other values: the graph is reused
        batch = make_batch(lengths=(11, 8, 5), seed=seed)
        labels = mlm_labels(batch, seed=seed)
        inputs = {
            **batch,
            **unpadding_inputs(batch["attention_mask"].numpy(), labels.numpy(), 16),
            "labels": labels,
            "next_sentence_label": torch.tensor([0, 1, seed]),
        }
        with torch._dynamo.config.patch(trace_autograd_ops=True):
            got = compiled(model, inputs)
        assert_close(got, step(reference, inputs), atol=1e-4, rtol=1e-4)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert_close(p, q, atol=1e-4, rtol=1e-4, msg=name)


def test_compiled_model_has_one_graph_and_no_breaks_on_a_padded_batch():
    model = tiny(MiniBertForSequenceClassification)
    batch = make_batch()
    explanation = torch._dynamo.explain(model)(**batch)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons


# --------------------------------------------------------------------------------------------------------------
# accelerate offload
# --------------------------------------------------------------------------------------------------------------
def test_device_map_with_disk_offload(tmp_path):
    pytest.importorskip("accelerate")
    model = tiny(MiniBertForSequenceClassification)
    model.save_pretrained(tmp_path / "ckpt")
    # Embeddings and the first layer on the CPU, the rest on disk: hooks move weights in as each module is called.
    device_map = {
        "bert.embeddings": "cpu",
        "bert.encoder.layer.0": "cpu",
        "bert.encoder.layer.1": "disk",
        "bert.pooler": "disk",
        "classifier": "disk",
    }
    offloaded = MiniBertForSequenceClassification.from_pretrained(
        tmp_path / "ckpt", device_map=device_map, offload_folder=str(tmp_path / "offload")
    ).eval()
    assert any(p.device.type == "meta" for p in offloaded.parameters())  # really offloaded
    batch = make_batch()
    with torch.no_grad():
        assert_close(offloaded(**batch).logits, model(**batch).logits)


def test_cpu_offload_hooks_fire_on_the_embeddings():
    accelerate = pytest.importorskip("accelerate")
    model = tiny(MiniBertModel)
    batch = make_batch()
    with torch.no_grad():
        expected = model(**batch).last_hidden_state
    offloaded = accelerate.cpu_offload(tiny(MiniBertModel), execution_device=torch.device("cpu"))
    with torch.no_grad():
        assert_close(real(offloaded(**batch).last_hidden_state, batch), real(expected, batch))


# --------------------------------------------------------------------------------------------------------------
# peft: BERT's LoRA recipe, unchanged
# --------------------------------------------------------------------------------------------------------------
def test_peft_lora_on_query_and_value_trains_merges_and_reloads(tmp_path):
    peft = pytest.importorskip("peft")
    model = tiny(MiniBertForSequenceClassification)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS")
    lora = peft.get_peft_model(model, config)
    targeted = {n.split(".lora_A")[0] for n, _ in lora.named_parameters() if ".lora_A" in n}
    assert len(targeted) == 2 * TINY["num_hidden_layers"]  # query and value of every layer, and nothing else
    assert all(n.endswith(("attention.self.query", "attention.self.value")) for n in targeted)

    batch, labels = make_batch(), torch.tensor([0, 2, 1])
    optimizer = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=5e-2)
    lora.train()
    first = None
    for _ in range(15):
        loss = lora(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        first = loss.item() if first is None else first
    assert loss.item() < first  # it learns
    lora.eval()
    with torch.no_grad():
        adapted = lora(**batch).logits
    lora.save_pretrained(tmp_path / "adapter")
    merged = lora.merge_and_unload()
    assert type(merged) is MiniBertForSequenceClassification
    with torch.no_grad():
        assert_close(merged(**batch).logits, adapted, atol=1e-5, rtol=1e-4)
    # Reloaded onto a fresh base model, the adapter gives the same outputs.
    reloaded = peft.PeftModel.from_pretrained(tiny(MiniBertForSequenceClassification), tmp_path / "adapter").eval()
    with torch.no_grad():
        assert_close(reloaded(**batch).logits, adapted, atol=1e-5, rtol=1e-4)


def test_bert_state_dicts_address_minibert_unchanged():
    torch.manual_seed(0)
    from transformers import BertConfig

    bert = BertForSequenceClassification(BertConfig(**TINY, num_labels=3)).eval()
    mini = bert_to_minibert(bert)
    missing, unexpected = mini.load_state_dict(bert.state_dict(), strict=False)
    assert not missing and not unexpected
    assert set(mini.state_dict()) == set(bert.state_dict())


# --------------------------------------------------------------------------------------------------------------
# On a GPU: a training step never waits for the host
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_gpu_training_step_has_no_host_syncs():
    """Forward, backward, clipping and AdamW on the collator's inputs under `set_sync_debug_mode("error")`: any
    device-to-host read (`.item()`, `nonzero()`, `bool(tensor)`) raises."""
    model = tiny(MiniBertForPreTraining).cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    batch = make_batch()
    labels = mlm_labels(batch)
    inputs = {
        **batch,
        **unpadding_inputs(batch["attention_mask"].numpy(), labels.numpy(), 16),
        "labels": labels,
        "next_sentence_label": torch.tensor([0, 1, 0]),
    }
    inputs = {k: v.pin_memory().cuda(non_blocking=True) for k, v in inputs.items()}
    for _ in range(2):  # the first step allocates optimizer state, the second is the steady state
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(**inputs, sparse_prediction=True).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(loss).item()


# --------------------------------------------------------------------------------------------------------------
# Attention backends beyond eager / sdpa
# --------------------------------------------------------------------------------------------------------------
def test_a_missing_attention_backend_gets_transformers_own_error(tmp_path):
    tiny(MiniBertModel).save_pretrained(tmp_path)
    with pytest.raises(ImportError, match="FlashAttention2"):  # accepted by the model, refused for the package
        MiniBertModel.from_pretrained(tmp_path, attn_implementation="flash_attention_2")


@pytest.mark.gpu
@pytest.mark.parametrize("implementation", ["flex_attention", "flash_attention_2"])
def test_other_attention_backends_match_sdpa_on_a_gpu(implementation, tmp_path):
    """flex_attention also runs on the CPU (checked by hand: equal to 2e-7), but compiling it there takes minutes.
    Compiled flex attention needs a head dimension of at least 16: 2 heads of 16 here (TINY's 4 of 8 fail)."""
    if implementation == "flash_attention_2":
        pytest.importorskip("flash_attn")
    model = tiny(MiniBertModel, num_attention_heads=2)
    model.save_pretrained(tmp_path)
    batch = {k: v.cuda() for k, v in make_batch().items()}
    other = (
        MiniBertModel.from_pretrained(tmp_path, attn_implementation=implementation, dtype=torch.bfloat16).cuda().eval()
    )
    with torch.no_grad():
        expected = model.cuda().to(torch.bfloat16)(**batch).last_hidden_state.float()
        actual = other(**batch).last_hidden_state.float()
    assert_close(real(actual, batch), real(expected, batch), atol=2e-2, rtol=2e-2)
