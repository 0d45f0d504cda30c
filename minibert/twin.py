"""MiniBERT <-> transformers' BERT, in memory: configs and models, exactly (the same names, the same numbers).

The lowest layer of the checkpoint tools: `minibert.hub` writes the plain-BERT twin with it and `minibert.convert`
converts checkpoints on disk with it; it imports neither, so the three never import each other in a circle.
"""

from __future__ import annotations

import transformers
from transformers import BertConfig, BertModel, PreTrainedModel

from . import AUTO_CLASSES
from .checks import check_bert_export
from .configuration_minibert import SIZE_FIELDS, MiniBertConfig
from .errors import UserError
from .modeling_minibert import MiniBertModel

# transformers BERT class <-> MiniBERT class, one pair per Auto class: MiniBertForX's twin is transformers' BertForX.
PAIRS = [(getattr(transformers, mini.__name__.removeprefix("Mini")), mini) for mini in AUTO_CLASSES.values()]
TO_MINIBERT = {bert.__name__: mini for bert, mini in PAIRS}
TO_BERT = {mini.__name__: bert for bert, mini in PAIRS}
MINIBERT_TO_BERT_CLASS = {mini: bert for bert, mini in PAIRS}

# Config fields with the same meaning in both (BertConfig's names), plus the fine-tuning fields.
SHARED_CONFIG_FIELDS = [
    *SIZE_FIELDS,
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
    "classifier_dropout",
    "id2label",
    "label2id",
    "problem_type",
]


def bert_config_to_minibert(config: BertConfig) -> MiniBertConfig:
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise UserError(
            "this BERT is configured as a decoder (is_decoder / add_cross_attention); MiniBERT is an encoder"
        )
    position = getattr(config, "position_embedding_type", "absolute")
    if position not in (None, "absolute"):
        raise UserError(f"position_embedding_type={position!r} is not supported: MiniBERT uses absolute positions")
    fields = {k: getattr(config, k) for k in SHARED_CONFIG_FIELDS if getattr(config, k, None) is not None}
    try:
        return MiniBertConfig(**fields)
    except ValueError as e:
        raise UserError(f"this BERT config cannot be converted: {e}") from None


def minibert_config_to_bert(config: MiniBertConfig) -> BertConfig:
    check_bert_export(config, flag=None, advice="share it with its remote code")
    return BertConfig(**{k: getattr(config, k) for k in SHARED_CONFIG_FIELDS if getattr(config, k, None) is not None})


def _rebuilt(model: PreTrainedModel, cls: type, config) -> PreTrainedModel:
    """`model`'s weights in a new `cls(config)`, in `model`'s dtype; a base model keeps its pooler (or its lack)."""
    kwargs = {"add_pooling_layer": model.pooler is not None} if cls in (BertModel, MiniBertModel) else {}
    out = cls(config, **kwargs)
    missing, unexpected = out.load_state_dict(model.state_dict(), strict=False)
    # The tied MLM decoder appears under two names; everything else must match exactly.
    missing = [k for k in missing if not k.endswith(("decoder.weight", "decoder.bias"))]
    unexpected = [
        k for k in unexpected if not k.endswith(("decoder.weight", "decoder.bias", "position_ids", "token_type_ids"))
    ]
    if missing or unexpected:
        raise UserError(f"weights do not line up (missing {missing[:5]}, unexpected {unexpected[:5]})")
    out.tie_weights()
    return out.to(model.dtype)


def bert_to_minibert(model: PreTrainedModel) -> PreTrainedModel:
    """A transformers BERT model (any class in PAIRS) -> the matching MiniBERT model, same weights."""
    cls = TO_MINIBERT.get(type(model).__name__)
    if cls is None:
        raise UserError(f"{type(model).__name__} has no MiniBERT counterpart; supported: {', '.join(TO_MINIBERT)}")
    return _rebuilt(model, cls, bert_config_to_minibert(model.config))


def minibert_to_bert(model: PreTrainedModel) -> PreTrainedModel:
    """A MiniBERT model -> the matching transformers BERT model, same weights."""
    return _rebuilt(model, TO_BERT[type(model).__name__], minibert_config_to_bert(model.config))
