"""MiniBertForMultipleChoice against transformers' BertForMultipleChoice (the oracle): the same weights, the same
logits and loss to 1e-5 on padded choices, conversion both ways (in memory and on disk), and the Auto class."""

import json

import torch
from conftest import TINY, assert_close, make_batch, real
from transformers import AutoModelForMultipleChoice, BertConfig, BertForMultipleChoice

from minibert import MiniBertForMultipleChoice
from minibert.convert import bert_to_minibert, convert_checkpoint, minibert_to_bert

CHOICES = 3
# Two examples of three choices each, every choice of its own length (one unpadded): (B * C,) rows.
LENGTHS = (11, 7, 4, 9, 5, 10)


def choices_batch(seed=0) -> dict:
    """(B, C, S) inputs, as a multiple-choice collator makes them (each choice padded to the longest)."""
    flat = make_batch(LENGTHS, seed=seed)
    return {k: v.view(-1, CHOICES, v.size(-1)) for k, v in flat.items()}


def bert_pair(seed=0):
    torch.manual_seed(seed)
    bert = BertForMultipleChoice(BertConfig(**TINY)).eval()
    with torch.no_grad():  # non-trivial biases and norms, so that a dropped weight shows
        for p in bert.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return bert, bert_to_minibert(bert).eval()


def test_multiple_choice_matches_bert():
    bert, mini = bert_pair()
    assert type(mini) is MiniBertForMultipleChoice
    batch, labels = choices_batch(), torch.tensor([2, 0])
    with torch.no_grad():
        expected = bert(**batch, labels=labels, output_hidden_states=True)
        actual = mini(**batch, labels=labels, output_hidden_states=True)
    assert actual.logits.shape == (2, CHOICES)
    assert_close(actual.logits, expected.logits, msg="logits")
    assert_close(actual.loss, expected.loss, msg="loss")
    flat = {k: v.view(-1, v.size(-1)) for k, v in batch.items()}
    for i, (a, e) in enumerate(zip(actual.hidden_states, expected.hidden_states, strict=True)):
        assert_close(real(a, flat), real(e, flat), msg=f"hidden_states[{i}]")
    # inputs_embeds (B, C, S, H) instead of ids; and no labels: no loss, a tuple when asked
    embeds = mini.get_input_embeddings()(batch["input_ids"])
    without_ids = {k: v for k, v in batch.items() if k != "input_ids"}
    with torch.no_grad():
        from_embeds = mini(inputs_embeds=embeds, **without_ids)
        as_tuple = mini(**batch, return_dict=False)
        bert_embeds = bert(inputs_embeds=embeds, **without_ids)
    assert from_embeds.loss is None
    assert_close(from_embeds.logits, bert_embeds.logits, msg="logits from inputs_embeds")
    assert torch.equal(as_tuple[0], mini(**batch).logits)


def test_multiple_choice_loss_honours_num_items_in_batch():
    _, mini = bert_pair()
    batch, labels = choices_batch(), torch.tensor([2, 0])
    with torch.no_grad():
        mean = mini(**batch, labels=labels).loss
        share = mini(**batch, labels=labels, num_items_in_batch=8).loss  # two of a step's eight examples
    assert_close(share, mean * 2 / 8)


def test_multiple_choice_converts_both_ways_on_disk(tmp_path, wordpiece_tokenizer):
    bert, mini = bert_pair()
    back = minibert_to_bert(mini)
    assert type(back) is BertForMultipleChoice
    for name, tensor in bert.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name

    bert.save_pretrained(tmp_path / "bert")
    wordpiece_tokenizer.save_pretrained(tmp_path / "bert")
    assert convert_checkpoint(str(tmp_path / "bert"), str(tmp_path / "mini")) == "MiniBertForMultipleChoice"
    config = json.loads((tmp_path / "mini" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForMultipleChoice"] == "modeling_minibert.MiniBertForMultipleChoice"
    loaded = AutoModelForMultipleChoice.from_pretrained(tmp_path / "mini").eval()
    assert type(loaded) is MiniBertForMultipleChoice
    batch = choices_batch(seed=1)
    with torch.no_grad():
        assert_close(loaded(**batch).logits, bert(**batch).logits)
    assert convert_checkpoint(str(tmp_path / "mini"), str(tmp_path / "back"), to="bert") == "BertForMultipleChoice"
    again = BertForMultipleChoice.from_pretrained(tmp_path / "back")
    for name, tensor in bert.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name
