"""MiniBERT: the BERT encoder (Devlin et al., 2019), written to be read top to bottom.

    embeddings -> [self-attention -> feed-forward] x L -> pooler -> heads

Module and parameter names are those of transformers' `BertModel` (`attention.self.query`, `intermediate.dense`,
`cls.predictions...`), and so are the numbers (tests compare the two), so BERT tooling (peft targets, state dicts,
conversion) addresses MiniBERT unchanged. Two optional inputs make pretraining faster without changing a result:

1. `token_indices` (the unpadded path): the flat positions of the real tokens of the (batch, seq) batch. Every
   position-wise operation (projections, feed-forward, LayerNorm) then runs on the real tokens only, packed into one
   (tokens, hidden) matrix; attention alone sees the padded layout, unless `attention_groups` split the batch into
   groups of similar lengths, each padded only to its own longest sequence (attention's cost is quadratic in the
   padded length: on ragged batches most of it is padding).
2. `masked_positions` with `config.sparse_prediction`: the MLM head (a hidden x vocab matrix, most of a small
   model's cost) runs only at the masked positions, the only ones the loss reads.

All are computed by the data collator, on the CPU (`pretrain.collator.DataCollatorForPreTraining`). On a CPU in
eager mode dropout draws its own mask (`apply_dropout`: torch's CPU kernel is 2-4x slower). The forward
never branches on tensor values and never reads the device from the host, so `torch.export`, ONNX,
`torch.compile(fullgraph=True)`, CUDA graphs and offload hooks all accept it. Without those inputs it is BERT's
padded (batch, seq) forward, which is what pipelines and exporters see.

This file ships inside every checkpoint as remote code: it imports only torch, transformers and its config (and, on
Python 3.10, torch's own typing_extensions), and runs on transformers 4.48 through 5.x (the compatibility block
below; tests/test_compat.py proves it).
"""

import os
import shutil
from dataclasses import dataclass
from typing import TypedDict

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    NextSentencePredictorOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

from .configuration_minibert import MiniBertConfig

# ---- compatibility: what transformers 4.48-4.5x (and Python 3.10) lacks or spells differently --------------------
try:  # Python >= 3.11
    from typing import Unpack
except ImportError:  # Python 3.10: from typing_extensions, a dependency of torch
    from typing_extensions import Unpack
try:  # 5.x: init helpers that skip the weights `from_pretrained` has just loaded
    from transformers import initialization as init
except ImportError:
    from torch.nn import init
try:  # >= 4.52
    from transformers.modeling_layers import GradientCheckpointingLayer
except ImportError:
    from functools import partial

    class GradientCheckpointingLayer(nn.Module):
        """A layer `gradient_checkpointing_enable()` can switch to recomputing its activations in the backward."""

        gradient_checkpointing = False  # set, with `_gradient_checkpointing_func`, by transformers

        def __call__(self, *args, **kwargs):
            if self.gradient_checkpointing and self.training:
                return self._gradient_checkpointing_func(partial(super().__call__, **kwargs), *args)
            return super().__call__(*args, **kwargs)


def _attention_function(implementation: str):
    """transformers' function for an attention implementation ("eager" is ours: it returns the weights)."""
    if hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface"):  # 5.x: also says clearly when a backend is missing
        return ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
    return eager_attention_forward if implementation == "eager" else ALL_ATTENTION_FUNCTIONS[implementation]


# --------------------------------------------------------------------------------------------------------------
# Dropout
# --------------------------------------------------------------------------------------------------------------
def _draws_own_dropout(x: torch.Tensor) -> bool:
    """Whether `apply_dropout` draws its own mask for `x`: on a CPU, in eager mode (compiled graphs and CUDA have fused
    dropout kernels of their own)."""
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)()
    return x.device.type == "cpu" and not compiling


