"""`DataCollatorForPreTraining`: masking statistics, what must never be masked, whole words, determinism.

The oracle for the masking rule is statistics over many tokens, and transformers' own
`DataCollatorForLanguageModeling` on the same batch.
"""

import numpy as np
import pytest
import torch
from transformers import BertTokenizer, DataCollatorForLanguageModeling

from pretrain.collator import DataCollatorForPreTraining, attention_groups

WORDS = [f"w{i}" for i in range(200)]
PIECES = [f"##p{i}" for i in range(50)]


@pytest.fixture(scope="module")
def tokenizer():
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *PIECES])}
    return BertTokenizer(vocab=vocab)


def make_examples(tokenizer, n, seed=0, min_len=20, max_len=60, pieces=False):
    rng = np.random.default_rng(seed)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    word_ids = [tokenizer.convert_tokens_to_ids(w) for w in WORDS]
    piece_ids = [tokenizer.convert_tokens_to_ids(p) for p in PIECES]
    word_ids, piece_ids = np.array(word_ids), np.array(piece_ids)
    examples = []
    for k in range(n):

        def segment(length):
            if not pieces:
                return rng.choice(word_ids, size=length).tolist()
            counts = rng.integers(0, 3, size=length).tolist()  # `##` pieces after each word
            extra = iter(rng.choice(piece_ids, size=sum(counts)).tolist())
            out = []
            for word, n_pieces in zip(rng.choice(word_ids, size=length).tolist(), counts):
                out += [word, *(next(extra) for _ in range(n_pieces))]
            return out

        a, b = segment(int(rng.integers(min_len, max_len))), segment(int(rng.integers(min_len, max_len)))
        examples.append(
            {
                "input_ids": [cls, *a, sep, *b, sep],
                "token_type_ids": [0] * (len(a) + 2) + [1] * (len(b) + 1),
                "next_sentence_label": int(rng.integers(0, 2)),
                "example_id": k,
            }
        )
    return examples


def test_batch_layout_padding_and_labels(tokenizer):
    examples = make_examples(tokenizer, 8)
    batch = DataCollatorForPreTraining(tokenizer, seed=0)(examples)
    assert set(batch) == {
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "labels",
        "next_sentence_label",
        "token_indices",
        "masked_positions",
    }
    plain = DataCollatorForPreTraining(tokenizer, seed=0, unpadded=False)(examples)
    assert set(plain) == set(batch) - {"token_indices", "masked_positions"}
    assert all(torch.equal(plain[k], batch[k]) for k in plain)  # the fast-path keys change nothing else
    # The fast path's inputs: flat positions of real / labelled tokens, bucketed with the one-past-the-end value.
    flat = batch["input_ids"].numel()
    for key, chosen in (("token_indices", batch["attention_mask"] == 1), ("masked_positions", batch["labels"] != -100)):
        n = int(chosen.sum())
        assert len(batch[key]) % 64 == 0 and n <= len(batch[key]) < n + 64
        assert torch.equal(batch[key][:n], chosen.flatten().nonzero().squeeze(1))
        assert (batch[key][n:] == flat).all()
    longest = max(len(e["input_ids"]) for e in examples)
    assert batch["input_ids"].shape == (8, longest)
    assert all(t.dtype == torch.long for t in batch.values())
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (longest - n)
        assert batch["token_type_ids"][row, :n].tolist() == example["token_type_ids"]
        assert (batch["input_ids"][row, n:] == tokenizer.pad_token_id).all()
        labels = batch["labels"][row]
        masked = labels != -100
        # Labels hold the original token exactly where one was chosen.
        assert (labels[masked] == torch.tensor(example["input_ids"])[masked[:n]]).all()
    assert batch["next_sentence_label"].tolist() == [e["next_sentence_label"] for e in examples]


def test_pad_to_multiple_of(tokenizer):
    examples = make_examples(tokenizer, 4)
    batch = DataCollatorForPreTraining(tokenizer, pad_to_multiple_of=64, seed=0)(examples)
    assert batch["input_ids"].shape[1] % 64 == 0


