"""transformers' own common model tests, run against every MiniBERT class, plus BERT's per-head checks.

`ModelTesterMixin` is the standard every transformers model is held to (save/load, init, attention outputs,
hidden states, gradient checkpointing, resizing embeddings, offloading, SDPA vs eager, training, ...). It comes
from the source distribution of the installed transformers version (see `transformers_common.py`). The per-head
checks follow `BertModelTester` in transformers' `tests/models/bert/test_modeling_bert.py`: tiny configs, one
`create_and_check_<head>` per head, output shapes and losses.

Nothing is skipped here. The mixin skips, with its own reason (`pytest -rs` lists them), what does not apply to a
BERT encoder (decoder mode and cache, RoPE, mixture-of-experts, composite and vision models, tensor-parallel plans,
transformers' weight-conversion mappings) and what needs hardware or packages this machine lacks (GPUs, flash
attention, DeepSpeed, kernels).
"""

import unittest

import torch
from transformers_common import load_common_module

from minibert import AUTO_CLASSES, MiniBertConfig
from minibert.modeling_minibert import (
    MiniBertForMaskedLM,
    MiniBertForMultipleChoice,
    MiniBertForNextSentencePrediction,
    MiniBertForPreTraining,
    MiniBertForQuestionAnswering,
    MiniBertForSequenceClassification,
    MiniBertForTokenClassification,
    MiniBertModel,
)

common = load_common_module()
ModelTesterMixin, ids_tensor, random_attention_mask = (
    common.ModelTesterMixin,
    common.ids_tensor,
    common.random_attention_mask,
)