def apply_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`F.dropout`: each element zeroed with probability p, the others scaled by 1 / (1 - p).

    On a CPU the keep mask is drawn as `uniform >= p` (one float32 draw per element, as `bernoulli_` makes) and
    applied as a multiply: torch's CPU `native_dropout` (its `bernoulli_` and its backward) is 2-4x slower, about a
    tenth of a small model's training step (BENCHMARKS.md). Elsewhere it is `F.dropout`.
    """
    if not training or p == 0.0:
        return x
    if p >= 1.0 or not _draws_own_dropout(x):
        return F.dropout(x, p, training=True)
    scale = torch.rand(x.shape, device=x.device).ge_(p).mul_(1.0 / (1.0 - p))  # (x.shape) 0 or 1 / (1 - p)
    return x * scale.to(x.dtype)


class MiniBertDropout(nn.Dropout):
    """`nn.Dropout` through `apply_dropout` above (the same module, argument and `state_dict`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_dropout(x, self.p, self.training)


# --------------------------------------------------------------------------------------------------------------
# The unpadded layout
# --------------------------------------------------------------------------------------------------------------
def with_scratch_row(x: torch.Tensor, value=0) -> torch.Tensor:
    """(N, ...) -> (N + 1, ...): one row of `value` past the end, which the collator's bucket fill (index N) reads."""
    return torch.cat([x, x.new_full((1, *x.shape[1:]), value)])


@dataclass
class Unpadding:
    """Moves per-token tensors between the padded (B, S, ...) layout and the packed (T, ...) one.

    `indices` (T,) are flat positions in B * S. The collator pads them up to a bucket size with the value B * S,
    which points at one scratch row past the end: then T repeats from batch to batch (compiled graphs are reused)
    and nothing here needs to know how many tokens are real.

    `groups` (optional): the batch's sequences in groups of similar lengths, each an (n, m) tensor of rows of the
    packed layout (n sequences, padded to the group's longest, m tokens, with the value T). Attention then runs per
    group (`gather`, `scatter`): the sizes come from the tensors' shapes, so nothing is read from the device.
    """

    indices: torch.Tensor  # (T,) int64
    batch_size: int
    seq_len: int
    groups: tuple[torch.Tensor, ...] | None = None  # each (n, m) int64

    def __post_init__(self):
        if not self.groups:
            self.groups = None
            return
        rows = self.indices.numel()
        flat = torch.cat([g.reshape(-1) for g in self.groups])  # (C,) every group's slots, group after group
        real = flat < rows
        self.group_masks = [g < rows for g in self.groups]  # (n, m) True at a real token
        # A padding slot reads row 0: finite, and masked out as a key; its query's output is never read back.
        self._gather_rows = torch.where(real, flat, torch.zeros_like(flat))
        # Where each packed row lands among the C slots; the bucket's fill rows (never in a group) read slot 0.
        positions = torch.arange(flat.numel(), device=flat.device)
        inverse = torch.zeros(rows + 1, dtype=flat.dtype, device=flat.device)
        self._scatter_rows = inverse.index_put((flat,), positions)[:rows]  # padding slots all write row `rows`

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, ...) -> (T, ...): the real tokens (the bucket's fill reads the zero scratch row)."""
        flat = x.reshape(self.batch_size * self.seq_len, *x.shape[2:])
        return with_scratch_row(flat).index_select(0, self.indices)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(T, ...) -> (B, S, ...): real tokens back in place, zeros at padding (the scratch row is dropped)."""
        out = x.new_zeros(self.batch_size * self.seq_len + 1, *x.shape[1:]).index_copy(0, self.indices, x)
        return out[:-1].view(self.batch_size, self.seq_len, *x.shape[1:])

    def gather(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(T, ...) -> one (n, m, ...) tensor per group."""
        slots = x.index_select(0, self._gather_rows)
        sizes = [g.numel() for g in self.groups]
        return [part.view(*g.shape, *x.shape[1:]) for part, g in zip(slots.split(sizes), self.groups)]

    def scatter(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """One (n, m, ...) tensor per group -> (T, ...): each real token's row back in the packed layout."""
        slots = torch.cat([part.reshape(-1, *part.shape[2:]) for part in parts])
        return slots.index_select(0, self._scatter_rows)


# --------------------------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------------------------
class MiniBertEmbeddings(nn.Module):
    """token + learned position + segment embeddings, then LayerNorm and dropout."""

    def __init__(self, config: MiniBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = MiniBertDropout(config.hidden_dropout_prob)

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)  # (B, S, H)
        seq_len = inputs_embeds.shape[1]
        if seq_len > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"sequence length {seq_len} exceeds max_position_embeddings "
                f"({self.position_embeddings.num_embeddings}); truncate the input"
            )
        # Module calls, not `.weight[...]` reads: offload hooks (accelerate's device_map, cpu_offload) fire on calls.
        if position_ids is None:
            position_ids = torch.arange(seq_len, device=inputs_embeds.device)[None]  # (1, S), broadcast over B
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(position_ids)  # everything is sentence A
        embeddings = inputs_embeds + self.position_embeddings(position_ids) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(embeddings))


# --------------------------------------------------------------------------------------------------------------
# Multi-head self-attention
# --------------------------------------------------------------------------------------------------------------
def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """softmax(Q K^T * scaling + mask) V, written out; the one implementation that returns the weights.

    query/key/value: (B, nh, S, d); attention_mask: additive (B, 1, 1, S), boolean (True = attend, as sdpa's) or
    None. Returns (B, S, nh, d) and the weights (B, nh, S, S), as every entry of transformers'
    `ALL_ATTENTION_FUNCTIONS` does.
    """
    scores = (query @ key.transpose(-1, -2)) * scaling  # (B, nh, S, S)
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    elif attention_mask is not None:
        scores = scores + attention_mask
    weights = scores.softmax(dim=-1)
    context = apply_dropout(weights, dropout, module.training) @ value  # (B, nh, S, d)
    return context.transpose(1, 2).contiguous(), weights


def attention_implementation(config, output_attentions: bool) -> str:
    """The backend one forward uses: the configured one, or eager when the caller asks to see the weights."""
    implementation = config._attn_implementation or "eager"
    return "eager" if output_attentions else implementation


def attention_mask_for(implementation: str, attention_mask, inputs_embeds, config):
    """The (B, S) padding mask (1 = real token) in the form the attention backend takes. Never reads its values.

    sdpa: boolean (B, 1, 1, S); eager: additive (B, 1, 1, S); flash attention: the 2D mask itself (it unpads);
    anything else (flex attention, hub kernels): transformers' own mask builder.
    """
    if attention_mask is None or attention_mask.dim() == 4:
        return attention_mask  # no padding, or a mask the caller already prepared
    if implementation == "sdpa":
        return attention_mask.bool()[:, None, None, :]
    if implementation == "eager":
        dtype = inputs_embeds.dtype
        return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
    if "flash" in implementation:
        return attention_mask
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config=config, inputs_embeds=inputs_embeds, attention_mask=attention_mask)