def masking_statistics(tokenizer, collator, examples):
    batch = collator(examples)
    original = torch.full_like(batch["input_ids"], tokenizer.pad_token_id)
    for row, e in enumerate(examples):
        original[row, : len(e["input_ids"])] = torch.tensor(e["input_ids"])
    special = torch.isin(original, torch.tensor(tokenizer.all_special_ids))
    chosen = batch["labels"] != -100
    return batch, original, special, chosen


def test_mask_rate_and_80_10_10_split(tokenizer):
    examples = make_examples(tokenizer, 2000, seed=1)
    batch, original, special, chosen = masking_statistics(
        tokenizer, DataCollatorForPreTraining(tokenizer, seed=3), examples
    )
    maskable = int((~special).sum())
    assert maskable > 150_000
    rate = chosen.sum().item() / maskable
    assert abs(rate - 0.15) < 0.005, rate
    inputs = batch["input_ids"][chosen]
    targets = original[chosen]
    as_mask = (inputs == tokenizer.mask_token_id).float().mean().item()
    unchanged = (inputs == targets).float().mean().item()
    random_ = 1 - as_mask - unchanged
    assert abs(as_mask - 0.8) < 0.01 and abs(unchanged - 0.1) < 0.01 and abs(random_ - 0.1) < 0.01
    # Random replacements are ordinary tokens, never [CLS]/[SEP]/[PAD]/[MASK]/[UNK].
    replaced = inputs[(inputs != tokenizer.mask_token_id) & (inputs != targets)]
    assert not torch.isin(replaced, torch.tensor(tokenizer.all_special_ids)).any()


def test_same_rates_as_transformers_collator(tokenizer):
    examples = make_examples(tokenizer, 1000, seed=2)
    ours = masking_statistics(tokenizer, DataCollatorForPreTraining(tokenizer, seed=0), examples)
    torch.manual_seed(0)
    reference_collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    reference = reference_collator([{"input_ids": e["input_ids"]} for e in examples])
    reference_rate = (reference["labels"] != -100).sum().item() / int((~ours[2]).sum())
    our_rate = ours[3].sum().item() / int((~ours[2]).sum())
    assert abs(our_rate - reference_rate) < 0.006


def test_specials_and_padding_are_never_masked(tokenizer):
    examples = make_examples(tokenizer, 300, seed=4, min_len=1, max_len=40)
    collator = DataCollatorForPreTraining(tokenizer, mlm_probability=0.9, seed=0)
    batch, original, special, chosen = masking_statistics(tokenizer, collator, examples)
    assert not chosen[special].any()
    assert (batch["input_ids"][special] == original[special]).all()  # [CLS]/[SEP]/[PAD] stay in place
    assert chosen[~special].float().mean() > 0.85


def test_whole_word_masking_masks_whole_words(tokenizer):
    examples = make_examples(tokenizer, 1500, seed=5, pieces=True)
    collator = DataCollatorForPreTraining(tokenizer, whole_word_mask=True, seed=0)
    batch, original, special, chosen = masking_statistics(tokenizer, collator, examples)
    is_piece = torch.tensor([t.startswith("##") for t in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))])
    continuation = is_piece[original] & ~special
    # A `##` piece is chosen exactly when the token before it (same word) is.
    previous_chosen = torch.roll(chosen, 1, dims=1)
    assert (chosen[continuation] == previous_chosen[continuation]).all()
    assert continuation.sum() > 20_000 and chosen[continuation].any()
    rate = chosen.sum().item() / int((~special).sum())
    assert abs(rate - 0.15) < 0.01  # every token's word is chosen with probability 0.15
    inputs = batch["input_ids"][chosen]
    assert abs((inputs == tokenizer.mask_token_id).float().mean().item() - 0.8) < 0.015


