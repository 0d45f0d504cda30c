"""MiniBERT against an independent oracle: transformers' own BERT classes, with random weights built here.

Every comparison is made on a right-padded batch (rows of different lengths) with segment ids; per-token outputs
are compared at real positions only (MiniBERT writes zeros at padding, BERT writes whatever it computed there).
"""

import pytest
import torch
from conftest import LENGTHS, TINY, assert_close, make_batch, mlm_labels, real
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForNextSentencePrediction,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)

from minibert import MODEL_SIZES, MiniBertConfig
from minibert.convert import bert_to_minibert, minibert_to_bert
from minibert.modeling_minibert import (
    MiniBertForMaskedLM,
    MiniBertForPreTraining,
    MiniBertForSequenceClassification,
    MiniBertForTokenClassification,
    MiniBertModel,
)
from pretrain.collator import GROUP_COST_PAIRS, attention_groups, unpadding_inputs

SEQ = max(LENGTHS)


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------
def bert_config(**overrides) -> BertConfig:
    return BertConfig(**{**TINY, **overrides})


def pair(bert_cls, seed=0, **config):
    """A randomly initialised transformers BERT model of `bert_cls` and its MiniBERT conversion, both in eval mode."""
    torch.manual_seed(seed)
    kwargs = config.pop("model_kwargs", {})
    bert = bert_cls(bert_config(**config), **kwargs).eval()
    with torch.no_grad():  # make LayerNorms, biases and the MLM bias non-trivial, so a dropped weight shows
        for p in bert.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return bert, bert_to_minibert(bert).eval()


# --------------------------------------------------------------------------------------------------------------
# Numerical equivalence with transformers' BERT
# --------------------------------------------------------------------------------------------------------------
def test_base_model_hidden_states_and_pooled_output():
    bert, mini = pair(BertModel)
    batch = make_batch()
    with torch.no_grad():
        expected = bert(**batch, output_hidden_states=True)
        actual = mini(**batch, output_hidden_states=True)
    assert len(actual.hidden_states) == len(expected.hidden_states) == TINY["num_hidden_layers"] + 1
    for i, (a, e) in enumerate(zip(actual.hidden_states, expected.hidden_states)):
        assert_close(real(a, batch), real(e, batch), msg=f"hidden_states[{i}]")
    assert_close(real(actual.last_hidden_state, batch), real(expected.last_hidden_state, batch))
    assert_close(actual.pooler_output, expected.pooler_output)


def unpadded(batch: dict, labels=None, bucket_size: int = 8) -> dict:
    """The collator's fast-path inputs for `batch` (the collator's own function)."""
    labels = labels if labels is not None else torch.full_like(batch["input_ids"], -100)
    return unpadding_inputs(batch["attention_mask"].numpy(), labels.numpy(), bucket_size)


def test_unpadding_inputs_are_bucketed_flat_positions():
    batch = make_batch()
    labels = mlm_labels(batch)
    extra = unpadded(batch, labels, bucket_size=8)
    flat = len(LENGTHS) * SEQ
    for key, chosen in (("token_indices", batch["attention_mask"].bool()), ("masked_positions", labels != -100)):
        positions = extra[key]
        n = int(chosen.sum())
        assert len(positions) % 8 == 0 and n <= len(positions) < n + 8, key
        assert torch.equal(positions[:n], chosen.flatten().nonzero().squeeze(1)), key
        assert (positions[n:] == flat).all(), key