class MiniBertSelfAttention(nn.Module):
    """Q, K, V projections, h heads of scaled dot-product attention, heads merged back."""

    is_causal = False  # read by transformers' attention backends

    def __init__(self, config: MiniBertConfig):
        super().__init__()
        self.config = config  # read at call time: `attn_implementation` can change after construction
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        # Three projections, as BERT has (peft's ["query", "value"] targets them); one fused (H, 3H) matmul would
        # save two kernel launches per layer, which BENCHMARKS.md measures as not worth the incompatibility.
        bias = config.attention_bias
        self.query = nn.Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.key = nn.Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.value = nn.Linear(config.hidden_size, config.hidden_size, bias=bias)
        self.dropout = MiniBertDropout(config.attention_probs_dropout_prob)

    def forward(
        self, hidden, attention_mask=None, unpadding: Unpadding | None = None, output_attentions=False, **kwargs
    ):
        """`kwargs` go to the attention backend as they came (transformers' attention interface: e.g. the padding-free
        collators' `cu_seq_lens_q` / `max_length_q`, which flash attention reads)."""
        # hidden: (B, S, H), or (T, H) packed real tokens on the unpadded path
        implementation = attention_implementation(self.config, output_attentions)
        if unpadding is not None and unpadding.groups is not None and implementation in ("sdpa", "eager"):
            return self._grouped(hidden, unpadding, implementation, **kwargs), None
        to_batch = unpadding.pad if unpadding is not None else (lambda x: x)
        q, k, v = (to_batch(proj(hidden)) for proj in (self.query, self.key, self.value))  # each (B, S, H)
        context, weights = self._attend(implementation, q, k, v, attention_mask, **kwargs)  # (B, S, H)
        return (unpadding.unpad(context) if unpadding is not None else context), weights

    def _attend(self, implementation, q, k, v, attention_mask, **kwargs):
        """(B, S, H) projections -> (B, S, H) context and the weights, through the attention backend."""
        B, S, _ = q.shape
        q, k, v = (x.view(B, S, self.num_heads, self.head_dim).transpose(1, 2) for x in (q, k, v))  # (B, nh, S, d)
        dropout = self.dropout.p if self.training else 0.0
        if implementation == "sdpa" and dropout > 0.0 and _draws_own_dropout(q):
            # With dropout, torch's CPU sdpa falls back to this very math (scores, softmax, dropout, product) with
            # its slow `bernoulli_` mask: the eager function computes the same with `apply_dropout`'s mask.
            implementation = "eager"
        context, weights = _attention_function(implementation)(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=dropout,
            scaling=self.scaling,
            **kwargs,
        )  # context (B, S, nh, d)
        return context.reshape(B, S, self.num_heads * self.head_dim), weights  # heads merged

    def _grouped(self, hidden, unpadding: Unpadding, implementation: str, **kwargs) -> torch.Tensor:
        """(T, H) -> (T, H): attention per group of similar lengths, each padded to its own longest sequence."""
        projections = [unpadding.gather(proj(hidden)) for proj in (self.query, self.key, self.value)]
        contexts = []
        for q, k, v, real in zip(*projections, unpadding.group_masks):  # q, k, v: (n, m, H); real: (n, m)
            mask = attention_mask_for(implementation, real, q, self.config)
            contexts.append(self._attend(implementation, q, k, v, mask, **kwargs)[0])
        return unpadding.scatter(contexts)