class MiniBertModelTester:
    """BertModelTester's sizes and checks (batch 13, seq 7, hidden 32, 2 layers, 4 heads, vocab 99)."""

    def __init__(
        self,
        parent,
        batch_size=13,
        seq_length=7,
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=512,
        type_vocab_size=16,
        num_labels=3,
        num_choices=4,
        type_sequence_label_size=2,
        **config_overrides,
    ):
        self.parent = parent
        self.config_overrides = config_overrides
        self.batch_size, self.seq_length, self.vocab_size = batch_size, seq_length, vocab_size
        self.hidden_size, self.num_hidden_layers = hidden_size, num_hidden_layers
        self.num_attention_heads, self.intermediate_size = num_attention_heads, intermediate_size
        self.max_position_embeddings, self.type_vocab_size = max_position_embeddings, type_vocab_size
        self.num_labels, self.type_sequence_label_size = num_labels, type_sequence_label_size
        self.num_choices = num_choices
        self.is_training = True
        self.use_labels = True

    def get_config(self) -> MiniBertConfig:
        return MiniBertConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            hidden_act="gelu",
            hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1,
            max_position_embeddings=self.max_position_embeddings,
            type_vocab_size=self.type_vocab_size,
            initializer_range=0.02,
            num_labels=self.num_labels,
            **self.config_overrides,
        )

    def prepare_config_and_inputs(self):
        shape = [self.batch_size, self.seq_length]
        input_ids = ids_tensor(shape, self.vocab_size)
        input_mask = random_attention_mask(shape)
        token_type_ids = ids_tensor(shape, self.type_vocab_size)
        sequence_labels = ids_tensor([self.batch_size], self.type_sequence_label_size)
        token_labels = ids_tensor(shape, self.num_labels)
        return self.get_config(), input_ids, token_type_ids, input_mask, sequence_labels, token_labels

    def prepare_config_and_inputs_for_common(self):
        config, input_ids, token_type_ids, input_mask, *_ = self.prepare_config_and_inputs()
        return config, {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": input_mask}

    # ---- one check per head, as BertModelTester has -----------------------------------------------------
    def _run(self, cls, config, *inputs, **labels):
        input_ids, token_type_ids, input_mask = inputs
        model = cls(config).eval()
        with torch.no_grad():
            return model(input_ids, attention_mask=input_mask, token_type_ids=token_type_ids, **labels)

    def create_and_check_model(self, config, input_ids, token_type_ids, input_mask, *_):
        result = self._run(MiniBertModel, config, input_ids, token_type_ids, input_mask)
        B, S, H = self.batch_size, self.seq_length, self.hidden_size
        self.parent.assertEqual(result.last_hidden_state.shape, (B, S, H))
        self.parent.assertEqual(result.pooler_output.shape, (B, H))
        model = MiniBertModel(config).eval()
        with torch.no_grad():  # the optional inputs may be left out
            self.parent.assertEqual(model(input_ids, token_type_ids=token_type_ids).last_hidden_state.shape, (B, S, H))
            self.parent.assertEqual(model(input_ids).last_hidden_state.shape, (B, S, H))

    def create_and_check_for_masked_lm(self, config, input_ids, token_type_ids, input_mask, _, token_labels):
        result = self._run(MiniBertForMaskedLM, config, input_ids, token_type_ids, input_mask, labels=token_labels)
        self.parent.assertEqual(result.logits.shape, (self.batch_size, self.seq_length, self.vocab_size))
        self.parent.assertEqual(result.loss.shape, ())

    def create_and_check_for_next_sequence_prediction(
        self, config, input_ids, token_type_ids, input_mask, sequence_labels, _
    ):
        result = self._run(
            MiniBertForNextSentencePrediction, config, input_ids, token_type_ids, input_mask, labels=sequence_labels
        )
        self.parent.assertEqual(result.logits.shape, (self.batch_size, 2))
        self.parent.assertEqual(result.loss.shape, ())

    def create_and_check_for_pretraining(
        self, config, input_ids, token_type_ids, input_mask, sequence_labels, token_labels
    ):
        result = self._run(
            MiniBertForPreTraining,
            config,
            input_ids,
            token_type_ids,
            input_mask,
            labels=token_labels,
            next_sentence_label=sequence_labels,
        )
        self.parent.assertEqual(result.prediction_logits.shape, (self.batch_size, self.seq_length, self.vocab_size))
        self.parent.assertEqual(result.seq_relationship_logits.shape, (self.batch_size, 2))
        self.parent.assertEqual(result.loss.shape, ())
        torch.testing.assert_close(result.loss, result.mlm_loss + result.nsp_loss)

    def create_and_check_for_question_answering(
        self, config, input_ids, token_type_ids, input_mask, sequence_labels, _
    ):
        result = self._run(
            MiniBertForQuestionAnswering,
            config,
            input_ids,
            token_type_ids,
            input_mask,
            start_positions=sequence_labels,
            end_positions=sequence_labels,
        )
        self.parent.assertEqual(result.start_logits.shape, (self.batch_size, self.seq_length))
        self.parent.assertEqual(result.end_logits.shape, (self.batch_size, self.seq_length))
        self.parent.assertEqual(result.loss.shape, ())

    def create_and_check_for_sequence_classification(
        self, config, input_ids, token_type_ids, input_mask, sequence_labels, _
    ):
        config.num_labels = self.num_labels
        result = self._run(
            MiniBertForSequenceClassification, config, input_ids, token_type_ids, input_mask, labels=sequence_labels
        )
        self.parent.assertEqual(result.logits.shape, (self.batch_size, self.num_labels))
        self.parent.assertEqual(result.loss.shape, ())

    def create_and_check_for_token_classification(self, config, input_ids, token_type_ids, input_mask, _, token_labels):
        config.num_labels = self.num_labels
        result = self._run(
            MiniBertForTokenClassification, config, input_ids, token_type_ids, input_mask, labels=token_labels
        )
        self.parent.assertEqual(result.logits.shape, (self.batch_size, self.seq_length, self.num_labels))
        self.parent.assertEqual(result.loss.shape, ())

    def create_and_check_for_multiple_choice(self, config, input_ids, token_type_ids, input_mask, sequence_labels, _):
        def choices(x):  # (B, S) -> (B, C, S), as BertModelTester builds them
            return x.unsqueeze(1).expand(-1, self.num_choices, -1).contiguous()

        inputs = (choices(input_ids), choices(token_type_ids), choices(input_mask))
        result = self._run(MiniBertForMultipleChoice, config, *inputs, labels=sequence_labels)
        self.parent.assertEqual(result.logits.shape, (self.batch_size, self.num_choices))
        self.parent.assertEqual(result.loss.shape, ())


# Common tests that do not apply, each with its reason. Everything else in ModelTesterMixin runs.
SKIPS = {
    "test_model_is_small": "checks the tester's size only",
}


class MiniBertModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = tuple(AUTO_CLASSES.values())

    def setUp(self):
        self.model_tester = MiniBertModelTester(self)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        """transformers finds a class's labels from its Auto mappings, which name only transformers' own classes."""
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=False)
        if model_class is MiniBertForMultipleChoice:  # (B, C, S): every tensor once per choice
            C = self.model_tester.num_choices
            inputs_dict = {
                k: v.unsqueeze(1).expand(-1, C, *v.shape[1:]).contiguous() if torch.is_tensor(v) and v.ndim > 1 else v
                for k, v in inputs_dict.items()
            }
        if return_labels:
            B, S = self.model_tester.batch_size, self.model_tester.seq_length
            if model_class in (MiniBertForPreTraining, MiniBertForMaskedLM, MiniBertForTokenClassification):
                inputs_dict["labels"] = torch.zeros(B, S, dtype=torch.long)
            if model_class is MiniBertForPreTraining:
                inputs_dict["next_sentence_label"] = torch.zeros(B, dtype=torch.long)
            if model_class in (
                MiniBertForSequenceClassification,
                MiniBertForNextSentencePrediction,
                MiniBertForMultipleChoice,
            ):
                inputs_dict["labels"] = torch.zeros(B, dtype=torch.long)
            if model_class is MiniBertForQuestionAnswering:
                inputs_dict["start_positions"] = torch.zeros(B, dtype=torch.long)
                inputs_dict["end_positions"] = torch.zeros(B, dtype=torch.long)
        return inputs_dict

    # transformers runs its training tests on the classes with a loss only: it leaves out the base models it finds in
    # MODEL_MAPPING_NAMES, which names BertModel but not MiniBertModel. The same selection, stated here:
    def _heads_only(test):
        def run(self):
            self.all_model_classes = tuple(c for c in type(self).all_model_classes if c is not MiniBertModel)
            try:
                getattr(ModelTesterMixin, test.__name__)(self)
            finally:
                del self.all_model_classes

        run.__name__ = test.__name__
        return run

    @_heads_only
    def test_training(self): ...

    @_heads_only
    def test_training_gradient_checkpointing(self): ...

    @_heads_only
    def test_training_gradient_checkpointing_use_reentrant_false(self): ...

    @_heads_only
    def test_training_gradient_checkpointing_use_reentrant_true(self): ...

    def test_config(self):
        config = self.model_tester.get_config()
        again = MiniBertConfig.from_dict(config.to_dict())
        self.assertEqual(again.to_dict(), config.to_dict())
        with self.assertRaisesRegex(ValueError, "num_attention_heads"):  # validation stays on
            MiniBertConfig(hidden_size=30, num_attention_heads=4)

    def test_model(self):
        self.model_tester.create_and_check_model(*self.model_tester.prepare_config_and_inputs())

    def test_for_masked_lm(self):
        self.model_tester.create_and_check_for_masked_lm(*self.model_tester.prepare_config_and_inputs())

    def test_for_next_sequence_prediction(self):
        self.model_tester.create_and_check_for_next_sequence_prediction(*self.model_tester.prepare_config_and_inputs())

    def test_for_pretraining(self):
        self.model_tester.create_and_check_for_pretraining(*self.model_tester.prepare_config_and_inputs())

    def test_for_multiple_choice(self):
        self.model_tester.create_and_check_for_multiple_choice(*self.model_tester.prepare_config_and_inputs())

    def test_for_question_answering(self):
        self.model_tester.create_and_check_for_question_answering(*self.model_tester.prepare_config_and_inputs())

    def test_for_sequence_classification(self):
        self.model_tester.create_and_check_for_sequence_classification(*self.model_tester.prepare_config_and_inputs())

    def test_for_token_classification(self):
        self.model_tester.create_and_check_for_token_classification(*self.model_tester.prepare_config_and_inputs())


class MiniBertWithEveryRecipeKnobTest(MiniBertModelTest):
    """The same common tests with the architecture beyond BERT switched on (pre-LN, gated FFN, no biases)."""

    def setUp(self):
        self.model_tester = MiniBertModelTester(
            self, pre_layer_norm=True, gated_feed_forward=True, attention_bias=False, mlp_bias=False
        )