@pytest.mark.parametrize("bucket_size", [1, 8, 64])
def test_unpadded_path_equals_padded_path(bucket_size):
    bert, mini = pair(BertModel)
    batch = make_batch()
    with torch.no_grad():
        padded = mini(**batch, output_hidden_states=True)
        packed = mini(**batch, **unpadded(batch, bucket_size=bucket_size), output_hidden_states=True)
        expected = bert(**batch)
    assert_close(real(packed.last_hidden_state, batch), real(expected.last_hidden_state, batch))
    assert_close(packed.pooler_output, padded.pooler_output)
    assert not packed.last_hidden_state[~batch["attention_mask"].bool()].any()  # zeros at padding, never garbage
    n = int(batch["attention_mask"].sum())
    for a, e in zip(packed.hidden_states, padded.hidden_states, strict=True):
        assert a.shape[0] % bucket_size == 0 and a.dim() == 2  # packed (T, H): what the layers consumed
        assert_close(a[:n], real(e, batch))


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("group_cost", [0, GROUP_COST_PAIRS])
def test_grouped_attention_gives_berts_numbers_and_the_padded_paths_gradients(implementation, group_cost):
    """Attention per group of similar lengths (the collator's `attention_groups`): each group padded to its own
    longest row, the rows back in the packed layout. BERT's logits, and the padded path's loss and gradients."""
    bert, mini = pair(BertForPreTraining)
    mini.config._attn_implementation = implementation
    batch = make_batch(lengths=(11, 7, 4, 11, 2, 9))
    labels = mlm_labels(batch)
    extra = unpadded(batch, labels)
    lengths = batch["attention_mask"].sum(1).numpy()
    groups = [torch.from_numpy(g) for g in attention_groups(lengths, len(extra["token_indices"]), group_cost)]
    if group_cost == 0:  # nothing against more groups: one per distinct length
        assert [g.shape[1] for g in groups] == sorted(set(lengths.tolist()))
    results = []
    for grouping in ({}, {"attention_groups": groups}):
        mini.zero_grad()
        out = mini(**batch, labels=labels, **extra, sparse_prediction=True, **grouping)
        out.loss.backward()
        results.append((out, {n: p.grad.clone() for n, p in mini.named_parameters() if p.grad is not None}))
    (padded, padded_grads), (grouped, grouped_grads) = results
    with torch.no_grad():
        expected = bert(**batch)
    m = int((labels != -100).sum())
    assert_close(grouped.prediction_logits[:m], expected.prediction_logits[labels != -100])
    assert_close(grouped.seq_relationship_logits, expected.seq_relationship_logits)
    assert_close(grouped.loss, padded.loss)
    assert padded_grads.keys() == grouped_grads.keys()
    for name, grad in padded_grads.items():
        assert_close(grouped_grads[name], grad, msg=name)


def test_minibert_dropout_is_torch_dropout_in_distribution():
    """`apply_dropout` (its own mask on a CPU): zeros with probability p, the rest scaled by 1 / (1 - p), the same
    mask forward and backward, identity in eval; the modules keep `nn.Dropout`'s interface."""
    from minibert.modeling_minibert import MiniBertDropout, apply_dropout

    torch.manual_seed(0)
    x = torch.randn(200_000, requires_grad=True)
    y = apply_dropout(x, 0.1, training=True)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.1) < 0.003  # 6 standard deviations of a Bernoulli(0.1) mean
    assert_close(y[kept], x[kept] / 0.9)
    y.backward(torch.ones_like(y))
    assert_close(x.grad, kept.float() / 0.9)
    assert apply_dropout(x, 0.1, training=False) is x and apply_dropout(x, 0.0) is x
    module = MiniBertDropout(0.25)
    assert isinstance(module, torch.nn.Dropout) and module.p == 0.25 and module.state_dict() == {}
    assert torch.equal(module.eval()(x), x)


def test_hidden_states_are_the_tensors_the_layers_consume():
    _, mini = pair(BertForSequenceClassification, num_labels=3)
    batch = make_batch()
    out = mini(**batch, output_hidden_states=True)
    for h in out.hidden_states:
        h.retain_grad()
    out.logits.sum().backward()
    assert all(h.grad is not None and h.grad.abs().sum() > 0 for h in out.hidden_states[:-1])
    # Saliency / integrated gradients: gradient of an output with respect to the embeddings.
    out = mini(**batch, output_hidden_states=True)
    (grad,) = torch.autograd.grad(out.logits[:, 0].sum(), out.hidden_states[0])
    assert grad.shape == out.hidden_states[0].shape and grad[batch["attention_mask"].bool()].abs().sum() > 0


def test_hidden_state_selection_as_transformers_does_it():
    _, mini = pair(BertModel)
    batch = make_batch()
    with torch.no_grad():
        every = mini(**batch, output_hidden_states=True).hidden_states
        assert len(every) == TINY["num_hidden_layers"] + 1
        for selection, expected in (([0, 2], [0, 2]), (-1, [2]), ([1, -1], [1, 2]), ([], [])):
            chosen = mini(**batch, output_hidden_states=selection).hidden_states
            assert len(chosen) == len(expected), selection
            for a, i in zip(chosen, expected):
                assert torch.equal(a, every[i]), selection
        assert mini(**batch).hidden_states is None


def test_base_model_without_pooler():
    bert, mini = pair(BertModel, model_kwargs={"add_pooling_layer": False})
    assert mini.pooler is None
    batch = make_batch()
    with torch.no_grad():
        assert_close(real(mini(**batch).last_hidden_state, batch), real(bert(**batch).last_hidden_state, batch))
        assert mini(**batch).pooler_output is None


def test_left_padding_matches_bert():
    bert, mini = pair(BertForTokenClassification, num_labels=5)
    batch = {k: v.flip(1) for k, v in make_batch().items()}  # padding first, as some collators do
    with torch.no_grad():
        expected, actual = bert(**batch), mini(**batch)
    assert_close(real(actual.logits, batch), real(expected.logits, batch))