class _Residual(nn.Module):
    """A sublayer's output projection, dropout and residual, with its LayerNorm after the sum (BERT, post-LN) or,
    with `config.pre_layer_norm`, on the sublayer's input instead (`normed_input`; GPT-2, Cramming)."""

    def __init__(self, config: MiniBertConfig, in_features: int, bias: bool):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size, bias=bias)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = MiniBertDropout(config.hidden_dropout_prob)
        self.pre_layer_norm = config.pre_layer_norm

    def normed_input(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(hidden) if self.pre_layer_norm else hidden

    def forward(self, sublayer_output: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        out = residual + self.dropout(self.dense(sublayer_output))
        return out if self.pre_layer_norm else self.LayerNorm(out)


class MiniBertSelfOutput(_Residual):
    """Output projection, dropout, residual and LayerNorm around attention."""

    def __init__(self, config: MiniBertConfig):
        super().__init__(config, config.hidden_size, bias=config.attention_bias)


class MiniBertAttention(nn.Module):
    def __init__(self, config: MiniBertConfig):
        super().__init__()
        self.self = MiniBertSelfAttention(config)
        self.output = MiniBertSelfOutput(config)

    def forward(self, hidden, attention_mask=None, unpadding=None, output_attentions=False, **kwargs):
        normed = self.output.normed_input(hidden)
        context, weights = self.self(normed, attention_mask, unpadding, output_attentions, **kwargs)
        return self.output(context, hidden), weights


# --------------------------------------------------------------------------------------------------------------
# Feed-forward, layer, encoder
# --------------------------------------------------------------------------------------------------------------
class MiniBertIntermediate(nn.Module):
    """Position-wise H -> intermediate_size, then the activation (GELU in BERT).

    With `config.gated_feed_forward` (Shazeer, 2020): act(x W) * (x V), W and V in one (H -> 2 * intermediate) matmul;
    GELU gives GEGLU, SiLU gives SwiGLU.
    """

    def __init__(self, config: MiniBertConfig):
        super().__init__()
        self.gated = config.gated_feed_forward
        width = 2 * config.intermediate_size if self.gated else config.intermediate_size
        self.dense = nn.Linear(config.hidden_size, width, bias=config.mlp_bias)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.gated:
            gate, up = self.dense(hidden).chunk(2, dim=-1)  # each (..., intermediate_size)
            return self.intermediate_act_fn(gate) * up
        return self.intermediate_act_fn(self.dense(hidden))


class MiniBertOutput(_Residual):
    """intermediate_size -> H, dropout, residual and LayerNorm."""

    def __init__(self, config: MiniBertConfig):
        super().__init__(config, config.intermediate_size, bias=config.mlp_bias)


class MiniBertLayer(GradientCheckpointingLayer):
    def __init__(self, config: MiniBertConfig):
        super().__init__()
        self.attention = MiniBertAttention(config)
        self.intermediate = MiniBertIntermediate(config)
        self.output = MiniBertOutput(config)

    def forward(self, hidden, attention_mask=None, unpadding=None, output_attentions=False, **kwargs):
        hidden, weights = self.attention(hidden, attention_mask, unpadding, output_attentions, **kwargs)
        return self.output(self.intermediate(self.output.normed_input(hidden)), hidden), weights


def _selected_hidden_states(output_hidden_states, num_layers: int) -> set[int] | None:
    """Which hidden states to return: None (none), or indices into the L + 1 states (negative ones allowed).

    As in transformers: True or False, or an int / list of ints selecting some states (embeddings are state 0).
    """
    if output_hidden_states is None or output_hidden_states is False:
        return None
    count = num_layers + 1
    if output_hidden_states is True:
        return set(range(count))
    chosen = [output_hidden_states] if isinstance(output_hidden_states, int) else list(output_hidden_states)
    return {i % count for i in chosen if -count <= i < count}


class MiniBertEncoder(nn.Module):
    def __init__(self, config: MiniBertConfig):
        super().__init__()
        self.layer = nn.ModuleList(MiniBertLayer(config) for _ in range(config.num_hidden_layers))
        # Pre-LN leaves the residual stream unnormalised: one LayerNorm after the last layer, as GPT-2 has.
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.pre_layer_norm else None

    def forward(
        self, hidden, attention_mask=None, unpadding=None, output_attentions=False, output_hidden_states=None, **kwargs
    ):
        """Returns the last hidden state, the selected hidden states and the attention weights (or None).

        The hidden states are the very tensors each layer consumed (the packed (T, H) ones on the unpadded path),
        so gradients with respect to them (saliency, integrated gradients) flow.
        """
        selected = _selected_hidden_states(output_hidden_states, len(self.layer))
        all_hidden = [] if selected is not None else None
        all_weights = [] if output_attentions else None
        for i, layer in enumerate(self.layer):
            if selected is not None and i in selected:
                all_hidden.append(hidden)
            hidden, weights = layer(hidden, attention_mask, unpadding, output_attentions, **kwargs)
            if output_attentions:
                all_weights.append(weights)
        if self.LayerNorm is not None:
            hidden = self.LayerNorm(hidden)
        if selected is not None and len(self.layer) in selected:
            all_hidden.append(hidden)
        return (
            hidden,
            (tuple(all_hidden) if all_hidden is not None else None),
            (tuple(all_weights) if all_weights is not None else None),
        )


class MiniBertPooler(nn.Module):
    """tanh(W h_[CLS] + b): the sentence representation NSP and classifiers read."""

    def __init__(self, config: MiniBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, sequence_output: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(sequence_output[:, 0]))  # (B, H)


# --------------------------------------------------------------------------------------------------------------
# The base model
# --------------------------------------------------------------------------------------------------------------
# Every checkpoint names all of these, not only the class that saved it (transformers' default): then `AutoModel`
# on a pretraining checkpoint, or `pipeline("fill-mask")` on a classifier's encoder, works without minibert installed.
AUTO_MAP = {
    "AutoConfig": "configuration_minibert.MiniBertConfig",
    "AutoModel": "modeling_minibert.MiniBertModel",
    "AutoModelForPreTraining": "modeling_minibert.MiniBertForPreTraining",
    "AutoModelForMaskedLM": "modeling_minibert.MiniBertForMaskedLM",
    "AutoModelForNextSentencePrediction": "modeling_minibert.MiniBertForNextSentencePrediction",
    "AutoModelForSequenceClassification": "modeling_minibert.MiniBertForSequenceClassification",
    "AutoModelForMultipleChoice": "modeling_minibert.MiniBertForMultipleChoice",
    "AutoModelForTokenClassification": "modeling_minibert.MiniBertForTokenClassification",
    "AutoModelForQuestionAnswering": "modeling_minibert.MiniBertForQuestionAnswering",
}
CODE_FILES = ("configuration_minibert.py", "modeling_minibert.py")


class EncoderKwargs(TypedDict, total=False):
    """What a head passes on to `MiniBertModel.forward` as it came (described there), besides the attention
    backend's own keywords. Declared as transformers' heads declare theirs (`**kwargs: Unpack[...]`): tools that
    read a head's signature see what it accepts."""

    output_attentions: bool
    output_hidden_states: bool | int | list[int]
    token_indices: torch.Tensor
    attention_groups: tuple[torch.Tensor, ...]


class MiniBertPreTrainedModel(PreTrainedModel):
    config_class = MiniBertConfig
    config: MiniBertConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flash_attn_2 = True  # the 4.x name
    _supports_flex_attn = True
    _supports_attention_backend = True
    # The heads honour `num_items_in_batch` (transformers' convention): the Trainer's loss over accumulated and
    # distributed batches is the exact global mean.
    accepts_loss_kwargs = True
    _no_split_modules = ["MiniBertEmbeddings", "MiniBertLayer"]

    @torch.no_grad()
    def _init_weights(self, module):
        """BERT's initialisation: normal(0, initializer_range) matrices and embeddings, zero biases, unit norms.

        Written out (transformers 4.x has no default); `init` is transformers' (5.x) or torch's (4.x): the former
        skips weights `from_pretrained` has just loaded.
        """
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, MiniBertLMPredictionHead):
            init.zeros_(module.bias)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as transformers does, plus this code and the full `auto_map`, so the folder loads anywhere.

        Works the same whether minibert is installed or this file was itself loaded as remote code (its
        directory then holds both code files), so a checkpoint loaded and saved again still carries its code.
        """
        os.makedirs(save_directory, exist_ok=True)
        here = os.path.dirname(os.path.abspath(__file__))
        for name in CODE_FILES:
            if os.path.abspath(os.path.join(save_directory, name)) != os.path.join(here, name):
                shutil.copyfile(os.path.join(here, name), os.path.join(save_directory, name))
        self.config.auto_map = dict(AUTO_MAP)
        return super().save_pretrained(save_directory, *args, **kwargs)

    # ---- shared by every head ---------------------------------------------------------------------------------
    def _encode(self, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, **kwargs):
        """The encoder's `BaseModelOutputWithPooling` for a head's inputs (the head honours `return_dict` itself);
        `kwargs` (`EncoderKwargs`, the attention backend's own) go on as they came."""
        return self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )

    def _outputs(self, output_cls, encoded: BaseModelOutputWithPooling, return_dict, **fields):
        """A head's `ModelOutput` with the encoder's hidden states and attentions, or its tuple."""
        out = output_cls(**fields, hidden_states=encoded.hidden_states, attentions=encoded.attentions)
        return self._as_requested(out, return_dict)

    def _as_requested(self, out: ModelOutput, return_dict):
        """`out`, or its tuple when `return_dict` (default: the config's) is false."""
        if return_dict is None:
            return_dict = getattr(self.config, "return_dict", True)
        return out if return_dict else out.to_tuple()


class MiniBertModel(MiniBertPreTrainedModel):
    """The encoder: returns the last hidden states (B, S, H) and the pooled [CLS] vector (B, H)."""

    # The encoder of a checkpoint with heads (pretraining, classifier) leaves them unused: expected, not reported.
    _keys_to_ignore_on_load_unexpected = [r"^cls\.", r"^classifier\.", r"^qa_outputs\."]

    def __init__(self, config: MiniBertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = MiniBertEmbeddings(config)
        self.encoder = MiniBertEncoder(config)
        self.pooler = MiniBertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        token_indices=None,
        attention_groups=None,
        **kwargs,
    ):
        r"""
        token_indices (`torch.LongTensor` of shape `(T,)`, *optional*): flat positions in `batch * seq` of the real
            tokens, padded with the value `batch * seq` (see `Unpadding`). Given, position-wise work skips padding and
            `last_hidden_state` is zero at padded positions; the returned `hidden_states` are then packed `(T, H)`.
        attention_groups (sequence of `torch.LongTensor` of shape `(n, m)`, *optional*): with `token_indices`, the
            sequences in groups of similar lengths, as rows of the packed `(T, H)` layout padded with `T`: the sdpa
            and eager backends then attend per group, over `sum(n * m**2)` instead of `batch * seq**2` pairs
            (`pretrain.collator.attention_groups` makes them). The result is the same.
        kwargs: passed to every layer's attention backend as they are (transformers' attention interface), e.g. the
            `cu_seq_lens_q` / `cu_seq_lens_k` / `max_length_q` / `max_length_k` of a padding-free collator
            (`DataCollatorWithFlattening`), which flash attention reads.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states

        embeddings = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)  # (B, S, H)
        implementation = attention_implementation(self.config, output_attentions)
        mask = attention_mask_for(implementation, attention_mask, embeddings, self.config)
        unpadding = None
        if token_indices is not None:
            unpadding = Unpadding(token_indices, *embeddings.shape[:2], groups=attention_groups)
            embeddings = unpadding.unpad(embeddings)  # (T, H)

        hidden, all_hidden, all_weights = self.encoder(
            embeddings, mask, unpadding, output_attentions, output_hidden_states, **kwargs
        )
        sequence_output = unpadding.pad(hidden) if unpadding is not None else hidden  # (B, S, H)
        pooled = self.pooler(sequence_output) if self.pooler is not None else None
        encoded = BaseModelOutputWithPooling(
            last_hidden_state=sequence_output, pooler_output=pooled, hidden_states=all_hidden, attentions=all_weights
        )
        return self._as_requested(encoded, return_dict)


# --------------------------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------------------------
class MiniBertPredictionHeadTransform(nn.Module):
    def __init__(self, config: MiniBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden)))


class MiniBertLMPredictionHead(nn.Module):
    """Masked-token prediction: transform, then a decoder tied to the input word embeddings, plus a bias."""

    def __init__(self, config: MiniBertConfig):
        super().__init__()
        self.transform = MiniBertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=True)
        # decoder.bias becomes this same parameter through `_tied_weights_keys` (tie_weights), as in transformers'
        # BERT. Sharing it here by hand instead makes `from_pretrained` of a checkpoint without an MLM head (a
        # MiniBertModel's) leave the bias on the meta device: transformers sees it as an already-loaded tied weight.
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def _tie_weights(self):
        # transformers 4.x ties the decoder's bias through this hook (5.x through `_tied_weights_keys`).
        self.decoder.bias = self.bias

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden))  # (..., vocab)


class MiniBertOnlyMLMHead(nn.Module):
    def __init__(self, config: MiniBertConfig):
        super().__init__()
        self.predictions = MiniBertLMPredictionHead(config)


class MiniBertOnlyNSPHead(nn.Module):
    def __init__(self, config: MiniBertConfig):
        super().__init__()
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.seq_relationship(pooled)


class MiniBertPreTrainingHeads(nn.Module):
    def __init__(self, config: MiniBertConfig):
        super().__init__()
        self.predictions = MiniBertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


def _cross_entropy(logits, targets, num_items_in_batch=None, ignore_index=-100):
    """Mean cross-entropy over the targets that are not ignored; or their sum / `num_items_in_batch` when given
    (transformers' convention: the count over every micro-batch and process, so that accumulation is exact).
    None without targets."""
    if targets is None:
        return None
    logits, targets = logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1).to(logits.device)
    if num_items_in_batch is None:
        return F.cross_entropy(logits, targets, ignore_index=ignore_index)
    loss = F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction="sum")
    return loss / torch.as_tensor(num_items_in_batch, device=loss.device, dtype=loss.dtype)


@dataclass
class MiniBertForPreTrainingOutput(ModelOutput):
    """
    loss: mlm_loss + nsp_loss (each part that has labels).
    prediction_logits: (B, S, vocab); with labels and `sparse_prediction`, (M, vocab) at the masked positions.
    seq_relationship_logits: (B, 2); index 0 = B follows A, 1 = B is random.
    """

    loss: torch.Tensor | None = None
    prediction_logits: torch.Tensor | None = None
    seq_relationship_logits: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class _MaskedLMMixin:
    """The MLM decoder is tied to the input embeddings, as in BERT."""

    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings):
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias

    def _masked_lm(self, sequence_output, labels, masked_positions, sparse_prediction, num_items_in_batch):
        """MLM logits and loss.

        Dense: logits (B, S, vocab) for every position, as transformers' BERT returns them.
        Sparse (`sparse_prediction`, default `config.sparse_prediction`, with labels): logits (M, vocab), one row per
        entry of `masked_positions` (flat positions in B * S, padded with B * S, whose rows carry label -100), or,
        when they are not given, per label != -100 in row-major order (found with `nonzero`, which reads the device:
        the collator's `masked_positions` avoid that). The loss is the same number either way, for a fraction of the
        work.
        """
        head = self.cls.predictions
        sparse = self.config.sparse_prediction if sparse_prediction is None else sparse_prediction
        if sparse and labels is not None:
            hidden = sequence_output.reshape(-1, sequence_output.size(-1))  # (B * S, H)
            flat_labels = labels.reshape(-1)
            if masked_positions is None:
                masked_positions = (flat_labels != -100).nonzero().squeeze(1)
            else:  # the bucket's fill points one past the end: a zero row with an ignored label
                hidden, flat_labels = with_scratch_row(hidden), with_scratch_row(flat_labels, -100)
            logits = head(hidden.index_select(0, masked_positions))  # (M, vocab)
            return logits, _cross_entropy(logits, flat_labels.index_select(0, masked_positions), num_items_in_batch)
        logits = head(sequence_output)  # (B, S, vocab)
        return logits, _cross_entropy(logits, labels, num_items_in_batch)


class MiniBertForPreTraining(_MaskedLMMixin, MiniBertPreTrainedModel):
    """BERT's pretraining objective: masked-language modelling + next-sentence prediction."""

    def __init__(self, config: MiniBertConfig):
        super().__init__(config)
        self.bert = MiniBertModel(config)
        self.cls = MiniBertPreTrainingHeads(config)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        next_sentence_label=None,
        return_dict=None,
        masked_positions=None,
        sparse_prediction=None,
        num_items_in_batch=None,
        num_sequences_in_batch=None,
        **kwargs: Unpack[EncoderKwargs],
    ):
        r"""
        masked_positions (`torch.LongTensor` of shape `(M,)`, *optional*): with `sparse_prediction`, where the MLM
            head runs (see `_MaskedLMMixin._masked_lm`). sparse_prediction (`bool`, *optional*): overrides
            `config.sparse_prediction`.
        num_items_in_batch (*optional*): the masked tokens of the whole step (every micro-batch and process), what
            transformers' `Trainer` counts from `labels`: the MLM loss is this batch's sum over that count.
        num_sequences_in_batch (*optional*): the sequences of the whole step: the NSP loss is this batch's sum over
            that count, exactly. Without it, but with `num_items_in_batch`, the count is estimated as this batch's
            sequences times its share of the step's masked tokens (`_sequences_in_step`); without either, both
            losses are plain means, as in transformers' BERT.
        """
        encoded = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, **kwargs)
        mlm_logits, mlm_loss = self._masked_lm(
            encoded.last_hidden_state, labels, masked_positions, sparse_prediction, num_items_in_batch
        )
        nsp_logits = self.cls.seq_relationship(encoded.pooler_output)  # (B, 2)
        if num_sequences_in_batch is None and next_sentence_label is not None:
            num_sequences_in_batch = _sequences_in_step(next_sentence_label, labels, num_items_in_batch)
        nsp_loss = _cross_entropy(nsp_logits, next_sentence_label, num_sequences_in_batch)
        losses = [x for x in (mlm_loss, nsp_loss) if x is not None]
        return self._outputs(
            MiniBertForPreTrainingOutput,
            encoded,
            return_dict,
            loss=sum(losses) if losses else None,
            prediction_logits=mlm_logits,
            seq_relationship_logits=nsp_logits,
            mlm_loss=mlm_loss,
            nsp_loss=nsp_loss,
        )


def _sequences_in_step(next_sentence_label, labels, num_items_in_batch):
    """The step's NSP count, estimated from what transformers' `Trainer` passes (`num_items_in_batch`: the step's
    masked tokens): this batch's sequences * step's masked tokens / this batch's masked tokens. Exact when every
    micro-batch masks the same share of its sequences' tokens (a fixed number of masks per sequence, or one
    micro-batch per step); otherwise each micro-batch's NSP mean is weighted by its masked tokens, not by its
    sequences. None (a plain mean) without both counts."""
    if num_items_in_batch is None or labels is None:
        return None
    sequences = (next_sentence_label != -100).sum()
    return sequences * num_items_in_batch / (labels != -100).sum().clamp(min=1)


class MiniBertForMaskedLM(_MaskedLMMixin, MiniBertPreTrainedModel):
    # A pretraining checkpoint carries the NSP head and the pooler, which this class does not use: expected.
    _keys_to_ignore_on_load_unexpected = [r"^cls\.seq_relationship\.", r"^bert\.pooler\."]

    def __init__(self, config: MiniBertConfig):
        super().__init__(config)
        self.bert = MiniBertModel(config, add_pooling_layer=False)
        self.cls = MiniBertOnlyMLMHead(config)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        return_dict=None,
        masked_positions=None,
        sparse_prediction=None,
        num_items_in_batch=None,
        num_sequences_in_batch=None,
        **kwargs: Unpack[EncoderKwargs],
    ):
        r"""
        num_items_in_batch (*optional*): the step's masked tokens; the loss is this batch's sum over it.
        num_sequences_in_batch (*optional*): accepted and unused (MLM has no per-sequence loss), so that a
            pretraining loop passes the same normalisers to either pretraining head.
        """
        encoded = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, **kwargs)
        logits, loss = self._masked_lm(
            encoded.last_hidden_state, labels, masked_positions, sparse_prediction, num_items_in_batch
        )
        return self._outputs(MaskedLMOutput, encoded, return_dict, loss=loss, logits=logits)


