"""MiniBERT: the BERT encoder (Devlin et al., 2019), written to be read top to bottom.

    embeddings -> [attention -> feed-forward] x L -> pooler -> heads

Numerically it is transformers' `BertModel` (tests compare the two), with three changes that make training faster
without changing any result:

1. No work on padding. Every position-wise operation (projections, feed-forward, LayerNorm) runs on the real tokens
   only, packed into one (tokens, hidden) matrix; only attention itself sees the padded (batch, seq) layout.
2. Q, K and V come from one fused (hidden -> 3 * hidden) projection, and attention runs through
   `torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient kernels on GPU).
3. `sparse_prediction=True` runs the MLM head (a hidden x vocab matrix, most of a small model's cost) only at the
   masked positions, which are the only ones the loss reads.

This file ships inside every checkpoint as remote code: it imports only torch, transformers and its config.
"""

import os
import shutil
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    NextSentencePredictorOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.utils import ModelOutput

from .configuration_minibert import MiniBertConfig


# --------------------------------------------------------------------------------------------------------------
# Padding bookkeeping
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Padding:
    """Where the real tokens of a padded (batch, seq) batch sit, to move between the padded and packed layouts."""

    indices: torch.Tensor  # (T,) flat positions of real tokens in batch * seq
    key_mask: torch.Tensor | None  # (B, 1, 1, S) True where a key may be attended to; None when nothing is padded
    batch_size: int
    seq_len: int

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor | None, batch_size: int, seq_len: int, device) -> "Padding":
        if attention_mask is None or bool(attention_mask.all()):
            indices = torch.arange(batch_size * seq_len, device=device)
            return cls(indices, None, batch_size, seq_len)
        mask = attention_mask.bool()
        indices = mask.flatten().nonzero().squeeze(1)
        return cls(indices, mask[:, None, None, :], batch_size, seq_len)

    @property
    def is_padded(self) -> bool:
        return self.key_mask is not None

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, ...) -> (T, ...): keep the real tokens."""
        x = x.reshape(self.batch_size * self.seq_len, *x.shape[2:])
        return x.index_select(0, self.indices) if self.is_padded else x

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """(T, ...) -> (B, S, ...): real tokens back in place, zeros at padding."""
        if self.is_padded:
            out = x.new_zeros(self.batch_size * self.seq_len, *x.shape[1:])
            x = out.index_copy(0, self.indices, x)
        return x.reshape(self.batch_size, self.seq_len, *x.shape[1:])


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
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None, position_ids=None, inputs_embeds=None) -> torch.Tensor:
        embeddings = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds  # (B, S, H)
        batch_size, seq_len = embeddings.shape[:2]
        if seq_len > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"sequence length {seq_len} exceeds max_position_embeddings "
                f"({self.position_embeddings.num_embeddings}); truncate the input"
            )
        if position_ids is None:
            position_embeddings = self.position_embeddings.weight[:seq_len]  # (S, H), broadcast over the batch
        else:
            position_embeddings = self.position_embeddings(position_ids)
        if token_type_ids is None:
            segment_embeddings = self.token_type_embeddings.weight[0]  # everything is sentence A
        else:
            segment_embeddings = self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + position_embeddings + segment_embeddings
        return self.dropout(self.LayerNorm(embeddings))


# --------------------------------------------------------------------------------------------------------------
# Multi-head self-attention
# --------------------------------------------------------------------------------------------------------------
class MiniBertAttention(nn.Module):
    """softmax(Q K^T / sqrt(d)) V over h heads, then output projection, residual and LayerNorm."""

    def __init__(self, config: MiniBertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout_prob = config.attention_probs_dropout_prob
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)  # Q, K and V in one matmul
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.config = config  # read at call time: `attn_implementation` can change after construction

    def forward(self, hidden: torch.Tensor, padding: Padding, output_attentions: bool = False):
        # hidden: (T, H), the real tokens of the batch packed together
        B, S, nh, d = padding.batch_size, padding.seq_len, self.num_heads, self.head_dim
        qkv = padding.unpack(self.qkv(hidden))  # (B, S, 3H); attention is the one step that needs the padded layout
        q, k, v = qkv.view(B, S, 3, nh, d).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, S, d)
        dropout = self.dropout_prob if self.training else 0.0

        weights = None
        if output_attentions or self.config._attn_implementation == "eager":
            # The explicit path, for when the caller wants to see the attention weights.
            scores = (q @ k.transpose(-1, -2)) / d**0.5  # (B, nh, S, S)
            if padding.key_mask is not None:
                scores = scores.masked_fill(~padding.key_mask, torch.finfo(scores.dtype).min)
            weights = scores.softmax(dim=-1)
            context = F.dropout(weights, p=dropout, training=self.training) @ v
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=padding.key_mask, dropout_p=dropout)

        context = padding.pack(context.transpose(1, 2).reshape(B, S, nh * d))  # merge heads -> (T, H)
        hidden = self.LayerNorm(hidden + self.dropout(self.dense(context)))
        return hidden, weights


# --------------------------------------------------------------------------------------------------------------
# Feed-forward, layer, encoder
# --------------------------------------------------------------------------------------------------------------
class MiniBertFeedForward(nn.Module):
    """Position-wise H -> 4H -> H with GELU, then residual and LayerNorm."""

    def __init__(self, config: MiniBertConfig):
        super().__init__()
        self.intermediate = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(hidden + self.dropout(self.output(self.act(self.intermediate(hidden)))))


class MiniBertLayer(GradientCheckpointingLayer):
    def __init__(self, config: MiniBertConfig):
        super().__init__()
        self.attention = MiniBertAttention(config)
        self.feed_forward = MiniBertFeedForward(config)

    def forward(self, hidden: torch.Tensor, padding: Padding, output_attentions: bool = False):
        hidden, weights = self.attention(hidden, padding, output_attentions)
        return self.feed_forward(hidden), weights


class MiniBertEncoder(nn.Module):
    def __init__(self, config: MiniBertConfig):
        super().__init__()
        self.layer = nn.ModuleList(MiniBertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden, padding: Padding, output_attentions=False, output_hidden_states=False):
        all_hidden = [hidden] if output_hidden_states else None
        all_weights = [] if output_attentions else None
        for layer in self.layer:
            hidden, weights = layer(hidden, padding, output_attentions)
            if output_hidden_states:
                all_hidden.append(hidden)
            if output_attentions:
                all_weights.append(weights)
        return hidden, all_hidden, all_weights


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
    "AutoModelForTokenClassification": "modeling_minibert.MiniBertForTokenClassification",
    "AutoModelForQuestionAnswering": "modeling_minibert.MiniBertForQuestionAnswering",
}
CODE_FILES = ("configuration_minibert.py", "modeling_minibert.py")


class MiniBertPreTrainedModel(PreTrainedModel):
    config_class = MiniBertConfig
    config: MiniBertConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # The heads take **kwargs but do not scale their loss by `num_items_in_batch`; without this, Trainer assumes
    # they do and gradient accumulation (or several processes) multiplies the gradients.
    accepts_loss_kwargs = False
    _no_split_modules = ["MiniBertEmbeddings", "MiniBertLayer"]

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        # transformers guesses from the source (it looks for `ALL_ATTENTION_FUNCTIONS`) and would refuse
        # `model.set_attn_implementation("eager")`; MiniBertAttention reads the setting at every call, so it is safe.
        return True

    @torch.no_grad()
    def _init_weights(self, module):
        # transformers' helpers, not `.data.normal_()`: they skip weights that `from_pretrained` has just loaded.
        super()._init_weights(module)
        if isinstance(module, MiniBertLMPredictionHead):
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


class MiniBertModel(MiniBertPreTrainedModel):
    """The encoder: returns the last hidden states (B, S, H) and the pooled [CLS] vector (B, H)."""

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

    def encode(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        output_attentions=None,
        output_hidden_states=None,
    ):
        """Run the encoder and keep the packed layout: returns (hidden (T, H), padding, all_hidden, all_attentions).

        The heads call this so that sparse MLM prediction can pick masked tokens without re-padding.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        embeddings = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)  # (B, S, H)
        padding = Padding.from_mask(attention_mask, *embeddings.shape[:2], device=embeddings.device)
        hidden, all_hidden, all_weights = self.encoder(
            padding.pack(embeddings), padding, output_attentions, output_hidden_states
        )
        if all_hidden is not None:
            all_hidden = tuple(padding.unpack(h) for h in all_hidden)
        if all_weights is not None:
            all_weights = tuple(all_weights)
        return hidden, padding, all_hidden, all_weights

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
        **kwargs,
    ):
        hidden, padding, all_hidden, all_weights = self.encode(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
            output_attentions, output_hidden_states,
        )  # fmt: skip
        sequence_output = padding.unpack(hidden)  # (B, S, H); zeros at padded positions
        pooled = self.pooler(sequence_output) if self.pooler is not None else None
        out = BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=pooled,
            hidden_states=all_hidden,
            attentions=all_weights,
        )
        return out if return_dict is not False else out.to_tuple()


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

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden))  # (..., vocab)