def test_attentions_match_eager_bert():
    bert, mini = pair(BertModel, attn_implementation="eager")
    batch = make_batch()
    with torch.no_grad():
        expected = bert(**batch, output_attentions=True).attentions
        actual = mini(**batch, output_attentions=True).attentions
    assert len(actual) == len(expected) == TINY["num_hidden_layers"]
    B, nh = len(LENGTHS), TINY["num_attention_heads"]
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.shape == e.shape == (B, nh, SEQ, SEQ)
        for row, n in enumerate(LENGTHS):  # queries at real positions; every key (padded keys get weight 0)
            assert_close(a[row, :, :n], e[row, :, :n], msg=f"layer {i} row {row}")
            assert not a[row, :, :n, n:].any()


def _pretraining_inputs(batch):
    return dict(labels=mlm_labels(batch), next_sentence_label=torch.tensor([0, 1, 1]))


def _seq_label(batch):
    return dict(labels=torch.tensor([2, 0, 1]))


def _multi_label(batch):
    return dict(labels=torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]))


def _regression(batch):
    return dict(labels=torch.tensor([0.5, -1.25, 2.0]))


def _token_labels(batch):
    labels = torch.randint(0, 5, batch["input_ids"].shape, generator=torch.Generator().manual_seed(3))
    return dict(labels=labels.masked_fill(batch["attention_mask"] == 0, -100))


def _qa_positions(batch):
    # The last row's answer lies past its end (clamped and ignored, as in BERT).
    return dict(start_positions=torch.tensor([1, 2, 40]), end_positions=torch.tensor([3, 5, 40]))


def expected_loss(bert, batch, labels, bert_output):
    """BERT's loss for the batch. For QA, whose softmax runs over positions, BERT's padded-batch loss also counts
    the logits BERT computes at padding; MiniBERT keeps padding out (it is never the answer), so the oracle is BERT
    on each example without padding, averaged over the examples whose answer lies inside them."""
    if "start_positions" not in labels:
        return bert_output.loss
    losses = []
    for row, n in enumerate(batch["attention_mask"].sum(1).tolist()):
        start, end = labels["start_positions"][row], labels["end_positions"][row]
        if start < n and end < n:
            alone = {k: v[row : row + 1, :n] for k, v in batch.items()}
            losses.append(bert(**alone, start_positions=start[None], end_positions=end[None]).loss)
    return torch.stack(losses).mean()


HEADS = {
    # id: (BERT class, config overrides, labels for the batch, outputs compared (per-token ones marked True))
    "pretraining": (
        BertForPreTraining,
        {},
        _pretraining_inputs,
        {"prediction_logits": True, "seq_relationship_logits": False},
    ),
    "masked_lm": (BertForMaskedLM, {}, lambda b: dict(labels=mlm_labels(b)), {"logits": True}),
    "nsp": (BertForNextSentencePrediction, {}, lambda b: dict(labels=torch.tensor([1, 0, 1])), {"logits": False}),
    "seq_single_label": (BertForSequenceClassification, {"num_labels": 3}, _seq_label, {"logits": False}),
    "seq_multi_label": (
        BertForSequenceClassification,
        {"num_labels": 3, "problem_type": "multi_label_classification"},
        _multi_label,
        {"logits": False},
    ),
    "seq_regression": (BertForSequenceClassification, {"num_labels": 1}, _regression, {"logits": False}),
    "token_classification": (BertForTokenClassification, {"num_labels": 5}, _token_labels, {"logits": True}),
    "question_answering": (BertForQuestionAnswering, {}, _qa_positions, {"start_logits": True, "end_logits": True}),
}


def head_case(head: str) -> tuple:
    """HEADS[head] built: the BERT model, its MiniBERT conversion, a batch, its labels, the outputs compared."""
    bert_cls, config, make_labels, compared = HEADS[head]
    bert, mini = pair(bert_cls, **config)
    batch = make_batch()
    return bert, mini, batch, make_labels(batch), compared


@pytest.mark.parametrize("head", HEADS)
def test_heads_match_bert(head):
    bert, mini, batch, labels, compared = head_case(head)
    with torch.no_grad():
        expected = bert(**batch, **labels, output_hidden_states=True)
        actual = mini(**batch, **labels, output_hidden_states=True)
    for name, per_token in compared.items():
        a, e = getattr(actual, name), getattr(expected, name)
        assert a.shape == e.shape, name
        assert_close(real(a, batch) if per_token else a, real(e, batch) if per_token else e, msg=name)
    assert actual.loss is not None and actual.loss.ndim == 0
    assert_close(actual.loss, expected_loss(bert, batch, labels, expected), msg="loss")
    for i, (a, e) in enumerate(zip(actual.hidden_states, expected.hidden_states, strict=True)):
        assert_close(real(a, batch), real(e, batch), msg=f"hidden_states[{i}]")
    # And without labels: the same logits, no loss; tuples when return_dict=False.
    with torch.no_grad():
        plain = mini(**batch)
        as_tuple = mini(**batch, return_dict=False)
    assert plain.loss is None
    first = next(iter(compared))
    assert torch.equal(as_tuple[0], getattr(plain, first))