def test_masks_depend_on_seed_epoch_and_example_only(tokenizer):
    examples = make_examples(tokenizer, 16, seed=6)
    collator = DataCollatorForPreTraining(tokenizer, seed=11)
    whole = collator(examples)
    # The same example masked alone, or in another batch order, gets the same mask (resume / multi-process).
    half = collator(examples[8:][::-1])
    longest = half["input_ids"].shape[1]
    for row, source in enumerate(range(15, 7, -1)):
        n = len(examples[source]["input_ids"])
        assert torch.equal(half["input_ids"][row, :n], whole["input_ids"][source, :n])
        assert torch.equal(half["labels"][row, :n], whole["labels"][source, :n])
    assert longest <= whole["input_ids"].shape[1]
    collator.set_epoch(1)
    assert not torch.equal(collator(examples)["labels"], whole["labels"])  # new masks every epoch
    collator.set_epoch(0)
    assert torch.equal(collator(examples)["labels"], whole["labels"])
    collator.set_epoch(-1)  # any integer is an epoch, e.g. a loop's "evaluation" value
    assert not torch.equal(collator(examples)["labels"], whole["labels"])
    assert not torch.equal(DataCollatorForPreTraining(tokenizer, seed=12)(examples)["labels"], whole["labels"])


def test_without_example_id_the_key_is_the_content(tokenizer):
    examples = [{k: v for k, v in e.items() if k != "example_id"} for e in make_examples(tokenizer, 6, seed=7)]
    collator = DataCollatorForPreTraining(tokenizer, seed=0)
    assert torch.equal(collator(examples)["labels"], collator(examples)["labels"])


def test_unseeded_collator_follows_torch_global_rng(tokenizer):
    examples = make_examples(tokenizer, 6, seed=8)
    collator = DataCollatorForPreTraining(tokenizer)
    torch.manual_seed(0)
    first = collator(examples)["labels"]
    second = collator(examples)["labels"]
    torch.manual_seed(0)
    assert torch.equal(collator(examples)["labels"], first)
    assert not torch.equal(first, second)


def test_rejects_bad_probabilities(tokenizer):
    with pytest.raises(ValueError):
        DataCollatorForPreTraining(tokenizer, mlm_probability=1.5)
    with pytest.raises(ValueError):
        DataCollatorForPreTraining(tokenizer, mask_replace_prob=0.8, random_replace_prob=0.3)


@pytest.mark.parametrize("rate, mask, random_", [(0.4, 1.0, 0.0), (0.3, 0.5, 0.25)])
def test_the_run_flags_set_the_masking_rates(tokenizer, rate, mask, random_):
    """--mlm_probability / --mask_replace_prob / --random_replace_prob reach the collator: rates measured on batches."""
    from pretrain.data import DataArguments
    from pretrain.train import build_collator

    data_args = DataArguments(mlm_probability=rate, mask_replace_prob=mask, random_replace_prob=random_)
    examples = make_examples(tokenizer, 1000, seed=4)
    batch, original, special, chosen = masking_statistics(
        tokenizer, build_collator(data_args, tokenizer, seed=1), examples
    )
    assert abs(chosen.sum().item() / int((~special).sum()) - rate) < 0.01
    inputs, targets = batch["input_ids"][chosen], original[chosen]
    as_mask = (inputs == tokenizer.mask_token_id).float().mean().item()
    unchanged = (inputs == targets).float().mean().item()
    assert abs(as_mask - mask) < 0.015 and abs(1 - as_mask - unchanged - random_) < 0.015


def test_bad_replacement_shares_are_one_error_line():
    from minibert.cli import UserError
    from pretrain.data import DataArguments

    with pytest.raises(UserError, match="sum to at most 1"):
        DataArguments(mask_replace_prob=0.9, random_replace_prob=0.2).validate()


# ----------------------------------------------------------------------------------------------------------
# Counter-based masks: a function of (seed, epoch, example), whatever batch, row, reader or worker
# ----------------------------------------------------------------------------------------------------------


def masks_by_example(batches) -> dict[int, tuple]:
    """{example_id: (masked ids, labels)} of collated batches, each row cut to its real tokens."""
    out = {}
    for batch, ids in batches:
        for row, key in enumerate(ids):
            n = int(batch["attention_mask"][row].sum())
            out[int(key)] = (batch["input_ids"][row, :n].tolist(), batch["labels"][row, :n].tolist())
    return out