class MiniBertForNextSentencePrediction(MiniBertPreTrainedModel):
    _keys_to_ignore_on_load_unexpected = [r"^cls\.predictions\."]

    def __init__(self, config: MiniBertConfig):
        super().__init__(config)
        self.bert = MiniBertModel(config)
        self.cls = MiniBertOnlyNSPHead(config)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        return_dict=None,
        num_items_in_batch=None,
        **kwargs: Unpack[EncoderKwargs],
    ):
        r"""
        num_items_in_batch (*optional*): the step's labelled sequences (what `Trainer` counts from `labels`); the
            loss is this batch's sum over it.
        """
        encoded = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, **kwargs)
        logits = self.cls(encoded.pooler_output)  # (B, 2)
        loss = _cross_entropy(logits, labels, num_items_in_batch)
        return self._outputs(NextSentencePredictorOutput, encoded, return_dict, loss=loss, logits=logits)


def _classifier_dropout(config: MiniBertConfig) -> MiniBertDropout:
    p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
    return MiniBertDropout(p)


# A classifier built on a pretraining checkpoint drops its MLM and NSP heads: expected, not worth a report line.
_PRETRAINING_HEADS = [r"^cls\."]


class MiniBertForSequenceClassification(MiniBertPreTrainedModel):
    """A linear layer on the pooled [CLS] vector: single-label, multi-label or regression (`config.problem_type`)."""

    _keys_to_ignore_on_load_unexpected = _PRETRAINING_HEADS

    def __init__(self, config: MiniBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = MiniBertModel(config)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        return_dict=None,
        num_items_in_batch=None,
        **kwargs: Unpack[EncoderKwargs],
    ):
        r"""
        num_items_in_batch (*optional*): the step's label values (what `Trainer` counts from `labels`: one per
            example, or one per example and class for multi-label); the loss is this batch's sum over it.
        """
        encoded = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, **kwargs)
        logits = self.classifier(self.dropout(encoded.pooler_output))  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.config.problem_type is None:  # inferred as transformers does
                if self.num_labels == 1:
                    self.config.problem_type = "regression"
                elif labels.dtype in (torch.long, torch.int):
                    self.config.problem_type = "single_label_classification"
                else:
                    self.config.problem_type = "multi_label_classification"
            if self.config.problem_type == "single_label_classification":
                loss = _cross_entropy(logits, labels, num_items_in_batch)
            else:  # a mean over every label value; or their sum / `num_items_in_batch` (the Trainer counts them all)
                if self.config.problem_type == "regression":
                    pair = (logits.squeeze(), labels.squeeze()) if self.num_labels == 1 else (logits, labels)
                    loss = F.mse_loss(pair[0].float(), pair[1].float(), reduction="sum")
                else:
                    loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="sum")
                count = labels.numel() if num_items_in_batch is None else num_items_in_batch
                loss = loss / torch.as_tensor(count, device=loss.device, dtype=loss.dtype)
        return self._outputs(SequenceClassifierOutput, encoded, return_dict, loss=loss, logits=logits)