def test_pretraining_loss_parts():
    bert, mini = pair(BertForPreTraining)
    batch = make_batch()
    labels = mlm_labels(batch)
    with torch.no_grad():
        mlm_only = mini(**batch, labels=labels)
        nsp_only = mini(**batch, next_sentence_label=torch.tensor([0, 1, 1]))
        both = mini(**batch, labels=labels, next_sentence_label=torch.tensor([0, 1, 1]))
        expected = bert(**batch, labels=labels, next_sentence_label=torch.tensor([0, 1, 1]))
    assert_close(mlm_only.loss + nsp_only.loss, both.loss)
    assert_close(both.mlm_loss + both.nsp_loss, expected.loss)


@pytest.mark.parametrize("bert_cls", [BertForPreTraining, BertForMaskedLM])
def test_sparse_prediction_equals_dense(bert_cls):
    _, mini = pair(bert_cls)
    batch = make_batch()
    labels = mlm_labels(batch)
    with torch.no_grad():
        dense = mini(**batch, labels=labels)
        sparse = mini(**batch, labels=labels, sparse_prediction=True)
    dense_logits = dense[1]  # prediction_logits / logits
    sparse_logits = sparse[1]
    selected = labels != -100
    assert sparse_logits.shape == (int(selected.sum()), TINY["vocab_size"])
    assert_close(sparse_logits, dense_logits[selected])
    assert_close(sparse.loss, dense.loss)
    # The collator's positions (bucketed, fill rows past the end) and the unpadded path: the same numbers.
    extra = unpadded(batch, labels, bucket_size=8)
    with torch.no_grad():
        fast = mini(**batch, labels=labels, **extra, sparse_prediction=True)
    m = int(selected.sum())
    assert fast[1].shape == (len(extra["masked_positions"]), TINY["vocab_size"])
    assert_close(fast[1][:m], dense_logits[selected])
    assert_close(fast.loss, dense.loss)
    # `config.sparse_prediction` is the default of the forward flag (what Trainer / run_mlm users set).
    mini.config.sparse_prediction = True
    with torch.no_grad():
        assert mini(**batch, labels=labels)[1].shape == sparse_logits.shape
        assert mini(**batch)[0].shape == dense_logits.shape  # no labels: dense, as inference needs
    mini.config.sparse_prediction = False
    # The gradient the optimiser sees is the same as well.
    mini.zero_grad()
    mini(**batch, labels=labels).loss.backward()
    dense_grads = {n: p.grad.clone() for n, p in mini.named_parameters() if p.grad is not None}
    for extra in ({}, unpadded(batch, labels, bucket_size=8)):
        mini.zero_grad()
        mini(**batch, labels=labels, sparse_prediction=True, **extra).loss.backward()
        for n, p in mini.named_parameters():
            if n in dense_grads:
                assert_close(p.grad, dense_grads[n], msg=n)


@pytest.mark.parametrize(
    "head", ["pretraining", "masked_lm", "nsp", "seq_single_label", "token_classification", "question_answering"]
)
def test_round_trip_back_to_bert(head):
    bert_cls, config, make_labels, compared = HEADS[head]
    bert, mini = pair(bert_cls, **config)
    back = minibert_to_bert(mini).eval()
    assert type(back) is bert_cls
    original, returned = bert.state_dict(), back.state_dict()
    assert original.keys() == returned.keys()
    for name, tensor in original.items():
        assert returned[name].dtype == tensor.dtype and torch.equal(returned[name], tensor), name
    batch = make_batch()
    labels = make_labels(batch)
    with torch.no_grad():
        ours, theirs = mini(**batch, **labels), back(**batch, **labels)
    for name, per_token in compared.items():
        a, e = getattr(ours, name), getattr(theirs, name)
        assert_close(real(a, batch) if per_token else a, real(e, batch) if per_token else e, msg=name)
    assert_close(ours.loss, expected_loss(back, batch, labels, theirs))