@pytest.mark.parametrize("whole_word_mask", [False, True])
def test_an_examples_mask_is_the_same_in_any_batch_row_reader_and_worker(tokenizer, whole_word_mask):
    """The oracle is each example collated alone; then batches of 5 and 16 from a shuffled `DataLoader` over
    the Arrow cache (bulk reads, 0 and 2 workers), each of two processes' shards of a global batch (accelerate's
    `prepare_data_loader`), and lists of dicts must give every example the same mask."""
    from datasets import Dataset
    from torch.utils.data import DataLoader

    from pretrain.batches import ArrowExamples

    examples = make_examples(tokenizer, 40, seed=9, pieces=whole_word_mask)
    collator = DataCollatorForPreTraining(tokenizer, seed=5, whole_word_mask=whole_word_mask, mlm_probability=0.3)
    collator.set_epoch(2)
    alone = masks_by_example((collator([e]), [e["example_id"]]) for e in examples)
    assert sum(label != -100 for _, labels in alone.values() for label in labels) > 200

    def collate(batch):
        return collator(batch), batch.example_id

    dataset = ArrowExamples(Dataset.from_list(examples))
    for batch_size, workers in ((5, 0), (16, 2)):
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            num_workers=workers,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(batch_size),
        )
        assert masks_by_example(loader) == alone
    # Two processes: accelerate's shards of a global batch of 8 (each process collates its 4 examples).
    from accelerate.data_loader import prepare_data_loader

    per_process = {}
    for rank in (0, 1):
        loader = DataLoader(dataset, batch_size=8, shuffle=False, collate_fn=collate)
        shard = prepare_data_loader(
            loader, num_processes=2, process_index=rank, put_on_device=False, split_batches=True
        )
        per_process.update(masks_by_example(shard))
    assert per_process == alone
    reordered = examples[::-1][3:] + examples[::-1][:3]
    as_dicts = masks_by_example([(collator(reordered), [e["example_id"] for e in reordered])])
    assert as_dicts == alone


def test_draws_are_independent_across_positions_and_neighbouring_examples(tokenizer):
    """A counter-based generator must not correlate neighbouring counters: the choice of a token is independent
    of the token after it and of the same position in the example with the next `example_id` (rates of joint
    choices match p**2 within sampling error), and every position is chosen at the same rate."""
    examples = make_examples(tokenizer, 3000, seed=10, min_len=60, max_len=61)
    p = 0.3
    batch, _, special, chosen = masking_statistics(
        tokenizer, DataCollatorForPreTraining(tokenizer, seed=0, mlm_probability=p), examples
    )
    maskable = ~special
    both = maskable[:, :-1] & maskable[:, 1:]
    joint = (chosen[:, :-1] & chosen[:, 1:])[both].float().mean().item()
    assert abs(joint - p * p) < 0.006, joint  # ~350k pairs: sd 0.0007
    rows = maskable[:-1] & maskable[1:]
    across = (chosen[:-1] & chosen[1:])[rows].float().mean().item()
    assert abs(across - p * p) < 0.006, across
    per_position = chosen[:, 1:60].sum(0).float() / maskable[:, 1:60].sum(0).float()
    assert (per_position - p).abs().max() < 0.04  # 3,000 draws a position: sd 0.008


def test_bulk_batches_read_the_cache_as_the_dicts_do(tokenizer):
    """`ArrowExamples` over a dataset with an indices mapping (a `select`) and several Arrow chunks gives the
    collator the same batch as the dataset's own rows as dicts."""
    from datasets import Dataset, concatenate_datasets

    from pretrain.batches import ArrowExamples, ExampleBatch

    examples = make_examples(tokenizer, 30, seed=11)
    dataset = concatenate_datasets([Dataset.from_list(examples[:12]), Dataset.from_list(examples[12:])])
    dataset = dataset.select([29, 3, 14, 0, 7, 22, 12, 11])
    indices = [5, 0, 7, 2, 2]
    bulk = ArrowExamples(dataset).__getitems__(indices)
    assert isinstance(bulk, ExampleBatch) and len(bulk) == 5
    assert bulk.example_id.tolist() == [dataset[i]["example_id"] for i in indices]
    collator = DataCollatorForPreTraining(tokenizer, seed=1)
    expected = collator([dataset[i] for i in indices])
    got = collator(bulk)
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_features_as_lists_arrays_or_tensors_give_the_same_batch(tokenizer):
    examples = make_examples(tokenizer, 6, seed=12)
    collator = DataCollatorForPreTraining(tokenizer, seed=2)
    expected = collator(examples)
    for convert in (np.asarray, torch.tensor):
        converted = [
            {**e, "input_ids": convert(e["input_ids"]), "token_type_ids": convert(e["token_type_ids"])}
            for e in examples
        ]
        got = collator(converted)
        assert all(torch.equal(got[k], expected[k]) for k in expected)


