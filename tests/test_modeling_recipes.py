"""The architecture knobs beyond BERT (pre-LN, gated feed-forward, no biases): each does what it says, checked
against a forward written out here from the model's own weights; BERT's defaults stay exactly BERT (test_modeling)."""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, assert_close, make_batch, run_without_minibert

from minibert import MiniBertConfig
from minibert.cli import UserError
from minibert.convert import minibert_to_bert
from minibert.modeling_minibert import MiniBertForPreTraining, MiniBertModel

KNOBS = [
    dict(pre_layer_norm=True),
    dict(gated_feed_forward=True),
    dict(gated_feed_forward=True, hidden_act="silu"),
    dict(attention_bias=False, mlp_bias=False),
    dict(pre_layer_norm=True, gated_feed_forward=True, attention_bias=False, mlp_bias=False),
]


def model_with(**knobs):
    torch.manual_seed(0)
    model = MiniBertModel(MiniBertConfig(**TINY, **knobs)).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a misplaced one shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def written_out(model: MiniBertModel, input_ids, attention_mask) -> torch.Tensor:
    """The encoder's last hidden state, computed from its weights with plain tensor operations."""
    c = model.config
    e = model.embeddings
    x = (
        e.word_embeddings.weight[input_ids]
        + e.position_embeddings.weight[: input_ids.size(1)]
        + e.token_type_embeddings.weight[0]
    )
    x = F.layer_norm(x, (c.hidden_size,), e.LayerNorm.weight, e.LayerNorm.bias, c.layer_norm_eps)
    B, S, H = x.shape
    nh, d = c.num_attention_heads, H // c.num_attention_heads
    act = {"gelu": F.gelu, "silu": F.silu}[c.hidden_act]
    bias_of = lambda linear: linear.bias  # noqa: E731  (None without biases)
    ln = lambda t, m: F.layer_norm(t, (H,), m.weight, m.bias, c.layer_norm_eps)  # noqa: E731
    additive = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    for layer in model.encoder.layer:
        a, out = layer.attention, layer.output
        h_in = ln(x, a.output.LayerNorm) if c.pre_layer_norm else x
        q, k, v = (
            F.linear(h_in, m.weight, bias_of(m)).view(B, S, nh, d).transpose(1, 2)
            for m in (a.self.query, a.self.key, a.self.value)
        )
        ctx = ((q @ k.transpose(-1, -2)) / d**0.5 + additive).softmax(-1) @ v
        y = x + F.linear(ctx.transpose(1, 2).reshape(B, S, H), a.output.dense.weight, bias_of(a.output.dense))
        x = y if c.pre_layer_norm else ln(y, a.output.LayerNorm)
        f_in = ln(x, out.LayerNorm) if c.pre_layer_norm else x
        inner = F.linear(f_in, layer.intermediate.dense.weight, bias_of(layer.intermediate.dense))
        if c.gated_feed_forward:
            gate, up = inner.chunk(2, dim=-1)
            inner = act(gate) * up
        else:
            inner = act(inner)
        y = x + F.linear(inner, out.dense.weight, bias_of(out.dense))
        x = y if c.pre_layer_norm else ln(y, out.LayerNorm)
    if c.pre_layer_norm:
        x = ln(x, model.encoder.LayerNorm)
    return x


@pytest.mark.parametrize("knobs", KNOBS + [{}], ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "bert")
def test_each_knob_computes_what_it_says(knobs):
    model = model_with(**knobs)
    batch = make_batch()
    with torch.no_grad():
        actual = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        expected = written_out(model, batch["input_ids"], batch["attention_mask"])
    real = batch["attention_mask"].bool()
    assert_close(actual[real], expected[real])


def test_knobs_change_the_parameters_as_they_say():
    bert = dict(MiniBertModel(MiniBertConfig(**TINY)).named_parameters())
    pre = dict(MiniBertModel(MiniBertConfig(**TINY, pre_layer_norm=True)).named_parameters())
    assert set(pre) - set(bert) == {"encoder.LayerNorm.weight", "encoder.LayerNorm.bias"}  # the final norm
    gated = MiniBertModel(MiniBertConfig(**TINY, gated_feed_forward=True))
    assert gated.encoder.layer[0].intermediate.dense.out_features == 2 * TINY["intermediate_size"]  # gate + up
    no_bias = dict(MiniBertModel(MiniBertConfig(**TINY, attention_bias=False, mlp_bias=False)).named_parameters())
    linear_biases = [n for n in no_bias if n.endswith("bias") and ".layer." in n and "LayerNorm" not in n]
    assert not linear_biases
    assert len(bert) - len(no_bias) == 6 * TINY["num_hidden_layers"]  # q, k, v, attention out, intermediate, output


def test_knobs_are_validated_and_saved(tmp_path):
    with pytest.raises(ValueError, match="pre_layer_norm"):
        MiniBertConfig(pre_layer_norm="yes")
    config = MiniBertConfig(**TINY, **KNOBS[-1])
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert {k: saved[k] for k in KNOBS[-1]} == KNOBS[-1]
    assert MiniBertConfig.from_pretrained(tmp_path).non_bert_choices() == KNOBS[-1]


def test_a_non_bert_architecture_has_no_native_twin():
    model = MiniBertForPreTraining(MiniBertConfig(**TINY, pre_layer_norm=True))
    with pytest.raises(UserError, match="pre_layer_norm=True"):
        minibert_to_bert(model)


def test_a_checkpoint_with_every_knob_loads_as_remote_code_without_minibert(tmp_path):
    model = model_with(**KNOBS[-1])
    model.save_pretrained(tmp_path / "ckpt")
    ids = torch.randint(5, TINY["vocab_size"], (2, 9), generator=torch.Generator().manual_seed(1))
    script = (
        "import json, sys, torch\n"
        "sys.modules['minibert'] = None\n"
        "from transformers import AutoModel\n"
        "m = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()\n"
        "ids = torch.tensor(json.loads(sys.argv[2]))\n"
        "with torch.no_grad():\n"
        "    print(json.dumps([type(m).__module__, m(input_ids=ids).last_hidden_state.tolist()]))\n"
    )
    module, hidden = run_without_minibert(["-c", script, tmp_path / "ckpt", json.dumps(ids.tolist())], cwd=tmp_path)
    assert module.startswith("transformers_modules")
    with torch.no_grad():
        assert_close(torch.tensor(hidden), model(input_ids=ids).last_hidden_state)