def test_config_round_trip_keeps_labels():
    config = dict(num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"}, label2id={"neg": 0, "neu": 1, "pos": 2})
    bert, mini = pair(BertForSequenceClassification, **config)
    assert mini.config.id2label == {0: "neg", 1: "neu", 2: "pos"}
    back = minibert_to_bert(mini)
    assert back.config.id2label == bert.config.id2label and back.config.label2id == bert.config.label2id


# --------------------------------------------------------------------------------------------------------------
# Padding, segments, attention implementations
# --------------------------------------------------------------------------------------------------------------
def test_padding_never_changes_real_tokens():
    _, mini = pair(BertForTokenClassification, num_labels=5)
    batch = make_batch(lengths=(9, 9, 9))
    g = torch.Generator().manual_seed(7)
    extra = 6  # appended positions, with random (non-pad) ids and segments, masked out
    padded = {
        "input_ids": torch.cat([batch["input_ids"], torch.randint(5, 99, (3, extra), generator=g)], 1),
        "token_type_ids": torch.cat([batch["token_type_ids"], torch.randint(0, 2, (3, extra), generator=g)], 1),
        "attention_mask": torch.cat([batch["attention_mask"], torch.zeros(3, extra, dtype=torch.long)], 1),
    }
    with torch.no_grad():
        for impl in ("sdpa", "eager"):
            mini.set_attn_implementation(impl)
            assert mini.config._attn_implementation == impl
            short = mini(**batch, output_hidden_states=True)
            long = mini(**padded, output_hidden_states=True)
            assert_close(long.logits[:, :9], short.logits, msg=impl)
            for a, e in zip(long.hidden_states, short.hidden_states):
                assert_close(a[:, :9], e, msg=impl)


def test_qa_loss_ignores_padding():
    _, mini = pair(BertForQuestionAnswering)
    batch = make_batch()
    labels = dict(start_positions=torch.tensor([1, 2, 0]), end_positions=torch.tensor([3, 5, 2]))
    more_padding = {k: torch.cat([v, torch.zeros_like(v)], 1) for k, v in batch.items()}
    more_padding["input_ids"][:, SEQ:] = 17  # whatever sits on padding must not matter
    with torch.no_grad():
        out = mini(**batch, **labels)
        longer = mini(**more_padding, **labels)
        # An answer position on padding lies outside the example: ignored, like one past the end.
        on_padding = mini(**batch, start_positions=torch.tensor([1, 2, 6]), end_positions=torch.tensor([3, 5, 6]))
        past_end = mini(**batch, start_positions=torch.tensor([1, 2, 99]), end_positions=torch.tensor([3, 5, 99]))
    assert_close(longer.loss, out.loss)
    assert torch.isfinite(on_padding.loss) and torch.isfinite(past_end.loss)
    assert_close(on_padding.loss, past_end.loss)
    padded = batch["attention_mask"] == 0
    assert (out.start_logits[padded] == torch.finfo(torch.float32).min).all()  # never predicted as an answer
    assert (out.start_logits.argmax(1) < torch.tensor(LENGTHS)).all()


def test_each_row_alone_equals_the_padded_batch():
    _, mini = pair(BertModel)
    batch = make_batch()
    with torch.no_grad():
        together = mini(**batch)
        for row, n in enumerate(LENGTHS):
            alone = mini(**{k: v[row : row + 1, :n] for k, v in batch.items()})
            assert_close(together.last_hidden_state[row, :n], alone.last_hidden_state[0], msg=f"row {row}")
            assert_close(together.pooler_output[row], alone.pooler_output[0], msg=f"row {row}")
            # No mask at all is the same as an all-ones mask.
            no_mask = mini(
                input_ids=batch["input_ids"][row : row + 1, :n],
                token_type_ids=batch["token_type_ids"][row : row + 1, :n],
            )
            assert_close(no_mask.last_hidden_state, alone.last_hidden_state)


def test_token_type_ids_matter():
    bert, mini = pair(BertModel)
    batch = make_batch()
    with torch.no_grad():
        with_segments = mini(**batch).last_hidden_state
        zeros = mini(**{**batch, "token_type_ids": torch.zeros_like(batch["token_type_ids"])}).last_hidden_state
        omitted = mini(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        expected = bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    assert (real(with_segments, batch) - real(zeros, batch)).abs().max() > 1e-3
    assert_close(omitted, zeros)  # no token_type_ids means all sentence A
    assert_close(real(omitted, batch), real(expected, batch))


def test_inputs_embeds_and_position_ids_match_bert():
    bert, mini = pair(BertModel)
    batch = make_batch()
    embeds = bert.embeddings.word_embeddings(batch["input_ids"]).detach()
    position_ids = torch.arange(SEQ).flip(0)[None].expand(len(LENGTHS), -1)
    rest = {k: batch[k] for k in ("attention_mask", "token_type_ids")}
    with torch.no_grad():
        assert_close(
            real(mini(inputs_embeds=embeds, **rest).last_hidden_state, batch),
            real(bert(inputs_embeds=embeds, **rest).last_hidden_state, batch),
        )
        assert_close(
            real(mini(**batch, position_ids=position_ids).last_hidden_state, batch),
            real(bert(**batch, position_ids=position_ids).last_hidden_state, batch),
        )
    with pytest.raises(ValueError, match="exactly one"):
        mini(input_ids=batch["input_ids"], inputs_embeds=embeds)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        mini(input_ids=torch.ones(1, TINY["max_position_embeddings"] + 1, dtype=torch.long))


def test_eager_and_sdpa_agree(tmp_path):
    _, mini = pair(BertForPreTraining)
    mini.save_pretrained(tmp_path)
    batch = make_batch()
    labels = _pretraining_inputs(batch)
    outputs = {}
    for impl in ("eager", "sdpa"):
        model = MiniBertForPreTraining.from_pretrained(tmp_path, attn_implementation=impl).eval()
        assert model.config._attn_implementation == impl
        with torch.no_grad():
            outputs[impl] = model(**batch, **labels, output_hidden_states=True)
    eager, sdpa = outputs["eager"], outputs["sdpa"]
    assert_close(real(eager.prediction_logits, batch), real(sdpa.prediction_logits, batch))
    assert_close(eager.seq_relationship_logits, sdpa.seq_relationship_logits)
    assert_close(eager.loss, sdpa.loss)
    for a, e in zip(eager.hidden_states, sdpa.hidden_states, strict=True):
        assert_close(real(a, batch), real(e, batch))


def test_gradient_checkpointing_gives_the_same_gradients():
    _, mini = pair(BertForPreTraining, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    mini.train()
    batch = make_batch()
    labels = _pretraining_inputs(batch)

    def grads():
        mini.zero_grad()
        loss = mini(**batch, **labels).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in mini.named_parameters() if p.grad is not None}

    loss, plain = grads()
    getattr(mini, "activation_checkpointing_enable", mini.gradient_checkpointing_enable)()  # renamed in v5.x
    assert all(layer.gradient_checkpointing for layer in mini.bert.encoder.layer)
    calls = []
    original = mini.bert.encoder.layer[0]._gradient_checkpointing_func
    mini.bert.encoder.layer[0]._gradient_checkpointing_func = lambda *a, **k: calls.append(1) or original(*a, **k)
    checkpointed_loss, checkpointed = grads()
    assert calls, "gradient checkpointing was enabled but the layer did not use it"
    assert_close(checkpointed_loss, loss)
    assert plain.keys() == checkpointed.keys()
    assert len(plain) == len(list(mini.parameters()))  # every parameter gets a gradient (tied ones once)
    for name in plain:
        assert_close(checkpointed[name], plain[name], msg=name)


# --------------------------------------------------------------------------------------------------------------
# Lower precision
# --------------------------------------------------------------------------------------------------------------
def _close_in_low_precision(actual, expected, batch=None, tol=0.05):
    actual, expected = actual.float(), expected.float()
    if batch is not None:
        actual, expected = real(actual, batch), real(expected, batch)
    assert torch.isfinite(actual).all()
    scale = expected.abs().max().clamp_min(1.0)
    assert (actual - expected).abs().max() <= tol * scale, (actual - expected).abs().max()


def test_bf16_autocast_on_cpu_is_close_to_fp32():
    _, mini = pair(BertForPreTraining)
    batch = make_batch()
    labels = _pretraining_inputs(batch)
    with torch.no_grad():
        fp32 = mini(**batch, **labels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = mini(**batch, **labels)
            sparse = mini(**batch, **labels, sparse_prediction=True)
    _close_in_low_precision(bf16.prediction_logits, fp32.prediction_logits, batch)
    _close_in_low_precision(bf16.seq_relationship_logits, fp32.seq_relationship_logits)
    assert bf16.loss.dtype == torch.float32  # losses are computed in float32 whatever the compute dtype
    assert abs(bf16.loss.item() - fp32.loss.item()) < 0.05 * fp32.loss.item()
    assert abs(sparse.loss.item() - fp32.loss.item()) < 0.05 * fp32.loss.item()


def test_bf16_weights_on_cpu_are_close_to_fp32():
    _, mini = pair(BertForPreTraining)
    batch = make_batch()
    labels = _pretraining_inputs(batch)
    with torch.no_grad():
        fp32 = mini(**batch, **labels, output_hidden_states=True)
        low = mini.to(torch.bfloat16)
        bf16 = low(**batch, **labels, output_hidden_states=True)
        for impl in ("eager", "sdpa"):
            low.set_attn_implementation(impl)
            assert low(**batch, output_attentions=impl == "eager").prediction_logits.dtype == torch.bfloat16
    assert bf16.prediction_logits.dtype == torch.bfloat16
    for a, e in zip(bf16.hidden_states, fp32.hidden_states):
        _close_in_low_precision(a, e, batch)
    _close_in_low_precision(bf16.prediction_logits, fp32.prediction_logits, batch)
    assert abs(bf16.loss.item() - fp32.loss.item()) < 0.05 * fp32.loss.item()


def test_fp16_forward_on_cpu():
    _, mini = pair(BertForSequenceClassification, num_labels=3)
    batch = make_batch()
    with torch.no_grad():
        fp32 = mini(**batch).logits
        try:
            fp16 = mini.half()(**batch).logits
        except RuntimeError as e:  # kernels this CPU build lacks in half precision
            pytest.skip(f"float16 forward is not supported on this CPU: {e}")
    assert fp16.dtype == torch.float16
    _close_in_low_precision(fp16, fp32, tol=0.01)


@pytest.mark.gpu
def test_gpu_bf16_matches_bert():
    bert, mini = pair(BertForPreTraining)
    bert, mini = bert.to("cuda", torch.bfloat16), mini.to("cuda", torch.bfloat16)
    batch = {k: v.cuda() for k, v in make_batch().items()}
    labels = {k: v.cuda() for k, v in _pretraining_inputs(batch).items()}
    with torch.no_grad():
        expected = bert(**batch, **labels, output_hidden_states=True)
        actual = mini(**batch, **labels, output_hidden_states=True)
        sparse = mini(**batch, **labels, sparse_prediction=True)
    for a, e in zip(actual.hidden_states, expected.hidden_states, strict=True):
        _close_in_low_precision(a, e, batch)
    _close_in_low_precision(actual.prediction_logits, expected.prediction_logits, batch)
    _close_in_low_precision(actual.seq_relationship_logits, expected.seq_relationship_logits)
    assert abs(actual.loss.item() - expected.loss.item()) < 0.05 * expected.loss.item()
    assert abs(sparse.loss.item() - actual.loss.item()) < 0.01 * actual.loss.item()


# --------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value",
    [
        ("hidden_size", 30),  # not divisible by 4 heads
        ("num_attention_heads", 5),
        ("hidden_size", 0),
        ("vocab_size", -1),
        ("num_hidden_layers", 0),
        ("intermediate_size", 0),
        ("max_position_embeddings", 0),
        ("type_vocab_size", 0),
        ("num_attention_heads", 0),
        ("hidden_size", 32.0),
        ("hidden_act", "gelu_tanh_typo"),
        ("hidden_dropout_prob", 1.0),
        ("hidden_dropout_prob", -0.1),
        ("attention_probs_dropout_prob", 1.5),
        ("classifier_dropout", 1.0),
        ("layer_norm_eps", 0.0),
        ("layer_norm_eps", "1e-12"),  # YAML 1.1 reads this as a string
        ("hidden_dropout_prob", "0.1"),
        ("hidden_dropout_prob", None),
        ("initializer_range", -0.02),
        ("pad_token_id", 99),
    ],
)
def test_invalid_config_names_the_field(field, value, tmp_path):
    with pytest.raises(ValueError, match=field):
        MiniBertConfig(**{**TINY, field: value})
    # Also when the bad value arrives as an override of a saved config (set after construction by transformers).
    MiniBertConfig(**TINY).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=field):
        MiniBertConfig.from_pretrained(tmp_path, **{field: value})


def test_valid_config_round_trips_through_dict():
    config = MiniBertConfig(**TINY, hidden_act="relu", classifier_dropout=0.2, pad_token_id=None)
    again = MiniBertConfig.from_dict(config.to_dict())
    for key in (*TINY, "hidden_act", "classifier_dropout", "pad_token_id"):
        assert getattr(again, key) == getattr(config, key), key
    assert MiniBertConfig().hidden_size == BertConfig().hidden_size  # defaults are BERT-base's


@pytest.mark.parametrize(
    "name, layers, hidden, heads, ffn",
    [
        ("tiny", 2, 128, 2, 512),
        ("mini", 4, 256, 4, 1024),
        ("small", 4, 512, 8, 2048),
        ("medium", 8, 512, 8, 2048),
        ("base", 12, 768, 12, 3072),
        ("large", 24, 1024, 16, 4096),
    ],
)
def test_presets(name, layers, hidden, heads, ffn):
    config = MiniBertConfig.from_preset(name, vocab_size=1000)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.intermediate_size) == (
        layers,
        hidden,
        heads,
        ffn,
    )
    assert config.vocab_size == 1000
    assert MODEL_SIZES[name] == (layers, hidden)