class MiniBertOnlyMLMHead(nn.Module):
    def __init__(self, config: MiniBertConfig):
        super().__init__()
        self.predictions = MiniBertLMPredictionHead(config)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.predictions(hidden)


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


_TIED_DECODER = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}


def _masked_lm(head, hidden, padding: Padding, labels, sparse_prediction: bool):
    """MLM logits and loss.

    Dense: logits (B, S, vocab) for every position, as transformers' BERT returns them.
    Sparse: logits (M, vocab) only for the M positions with a label (in the order of `labels[labels != -100]`);
    the loss is the same number, for a fraction of the work.
    """
    if sparse_prediction and labels is not None:
        flat_labels = padding.pack(labels)  # (T,) labels of the real tokens
        selected = (flat_labels != -100).nonzero().squeeze(1)
        logits = head(hidden.index_select(0, selected))  # (M, vocab)
        loss = F.cross_entropy(logits.float(), flat_labels.index_select(0, selected))
        return logits, loss
    logits = padding.unpack(head(hidden))  # (B, S, vocab)
    loss = None
    if labels is not None:
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), labels.view(-1), ignore_index=-100)
    return logits, loss


@dataclass
class MiniBertForPreTrainingOutput(ModelOutput):
    """
    loss: mlm_loss + nsp_loss (each part that has labels).
    prediction_logits: (B, S, vocab), or (M, vocab) at the masked positions with `sparse_prediction=True`.
    seq_relationship_logits: (B, 2); index 0 = B follows A, 1 = B is random.
    """

    loss: torch.Tensor | None = None
    prediction_logits: torch.Tensor | None = None
    seq_relationship_logits: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class MiniBertForPreTraining(MiniBertPreTrainedModel):
    """BERT's pretraining objective: masked-language modelling + next-sentence prediction."""

    _tied_weights_keys = _TIED_DECODER

    def __init__(self, config: MiniBertConfig):
        super().__init__(config)
        self.bert = MiniBertModel(config)
        self.cls = MiniBertPreTrainingHeads(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings):
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        next_sentence_label=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        sparse_prediction: bool = False,
        **kwargs,
    ):
        hidden, padding, all_hidden, all_weights = self.bert.encode(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
            output_attentions, output_hidden_states,
        )  # fmt: skip
        mlm_logits, mlm_loss = _masked_lm(self.cls.predictions, hidden, padding, labels, sparse_prediction)
        pooled = self.bert.pooler(padding.unpack(hidden))
        nsp_logits = self.cls.seq_relationship(pooled)  # (B, 2)
        nsp_loss = F.cross_entropy(nsp_logits.float(), next_sentence_label.view(-1)) if next_sentence_label is not None else None
        losses = [x for x in (mlm_loss, nsp_loss) if x is not None]
        out = MiniBertForPreTrainingOutput(
            loss=sum(losses) if losses else None,
            prediction_logits=mlm_logits,
            seq_relationship_logits=nsp_logits,
            mlm_loss=mlm_loss,
            nsp_loss=nsp_loss,
            hidden_states=all_hidden,
            attentions=all_weights,
        )
        return out if return_dict is not False else out.to_tuple()


