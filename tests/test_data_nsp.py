"""NSP pairing as pure functions, on in-memory documents whose token ids say where they come from.

Token id = doc * 1_000_000 + sentence * 1_000 + position: any instance can be traced back to its documents
and sentences without a tokenizer.
"""

import random

import pytest

from pretrain.nsp import (
    IS_NEXT,
    NOT_NEXT,
    create_instances_from_document,
    document_rng,
    instance_features,
    truncate_seq_pair,
)


def make_documents(n_docs, seed=0, sentences=(5, 40), words=(4, 12)):
    rng = random.Random(seed)
    return [
        [[d * 1_000_000 + s * 1_000 + k for k in range(rng.randint(*words))] for s in range(rng.randint(*sentences))]
        for d in range(n_docs)
    ]


def doc_of(token):
    return token // 1_000_000


def all_instances(documents, max_seq_length=64, short_seq_prob=0.1, seed=0, dupes=1):
    out = []
    for index in range(len(documents)):
        for dupe in range(dupes):
            rng = document_rng(seed, dupe, index)
            out += [
                (index, inst)
                for inst in create_instances_from_document(documents, index, max_seq_length, short_seq_prob, rng)
            ]
    return out


def is_contiguous(tokens, document):
    stream = [t for sentence in document for t in sentence]
    if not tokens:
        return False
    start = stream.index(tokens[0])
    return stream[start : start + len(tokens)] == tokens


def test_is_next_half_of_pairs_over_a_large_sample():
    instances = all_instances(make_documents(400), dupes=5)
    assert len(instances) > 8000
    share = sum(not inst.is_random_next for _, inst in instances) / len(instances)
    assert abs(share - 0.5) < 0.03, share


@pytest.mark.parametrize("sentences", [(2, 4), (5, 40)])
def test_pairs_are_consecutive_text_or_come_from_two_documents(sentences):
    documents = make_documents(120, seed=1, sentences=sentences)
    instances = all_instances(documents, max_seq_length=48, short_seq_prob=0.2, dupes=2)
    for index, inst in instances:
        a, b = inst.tokens_a, inst.tokens_b
        assert a and b and len(a) + len(b) <= 48 - 3
        assert {doc_of(t) for t in a} == {index}
        assert is_contiguous(a, documents[index])
        b_docs = {doc_of(t) for t in b}
        assert len(b_docs) == 1
        assert is_contiguous(b, documents[b_docs.pop()])
        if inst.is_random_next:
            assert doc_of(b[0]) != index
        else:
            assert doc_of(b[0]) == index
            stream = [t for s in documents[index] for t in s]
            # B follows A in the document; only truncation (front of B, back of A) can open a gap between them.
            gap = stream.index(b[0]) - stream.index(a[-1]) - 1
            assert gap >= 0
            if len(a) + len(b) < 48 - 3:
                assert gap == 0


def test_every_sentence_of_a_document_is_used_except_possibly_its_last():
    # The NotNext rewind puts unused segments back: nothing in the middle of a document is skipped.
    documents = make_documents(50, seed=2)
    for index, document in enumerate(documents):
        rng = document_rng(0, 0, index)
        instances = create_instances_from_document(documents, index, 512, 0.0, rng)
        used = {
            t // 1_000 for inst in instances for t in inst.tokens_a + ([] if inst.is_random_next else inst.tokens_b)
        }
        sentences = {t // 1_000 for s in document for t in s}
        assert sentences - used <= {max(sentences)}


def test_short_seq_prob_makes_shorter_pairs():
    documents = make_documents(200, seed=3)

    def mean_length(prob):
        instances = all_instances(documents, max_seq_length=128, short_seq_prob=prob)
        return sum(len(i.tokens_a) + len(i.tokens_b) for _, i in instances) / len(instances)

    full, some_short, all_short = mean_length(0.0), mean_length(0.1), mean_length(1.0)
    assert full > some_short > all_short
    assert full > 0.7 * (128 - 3)  # without short targets, only document ends leave sequences short


def test_one_sentence_document_makes_no_pairs_but_serves_as_random_b():
    documents = [[[1, 2, 3]], [[10, 11], [12, 13], [14, 15], [16]]]
    assert create_instances_from_document(documents, 0, 32, 0.0, random.Random(0)) == []
    seen_b = set()
    for seed in range(50):
        for inst in create_instances_from_document(documents, 1, 32, 0.0, random.Random(seed)):
            if inst.is_random_next:
                seen_b.update(inst.tokens_b)
    assert seen_b == {1, 2, 3}


def test_needs_two_documents():
    with pytest.raises(ValueError, match="two documents"):
        create_instances_from_document([[[1], [2]]], 0, 32, 0.0, random.Random(0))


def test_same_seed_same_instances_and_another_seed_others():
    documents = make_documents(30, seed=4)
    first = all_instances(documents, seed=7)
    assert first == all_instances(documents, seed=7)
    assert first != all_instances(documents, seed=8)


def test_truncate_seq_pair_trims_the_longer_side_from_both_ends():
    fronts = backs = 0
    for seed in range(200):
        a, b = list(range(10)), list(range(100, 104))
        truncate_seq_pair(a, b, 10, random.Random(seed))
        assert len(a) + len(b) == 10 and b == [100, 101, 102, 103]  # only the longer side was cut
        assert a == list(range(a[0], a[0] + 6))  # still contiguous
        fronts += a[0] > 0
        backs += a[-1] < 9
    assert fronts > 20 and backs > 20


def test_truncate_seq_pair_is_googles_token_by_token_loop():
    """The oracle: Google's `truncate_seq_pair`, verbatim in effect (one token deleted per draw)."""

    def google(tokens_a, tokens_b, max_num_tokens, rng):
        while len(tokens_a) + len(tokens_b) > max_num_tokens:
            trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
            if rng.random() < 0.5:
                del trunc_tokens[0]
            else:
                trunc_tokens.pop()

    cases = random.Random(1)
    for seed in range(300):
        a = list(range(cases.randint(1, 80)))
        b = list(range(1000, 1000 + cases.randint(1, 80)))
        limit = cases.randint(2, 120)
        expected_a, expected_b, google_rng = list(a), list(b), random.Random(seed)
        google(expected_a, expected_b, limit, google_rng)
        rng = random.Random(seed)
        truncate_seq_pair(a, b, limit, rng)
        assert (a, b) == (expected_a, expected_b)
        assert rng.random() == google_rng.random()  # as many draws: the document's later draws stay the same


def test_truncate_seq_pair_alternates_when_sides_are_equal():
    a, b = list(range(20)), list(range(100, 120))
    truncate_seq_pair(a, b, 10, random.Random(0))
    assert len(a) == 5 and len(b) == 5


def test_instance_features_layout():
    from pretrain.nsp import Instance

    features = instance_features(Instance([5, 6, 7], [8, 9], True), cls_id=2, sep_id=3)
    assert features["input_ids"] == [2, 5, 6, 7, 3, 8, 9, 3]
    assert features["token_type_ids"] == [0, 0, 0, 0, 0, 1, 1, 1]
    assert features["next_sentence_label"] == NOT_NEXT
    assert instance_features(Instance([5], [8], False), 2, 3)["next_sentence_label"] == IS_NEXT
