"""minibert: a BERT encoder that is a first-class transformers model.

Importing this package registers every MiniBERT class with transformers' Auto classes, so `AutoModel`,
`AutoModelForMaskedLM`, `pipeline("fill-mask")`, ... load minibert checkpoints without `trust_remote_code`, and
registers "minibert" with the clients that look a model up by its type (`minibert.clients`: peft's default targets).
"""

import transformers

from . import modeling_minibert
from .clients import register_clients
from .configuration_minibert import MODEL_SIZES, MiniBertConfig
from .modeling_minibert import *  # noqa: F403 (the model classes: modeling_minibert.__all__)
from .modeling_minibert import AUTO_MAP

# Each Auto class -> the MiniBERT class it loads, read from the one list of them: the `auto_map` that
# modeling_minibert writes into every checkpoint ("AutoModelForMaskedLM": "modeling_minibert.MiniBertForMaskedLM").
AUTO_CLASSES = {
    getattr(transformers, auto): getattr(modeling_minibert, target.rpartition(".")[2])
    for auto, target in AUTO_MAP.items()
    if auto != "AutoConfig"
}

transformers.AutoConfig.register(MiniBertConfig.model_type, MiniBertConfig, exist_ok=True)
for _auto, _model in AUTO_CLASSES.items():
    _auto.register(MiniBertConfig, _model, exist_ok=True)
register_clients()

__all__ = ["AUTO_MAP", "AUTO_CLASSES", "MODEL_SIZES", "MiniBertConfig"]
__all__ += modeling_minibert.__all__