class MiniBertForMultipleChoice(MiniBertPreTrainedModel):
    """A linear layer scoring each choice's pooled [CLS] vector; a softmax over the choices (SWAG, RACE).

    Inputs are (B, C, S): C choices per example, each a full sequence (usually the context paired with one ending).
    """

    _keys_to_ignore_on_load_unexpected = _PRETRAINING_HEADS

    def __init__(self, config: MiniBertConfig):
        super().__init__(config)
        self.bert = MiniBertModel(config)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        return_dict=None,
        num_items_in_batch=None,
        **kwargs: Unpack[EncoderKwargs],
    ):
        r"""
        labels (`torch.LongTensor` of shape `(B,)`, *optional*): the index of the right choice, in [0, C).
        num_items_in_batch (*optional*): the step's labelled examples (what `Trainer` counts from `labels`); the
            loss is this batch's sum over it.
        """
        num_choices = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        inputs = (input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        # (B, C, S, ...) -> (B * C, S, ...): every choice is a sequence of its own
        encoded = self._encode(*(x.reshape(-1, *x.shape[2:]) if x is not None else None for x in inputs), **kwargs)
        scores = self.classifier(self.dropout(encoded.pooler_output))  # (B * C, 1)
        logits = scores.view(-1, num_choices)  # (B, C)
        loss = _cross_entropy(logits, labels, num_items_in_batch)
        return self._outputs(MultipleChoiceModelOutput, encoded, return_dict, loss=loss, logits=logits)


class MiniBertForTokenClassification(MiniBertPreTrainedModel):
    """A linear layer on every token (NER, POS tagging); labels of -100 are ignored."""

    _keys_to_ignore_on_load_unexpected = _PRETRAINING_HEADS + [r"^bert\.pooler\."]

    def __init__(self, config: MiniBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = MiniBertModel(config, add_pooling_layer=False)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        return_dict=None,
        num_items_in_batch=None,
        **kwargs: Unpack[EncoderKwargs],
    ):
        r"""
        num_items_in_batch (*optional*): the step's labelled tokens (labels != -100, what `Trainer` counts); the
            loss is this batch's sum over it.
        """
        encoded = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, **kwargs)
        logits = self.classifier(self.dropout(encoded.last_hidden_state))  # (B, S, num_labels)
        loss = _cross_entropy(logits, labels, num_items_in_batch)
        return self._outputs(TokenClassifierOutput, encoded, return_dict, loss=loss, logits=logits)