class MiniBertForMaskedLM(MiniBertPreTrainedModel):
    _tied_weights_keys = _TIED_DECODER

    def __init__(self, config: MiniBertConfig):
        super().__init__(config)
        self.bert = MiniBertModel(config, add_pooling_layer=False)
        self.cls = MiniBertOnlyMLMHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings):
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        sparse_prediction: bool = False,
        **kwargs,
    ):
        hidden, padding, all_hidden, all_weights = self.bert.encode(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
            output_attentions, output_hidden_states,
        )  # fmt: skip
        logits, loss = _masked_lm(self.cls.predictions, hidden, padding, labels, sparse_prediction)
        out = MaskedLMOutput(loss=loss, logits=logits, hidden_states=all_hidden, attentions=all_weights)
        return out if return_dict is not False else out.to_tuple()


class MiniBertForNextSentencePrediction(MiniBertPreTrainedModel):
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
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        outputs = self.bert(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
            output_attentions, output_hidden_states,
        )  # fmt: skip
        logits = self.cls(outputs.pooler_output)  # (B, 2)
        loss = F.cross_entropy(logits.float(), labels.view(-1)) if labels is not None else None
        out = NextSentencePredictorOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return out if return_dict is not False else out.to_tuple()


def _classifier_dropout(config: MiniBertConfig) -> nn.Dropout:
    p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
    return nn.Dropout(p)


