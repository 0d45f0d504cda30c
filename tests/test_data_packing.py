"""MLM-only packing (`pretrain.packing`): consecutive documents' sentences, in order, into `[CLS] ... [SEP]` runs.

Token id = doc * 1_000_000 + sentence * 1_000 + position, so a run says where each of its tokens came from; the
oracle is the documents themselves.
"""

import random

from pretrain.packing import pack_segments

SEP = -2


def make_documents(n_docs, seed=0, sentences=(1, 12), words=(3, 30)):
    rng = random.Random(seed)
    return [
        [[d * 1_000_000 + s * 1_000 + k for k in range(rng.randint(*words))] for s in range(rng.randint(*sentences))]
        for d in range(n_docs)
    ]


def test_runs_hold_the_text_in_order_once_with_a_sep_between_documents():
    documents = make_documents(60)
    runs = pack_segments(documents, max_seq_length=64, short_seq_prob=0.0, rng=random.Random(0), sep_id=SEP)
    assert all(2 <= len(run) + 2 <= 64 for run in runs)
    tokens = [t for run in runs for t in run]
    # Every token once, in corpus order; a [SEP] exactly where a document ends inside a run.
    assert [t for t in tokens if t != SEP] == [t for doc in documents for sentence in doc for t in sentence]
    for run in runs:
        assert run[0] != SEP and run[-1] != SEP
        for before, sep, after in zip(run, run[1:], run[2:]):
            if sep == SEP:
                assert after // 1_000_000 == before // 1_000_000 + 1 and after % 1_000_000 == 0
    # Runs end on sentence boundaries (a sentence that does not fit starts the next run).
    assert all(following[0] % 1_000 == 0 for following in runs[1:])
    # Full runs: the text fills them (short documents do not leave them half empty).
    assert sum(len(run) for run in runs) / len(runs) > 0.8 * 62


def test_short_seq_prob_makes_a_share_of_shorter_runs_and_long_sentences_are_cut():
    documents = make_documents(400, seed=1)
    long = pack_segments(documents, 64, 0.0, random.Random(0), SEP)
    short = pack_segments(documents, 64, 0.5, random.Random(0), SEP)
    assert len(short) > 1.2 * len(long)
    cut = pack_segments([[list(range(100))], [list(range(5))]], 32, 0.0, random.Random(0), SEP)
    assert cut == [list(range(30)), list(range(5))]


def test_the_same_rng_gives_the_same_runs_and_another_seed_other_targets():
    documents = make_documents(100, seed=2)
    first = pack_segments(documents, 64, 0.3, random.Random(5), SEP)
    assert pack_segments(documents, 64, 0.3, random.Random(5), SEP) == first
    assert pack_segments(documents, 64, 0.3, random.Random(6), SEP) != first