def test_preset_overrides_and_unknown_name():
    assert MiniBertConfig.from_preset("mini", num_hidden_layers=1).num_hidden_layers == 1
    with pytest.raises(ValueError, match="gigantic"):
        MiniBertConfig.from_preset("gigantic")
    with pytest.raises(ValueError, match="hidden_act"):
        MiniBertConfig.from_preset("tiny", hidden_act="nope")


def test_minibert_classes_construct_from_a_preset():
    config = MiniBertConfig.from_preset("tiny", vocab_size=99, num_labels=2)
    for cls in (MiniBertModel, MiniBertForMaskedLM, MiniBertForSequenceClassification, MiniBertForTokenClassification):
        model = cls(config).eval()
        with torch.no_grad():
            out = model(input_ids=torch.randint(5, 99, (2, 6)))
        assert torch.isfinite(out[0]).all()


@pytest.mark.parametrize("head", ["pretraining", "masked_lm"])
def test_unpadded_pretraining_heads_match_bert(head):
    bert, mini, batch, labels, compared = head_case(head)
    with torch.no_grad():
        expected = bert(**batch, **labels)
        dense = mini(**batch, **labels, **unpadded(batch, labels["labels"]), sparse_prediction=False)
        sparse = mini(**batch, **labels, **unpadded(batch, labels["labels"]), sparse_prediction=True)
    name = next(iter(compared))
    assert_close(real(getattr(dense, name), batch), real(getattr(expected, name), batch))
    m = int((labels["labels"] != -100).sum())
    assert_close(getattr(sparse, name)[:m], getattr(expected, name)[labels["labels"] != -100])
    assert_close(dense.loss, expected.loss)
    assert_close(sparse.loss, expected.loss)