class MiniBertForSequenceClassification(MiniBertPreTrainedModel):
    """A linear layer on the pooled [CLS] vector: single-label, multi-label or regression (`config.problem_type`)."""

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
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        outputs = self.bert(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
            output_attentions, output_hidden_states,
        )  # fmt: skip
        logits = self.classifier(self.dropout(outputs.pooler_output))  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.config.problem_type is None:  # inferred as transformers does
                if self.num_labels == 1:
                    self.config.problem_type = "regression"
                elif labels.dtype in (torch.long, torch.int):
                    self.config.problem_type = "single_label_classification"
                else:
                    self.config.problem_type = "multi_label_classification"
            if self.config.problem_type == "regression":
                if self.num_labels == 1:
                    loss = F.mse_loss(logits.squeeze().float(), labels.squeeze().float())
                else:
                    loss = F.mse_loss(logits.float(), labels.float())
            elif self.config.problem_type == "single_label_classification":
                loss = F.cross_entropy(logits.float().view(-1, self.num_labels), labels.view(-1))
            else:
                loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        out = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return out if return_dict is not False else out.to_tuple()


class MiniBertForTokenClassification(MiniBertPreTrainedModel):
    """A linear layer on every token (NER, POS tagging); labels of -100 are ignored."""

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
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        outputs = self.bert(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
            output_attentions, output_hidden_states,
        )  # fmt: skip
        logits = self.classifier(self.dropout(outputs.last_hidden_state))  # (B, S, num_labels)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().view(-1, self.num_labels), labels.view(-1), ignore_index=-100)
        out = TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return out if return_dict is not False else out.to_tuple()


class MiniBertForQuestionAnswering(MiniBertPreTrainedModel):
    """Extractive QA: start and end logits over the tokens of the passage."""

    def __init__(self, config: MiniBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = MiniBertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
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
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        outputs = self.bert(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
            output_attentions, output_hidden_states,
        )  # fmt: skip
        logits = self.qa_outputs(outputs.last_hidden_state)  # (B, S, 2)
        start_logits, end_logits = (x.squeeze(-1).contiguous() for x in logits.split(1, dim=-1))
        if attention_mask is not None:
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
            if attention_mask is not None:
                outside = F.pad(padded, (0, 1), value=True)  # (B, S + 1)
                rows = torch.arange(outside.size(0), device=outside.device)
                start_positions = start_positions.masked_fill(outside[rows, start_positions], ignored)
                end_positions = end_positions.masked_fill(outside[rows, end_positions], ignored)
            start_loss = F.cross_entropy(start_logits.float(), start_positions, ignore_index=ignored)
            end_loss = F.cross_entropy(end_logits.float(), end_positions, ignore_index=ignored)
            loss = (start_loss + end_loss) / 2
        out = QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return out if return_dict is not False else out.to_tuple()


__all__ = [
    "MiniBertPreTrainedModel",
    "MiniBertModel",
    "MiniBertForPreTraining",
    "MiniBertForMaskedLM",
    "MiniBertForNextSentencePrediction",
    "MiniBertForSequenceClassification",
    "MiniBertForTokenClassification",
    "MiniBertForQuestionAnswering",
]
