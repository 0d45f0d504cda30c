"""MiniBERT configuration.

Field names and defaults are `BertConfig`'s (BERT-base), so a BERT user reads this config without a glossary.
This file ships inside every checkpoint as remote code: it imports only transformers, and runs on transformers 4.48
through 5.x (the compatibility block below; tests/test_compat.py proves it in separate environments).
"""

# ---- compatibility: transformers 4.x spells the base class `PretrainedConfig` --------------------------------
try:
    from transformers import PreTrainedConfig
except ImportError:  # transformers < 5
    from transformers import PretrainedConfig as PreTrainedConfig

# Google's BERT family (Turc et al., 2019, "Well-Read Students Learn Better"): layers L and hidden size H;
# heads = H / 64 and feed-forward size = 4H throughout.
MODEL_SIZES = {
    "tiny": (2, 128),
    "mini": (4, 256),
    "small": (4, 512),
    "medium": (8, 512),
    "base": (12, 768),
    "large": (24, 1024),
}

# Activations the feed-forward block and the MLM head transform know (transformers' ACT2FN names).
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "silu", "swish", "tanh")


# The fields that fix the shapes of the weights, each a positive integer.
SIZE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
)

# Architecture choices beyond BERT's, and BERT's value of each: a config with any other value is not a BERT.
ARCHITECTURE_FIELDS = {"pre_layer_norm": False, "gated_feed_forward": False, "attention_bias": True, "mlp_bias": True}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class MiniBertConfig(PreTrainedConfig):
    r"""Configuration of a MiniBERT encoder; the same fields as `transformers.BertConfig`.

    Args:
        vocab_size: number of WordPiece tokens.
        hidden_size: width H of every layer.
        num_hidden_layers: number of encoder layers L.
        num_attention_heads: attention heads per layer; must divide `hidden_size`.
        intermediate_size: width of the feed-forward block (4H in BERT).
        hidden_act: feed-forward activation (`gelu` is BERT's exact erf GELU).
        hidden_dropout_prob / attention_probs_dropout_prob: dropout on hidden states / attention weights.
        max_position_embeddings: longest sequence the learned position table covers.
        type_vocab_size: number of segment ids (2: sentence A and B).
        initializer_range: std of the truncated-free normal init of every weight matrix.
        layer_norm_eps: LayerNorm epsilon (1e-12 as in BERT).
        pad_token_id: id of `[PAD]`; its embedding row starts at zero.
        classifier_dropout: dropout before classification heads (defaults to `hidden_dropout_prob`).
        pre_layer_norm: LayerNorm on each sublayer's input instead of after the residual sum, plus one after the
            last layer (GPT-2's pre-LN; Cramming). Trains stably at higher learning rates. BERT: false.
        gated_feed_forward: act(x W) * (x V) in the feed-forward block (GEGLU with gelu, SwiGLU with silu; Shazeer
            2020). BERT: false.
        attention_bias / mlp_bias: biases of the attention / feed-forward linear layers (false in Cramming,
            ModernBERT). BERT: true.
        sparse_prediction: with MLM labels, run the MLM head only at the masked positions; `prediction_logits` /
            `logits` are then (M, vocab), one row per masked position, instead of (B, S, vocab). The loss is the
            same number for a fraction of the work (3-4x faster steps for a small model), so `Trainer` and
            `run_mlm.py` users get the speed by setting this one value. Without labels (inference) the head is dense.

    Use `MiniBertConfig.from_preset("mini", vocab_size=8192)` for the sizes of Google's BERT family.
    """

    model_type = "minibert"

    # A plain __init__ rather than transformers 5's dataclass fields: the same code then runs on transformers 4.x,
    # whose configs are classes of this shape (5.x keeps a subclass's own __init__).
    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        pad_token_id: int | None = 0,
        classifier_dropout: float | None = None,
        tie_word_embeddings: bool = True,
        sparse_prediction: bool = False,
        pre_layer_norm: bool = False,
        gated_feed_forward: bool = False,
        attention_bias: bool = True,
        mlp_bias: bool = True,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.classifier_dropout = classifier_dropout
        self.sparse_prediction = sparse_prediction
        self.pre_layer_norm = pre_layer_norm
        self.gated_feed_forward = gated_feed_forward
        self.attention_bias = attention_bias
        self.mlp_bias = mlp_bias
        super().__init__(pad_token_id=pad_token_id, tie_word_embeddings=tie_word_embeddings, **kwargs)
        self._check()

    def _check(self) -> None:
        """Reject values no model can be built from, with a message that names the field."""
        for name in SIZE_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"MiniBertConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"MiniBertConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ValueError(
                f"MiniBertConfig.hidden_act {self.hidden_act!r} is not supported; choose one of {SUPPORTED_ACTIVATIONS}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            if value is None and name == "classifier_dropout":
                continue  # falls back to hidden_dropout_prob
            if not _is_number(value) or not 0.0 <= value < 1.0:
                raise ValueError(f"MiniBertConfig.{name} must be a number in [0, 1), got {value!r}")
        if not _is_number(self.layer_norm_eps) or not self.layer_norm_eps > 0:
            raise ValueError(f"MiniBertConfig.layer_norm_eps must be a positive number, got {self.layer_norm_eps!r}")
        if not _is_number(self.initializer_range) or not self.initializer_range >= 0:
            raise ValueError(
                f"MiniBertConfig.initializer_range must be a non-negative number, got {self.initializer_range!r}"
            )
        for name in ("sparse_prediction", *ARCHITECTURE_FIELDS):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"MiniBertConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"MiniBertConfig.pad_token_id ({self.pad_token_id}) must lie in the vocabulary [0, {self.vocab_size})"
            )

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        # `from_pretrained(path, hidden_size=...)` sets such overrides after construction: check them as well.
        result = super().from_dict(config_dict, **kwargs)
        (result[0] if isinstance(result, tuple) else result)._check()
        return result

    def non_bert_choices(self) -> dict:
        """The architecture fields whose value is not BERT's ({} for a BERT)."""
        return {k: getattr(self, k) for k, bert in ARCHITECTURE_FIELDS.items() if getattr(self, k) != bert}

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MiniBertConfig":
        """A config of Google's BERT family by name (tiny, mini, small, medium, base, large), plus overrides."""
        if name not in MODEL_SIZES:
            raise ValueError(f"unknown model size {name!r}; choose one of {', '.join(MODEL_SIZES)}")
        layers, hidden = MODEL_SIZES[name]
        sizes = dict(
            num_hidden_layers=layers,
            hidden_size=hidden,
            num_attention_heads=hidden // 64,
            intermediate_size=4 * hidden,
        )
        return cls(**{**sizes, **overrides})


__all__ = ["MiniBertConfig", "MODEL_SIZES", "SIZE_FIELDS", "ARCHITECTURE_FIELDS"]