def _legacy_names(state: dict) -> dict:
    """The inverse of the loader's renaming: weights as minibert 0.1 saved them (fused Q/K/V, short names)."""
    out = {}
    for name, tensor in state.items():
        if ".attention.self.query." in name:
            parts = [state[name.replace(".query.", f".{p}.")] for p in ("query", "key", "value")]
            out[name.replace(".attention.self.query.", ".attention.qkv.")] = torch.cat(parts)
            continue
        if ".attention.self.key." in name or ".attention.self.value." in name:
            continue
        for new, old in (
            (".attention.output.", ".attention."),
            (".intermediate.dense.", ".feed_forward.intermediate."),
            (".output.dense.", ".feed_forward.output."),
            (".output.LayerNorm.", ".feed_forward.LayerNorm."),
        ):
            if new in name:
                name = name.replace(new, old)
                break
        out[name] = tensor
    return out


def test_checkpoints_with_the_old_fused_names_still_load(tmp_path):
    """minibert's loaders (the CLIs' `load_pretrained_minibert`) read a 0.1 checkpoint, and `minibert-convert OLD NEW`
    rewrites it under today's names; the modeling file every checkpoint ships carries no renamer."""
    import inspect

    from safetensors.torch import load_file, save_file

    from minibert import modeling_minibert
    from minibert.convert import convert_checkpoint, load_pretrained_minibert

    _, mini = pair(BertForPreTraining)
    mini.save_pretrained(tmp_path / "old")
    weights = tmp_path / "old" / "model.safetensors"
    legacy = _legacy_names(load_file(weights))
    assert any(".attention.qkv." in k for k in legacy) and not any(".attention.self." in k for k in legacy)
    save_file(legacy, weights, metadata={"format": "pt"})
    loaded = load_pretrained_minibert(MiniBertForPreTraining, str(tmp_path / "old")).eval()
    for name, tensor in mini.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name

    convert_checkpoint(str(tmp_path / "old"), str(tmp_path / "new"))
    assert not any(".attention.qkv." in k for k in load_file(tmp_path / "new" / "model.safetensors"))
    upgraded = MiniBertForPreTraining.from_pretrained(tmp_path / "new")
    for name, tensor in mini.state_dict().items():
        assert torch.equal(upgraded.state_dict()[name], tensor), name
    assert "qkv" not in inspect.getsource(modeling_minibert)


# Published sizes of Google's BERT family with the 30,522-token uncased vocabulary: BERT-base 110M and BERT-large
# 340M (Devlin et al. 2019, table 1 rounds them); tiny / mini / small / medium 4.4M / 11.3M / 29.1M / 41.7M
# (Turc et al. 2019's miniatures as their model cards state them, to about 2%: the cards round with a head).
@pytest.mark.parametrize(
    "name, published",
    [("tiny", 4.4e6), ("mini", 11.3e6), ("small", 29.1e6), ("medium", 41.7e6), ("base", 110e6), ("large", 340e6)],
)
def test_presets_have_the_published_parameter_counts(name, published):
    from transformers import BertConfig, BertModel

    config = MiniBertConfig.from_preset(name, vocab_size=30522)
    shape = {
        k: getattr(config, k)
        for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    }
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        ours, bert = MiniBertModel(config), BertModel(BertConfig(**shape))
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in bert.parameters())  # transformers' BERT of the same shape, exactly
    assert count == pytest.approx(published, rel=0.02)
