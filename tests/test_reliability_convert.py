"""`minibert-convert` never writes over what it was not asked to replace, and never loads pickled weights."""

import json
import os

import torch
from conftest import TINY, Payload, one_error_line, snapshot

from minibert import MiniBertConfig, MiniBertForPreTraining
from minibert.convert import cli


def minibert_checkpoint(path) -> str:
    torch.manual_seed(0)
    MiniBertForPreTraining(MiniBertConfig(**TINY)).save_pretrained(path)
    return str(path)


def test_a_non_empty_destination_needs_overwrite_and_is_then_replaced_whole(tmp_path, capsys):
    src = minibert_checkpoint(tmp_path / "src")
    assert cli([src, str(tmp_path / "dst"), "--to", "bert"]) == 0
    (tmp_path / "dst" / "README.md").write_text("the old card")
    (tmp_path / "dst" / "all_results.json").write_text("{}")
    before = snapshot(tmp_path / "dst")
    capsys.readouterr()
    assert cli([src, str(tmp_path / "dst"), "--to", "bert"]) == 2
    assert "--overwrite" in one_error_line(capsys.readouterr().err)
    assert snapshot(tmp_path / "dst") == before
    assert cli([src, str(tmp_path / "dst"), "--to", "bert", "--overwrite"]) == 0
    names = set(os.listdir(tmp_path / "dst"))
    assert "README.md" not in names and "all_results.json" not in names  # no mix of the old and the new
    assert json.load(open(tmp_path / "dst" / "config.json"))["model_type"] == "bert"


def test_overwrite_replaces_only_a_checkpoint_folder(tmp_path, capsys):
    src = minibert_checkpoint(tmp_path / "src")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert cli([src, str(mine), "--to", "bert", "--overwrite"]) == 2
    assert "not a model checkpoint folder" in one_error_line(capsys.readouterr().err)
    assert os.listdir(mine) == ["notes.txt"]


def test_an_unwritable_destination_is_one_error_line(tmp_path, capsys):
    src = minibert_checkpoint(tmp_path / "src")
    capsys.readouterr()
    assert cli([src, "/proc/minibert-convert", "--to", "bert"]) == 2
    assert "/proc" in one_error_line(capsys.readouterr().err)


def test_pickled_weights_are_never_loaded(tmp_path, capsys):
    """A folder with only pytorch_model.bin (here a crafted pickle): refused unread, with how to convert it."""
    src = minibert_checkpoint(tmp_path / "src")
    os.remove(os.path.join(src, "model.safetensors"))
    marker = tmp_path / "pickle-ran"
    torch.save({"weights": Payload(marker)}, os.path.join(src, "pytorch_model.bin"))
    capsys.readouterr()
    assert cli([src, str(tmp_path / "dst"), "--to", "bert"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "pytorch_model.bin" in line and "save_pretrained" in line and "weights_only=False" not in line
    assert not marker.exists()
    assert not (tmp_path / "dst").exists()
