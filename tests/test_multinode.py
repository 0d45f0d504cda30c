"""Two nodes on one machine: two `accelerate launch` processes, `--num_machines 2 --machine_rank 0/1
--main_process_ip 127.0.0.1`, one CPU (gloo) process each, on a free port.

What multi-node means for the data (pretrain/data.py `_prepare_distributed`): with no prepared cache, global
rank 0 prepares first, then each other node's first process finds that cache (a shared --data_cache_dir) or
prepares its own (a node-local one). Either way the run trains to the same weights as one process with the same
global batch (the oracle), and each cache ends up holding one complete copy of every entry.
"""

import json
import os
import socket
import subprocess

import pytest
from conftest import (
    NO_DROPOUT,
    TINY_MODEL,
    accelerate_launch,
    args_for,
    assert_same_weights,
    cli_env,
    records,
    run,
    topics_corpus,
    weights,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return topics_corpus(tmp_path_factory, "multinode_corpus", n_docs=60, seed=5)


COMMON = [
    "--max_train_steps",
    6,
    "--logging_steps",
    1,
    "--eval_steps",
    3,
    "--config_overrides",
    TINY_MODEL + NO_DROPOUT,
]


@pytest.fixture(scope="module")
def one_process(corpus, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("one_process")
    run(args_for(corpus, str(out / "cache"), out, *COMMON))  # 16 sequences a step
    return str(out)


def cache_entries(cache) -> list[str]:
    return sorted(name.split("-")[0] for name in os.listdir(cache) if name != "demo")


@pytest.mark.parametrize("cache", ["shared", "node-local"])
def test_two_nodes_match_one_process(cache, corpus, one_process, tmp_path):
    port = free_port()
    caches = [tmp_path / "cache"] * 2 if cache == "shared" else [tmp_path / "cache-node0", tmp_path / "cache-node1"]
    for directory in caches:  # exists beforehand: see test_prepare.test_a_launch_without_a_cache_refuses_...
        directory.mkdir(exist_ok=True)
    nodes = []
    for rank in (0, 1):
        command = accelerate_launch(
            "--machine_rank",
            rank,
            "--main_process_ip",
            "127.0.0.1",
            "-m",
            "pretrain",
            *args_for(corpus, caches[rank], tmp_path / "out", *COMMON, per_device_train_batch_size=8),
            num_machines=2,
            port=port,
        )
        nodes.append(
            subprocess.Popen(command, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    outputs = []
    try:
        for node in nodes:
            outputs.append(node.communicate(timeout=240))
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-3000:]

    two = json.load(open(tmp_path / "out" / "all_results.json"))
    one = json.load(open(os.path.join(one_process, "all_results.json")))
    assert two["num_processes"] == 2 and one["num_processes"] == 1
    assert two["global_batch_size"] == one["global_batch_size"] == 16
    assert two["train_tokens"] == one["train_tokens"]
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-5)
    for a, b in zip(records(tmp_path / "out"), records(one_process), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert_same_weights(weights(tmp_path / "out"), weights(one_process), exact=False)
    for directory in set(caches):  # one complete copy per cache directory, no work directories left behind
        assert cache_entries(directory) == ["documents", "pairs", "tokenizer"]
