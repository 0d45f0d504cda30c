"""minibert: a BERT encoder that is a first-class transformers model.

Importing this package registers every MiniBERT class with transformers' Auto classes, so `AutoModel`,
`AutoModelForMaskedLM`, `pipeline("fill-mask")`, ... load minibert checkpoints without `trust_remote_code`.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForNextSentencePrediction,
    AutoModelForPreTraining,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .configuration_minibert import MODEL_SIZES, MiniBertConfig
from .modeling_minibert import (
    AUTO_MAP,
    MiniBertForMaskedLM,
    MiniBertForNextSentencePrediction,
    MiniBertForPreTraining,
    MiniBertForQuestionAnswering,
    MiniBertForSequenceClassification,
    MiniBertForTokenClassification,
    MiniBertModel,
    MiniBertPreTrainedModel,
)

AUTO_CLASSES = {
    AutoModel: MiniBertModel,
    AutoModelForPreTraining: MiniBertForPreTraining,
    AutoModelForMaskedLM: MiniBertForMaskedLM,
    AutoModelForNextSentencePrediction: MiniBertForNextSentencePrediction,
    AutoModelForSequenceClassification: MiniBertForSequenceClassification,
    AutoModelForTokenClassification: MiniBertForTokenClassification,
    AutoModelForQuestionAnswering: MiniBertForQuestionAnswering,
}

AutoConfig.register(MiniBertConfig.model_type, MiniBertConfig, exist_ok=True)
for _auto, _model in AUTO_CLASSES.items():
    _auto.register(MiniBertConfig, _model, exist_ok=True)

__all__ = [
    "AUTO_MAP",
    "MODEL_SIZES",
    "MiniBertConfig",
    "MiniBertPreTrainedModel",
    *(m.__name__ for m in AUTO_CLASSES.values()),
]