def _pairs(groups, group_cost) -> int:
    return sum(g.shape[0] * g.shape[1] ** 2 + group_cost for g in groups)


@pytest.mark.parametrize("seed", range(5))
def test_attention_groups_hold_every_real_token_once_in_its_row(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 129, size=37)
    rows = int(lengths.sum()) + 5  # the bucketed packed layout has fill rows past the real tokens
    groups = attention_groups(lengths, rows)
    first_row = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    members = []
    for group in groups:
        widths = (group < rows).sum(1)
        assert group.shape[1] == widths.max()  # padded to its own longest row only
        for row, width in zip(group, widths):
            assert (row[width:] == rows).all()
            b = int(np.flatnonzero(first_row == row[0])[0])  # the sequence this row holds, token 0 first
            assert lengths[b] == width and (row[:width] == first_row[b] + np.arange(width)).all()
            members.append(b)
    assert sorted(members) == list(range(len(lengths)))  # every sequence in exactly one group
    widths = [g.shape[1] for g in groups]
    assert widths == sorted(widths)


@pytest.mark.parametrize("seed", range(4))
def test_attention_groups_minimise_attention_pairs(seed):
    """The dynamic programme against every split of the sorted lengths into consecutive groups."""
    import itertools

    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 129, size=9)
    cost = 2000
    best = _pairs(attention_groups(lengths, 10**6, cost), cost)
    ordered = np.sort(lengths)
    brute = min(
        sum(len(part) * int(part.max()) ** 2 + cost for part in np.split(ordered, cuts))
        for k in range(len(lengths))
        for cuts in itertools.combinations(range(1, len(lengths)), k)
    )
    assert best == brute
    # Equal lengths (a batch of full rows) stay one padded batch.
    assert len(attention_groups(np.full(32, 128), 4096)) == 1


def test_the_collator_adds_attention_groups_when_asked(tokenizer):
    examples = make_examples(tokenizer, 16, min_len=3, max_len=60)
    plain = DataCollatorForPreTraining(tokenizer, seed=0)(examples)
    grouped = DataCollatorForPreTraining(tokenizer, seed=0, group_attention=True)(examples)
    assert "attention_groups" not in plain
    for key, value in plain.items():
        assert torch.equal(grouped[key], value), key  # the same batch, masks included
    lengths = plain["attention_mask"].sum(1).numpy()
    expected = attention_groups(lengths, len(plain["token_indices"]))
    assert [g.tolist() for g in grouped["attention_groups"]] == [g.tolist() for g in expected]


def test_the_objective_decides_the_next_sentence_labels(tokenizer):
    """The run's objective is passed down, not inferred from the examples: MLM only drops the labels NSP pairs
    carry; MLM + NSP refuses examples without them; unset (library use), they are kept where present."""
    examples = make_examples(tokenizer, 4)
    assert "next_sentence_label" in DataCollatorForPreTraining(tokenizer, seed=0)(examples)
    assert "next_sentence_label" not in DataCollatorForPreTraining(tokenizer, seed=0, next_sentence_prediction=False)(
        examples
    )
    unlabelled = [{k: v for k, v in e.items() if k != "next_sentence_label"} for e in examples]
    with pytest.raises(ValueError, match="no labels"):
        DataCollatorForPreTraining(tokenizer, seed=0, next_sentence_prediction=True)(unlabelled)