class MiniBertForQuestionAnswering(MiniBertPreTrainedModel):
    """Extractive QA: start and end logits over the tokens of the passage (`config.num_labels` = 2 outputs)."""

    _keys_to_ignore_on_load_unexpected = _PRETRAINING_HEADS + [r"^bert\.pooler\."]

    def __init__(self, config: MiniBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = MiniBertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        start_positions=None,
        end_positions=None,
        return_dict=None,
        num_items_in_batch=None,
        **kwargs: Unpack[EncoderKwargs],
    ):
        r"""
        num_items_in_batch (*optional*): the step's answers (one per example whose positions are not ignored); the
            loss is (sum of start losses + sum of end losses) / 2 over it. `Trainer` passes none here (it counts
            `labels`, which QA has not) and averages the micro-batches' means itself.
        """
        encoded = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, **kwargs)
        logits = self.qa_outputs(encoded.last_hidden_state)  # (B, S, num_labels)
        start_logits, end_logits = (x.squeeze(-1).contiguous() for x in logits.split(1, dim=-1)[:2])
        if attention_mask is not None and attention_mask.dim() == 2:
            # Padding is never the answer: keep it out of the softmax over positions, so that an example's loss does
            # not depend on how much padding its batch has (equal to BERT's loss on the unpadded example).
            padded = attention_mask == 0  # (B, S)
            start_logits = start_logits.masked_fill(padded, torch.finfo(start_logits.dtype).min)
            end_logits = end_logits.masked_fill(padded, torch.finfo(end_logits.dtype).min)
        loss = None
        if start_positions is not None and end_positions is not None:
            # Positions outside the sequence are clamped to S and ignored, as in transformers' BERT; so are positions
            # on padding, which lie outside the example too.
            ignored = start_logits.size(1)
            start_positions = start_positions.view(-1).clamp(0, ignored)
            end_positions = end_positions.view(-1).clamp(0, ignored)
            if attention_mask is not None and attention_mask.dim() == 2:
                outside = F.pad(padded, (0, 1), value=True)  # (B, S + 1)
                rows = torch.arange(outside.size(0), device=outside.device)
                start_positions = start_positions.masked_fill(outside[rows, start_positions], ignored)
                end_positions = end_positions.masked_fill(outside[rows, end_positions], ignored)
            start_loss = _cross_entropy(start_logits, start_positions, num_items_in_batch, ignore_index=ignored)
            end_loss = _cross_entropy(end_logits, end_positions, num_items_in_batch, ignore_index=ignored)
            loss = (start_loss + end_loss) / 2
        return self._outputs(
            QuestionAnsweringModelOutput,
            encoded,
            return_dict,
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
        )


__all__ = [
    "MiniBertPreTrainedModel",
    "MiniBertModel",
    "MiniBertForPreTraining",
    "MiniBertForMaskedLM",
    "MiniBertForNextSentencePrediction",
    "MiniBertForSequenceClassification",
    "MiniBertForMultipleChoice",
    "MiniBertForTokenClassification",
    "MiniBertForQuestionAnswering",
]
