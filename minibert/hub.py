"""Hub-ready checkpoints: what pretraining, fine-tuning and conversion all write, and the upload.

A checkpoint directory holds `model.safetensors`, `config.json` (with the full `auto_map`), the two code files,
the tokenizer (saved as a concrete `BertTokenizer`, which loads everywhere) and a model card `README.md`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from transformers import PreTrainedModel

from .cli import UserError
from .twin import minibert_to_bert


def save_model_folder(
    model: PreTrainedModel, tokenizer, output_dir: str, model_card: str | None = None, extra=None
) -> str:
    """Write a Hub-ready checkpoint of `model` (+ tokenizer and card) to `output_dir`.

    `extra(folder)`, if given, writes more files into the folder before it is moved in place (the conversion's
    sentence-transformers modules).

    Written into a temporary sibling first and moved into place file by file, so a crash mid-save never leaves a
    half-written model where a good one was. Training state files already in `output_dir` (checkpoints/, logs)
    are left alone.
    """
    output_dir = os.path.abspath(output_dir)
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".saving-", dir=parent)
    try:
        model.save_pretrained(staging, safe_serialization=True)
        if tokenizer is not None:
            _save_tokenizer(tokenizer, staging, max_length=getattr(model.config, "max_position_embeddings", None))
            _name_tokenizer_in_config(staging)
        if model_card is not None:
            with open(os.path.join(staging, "README.md"), "w", encoding="utf-8") as f:
                f.write(model_card)
        if extra is not None:
            extra(staging)
        readable_as_umask_allows(staging)
        os.makedirs(output_dir, exist_ok=True)
        for name in os.listdir(staging):
            os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def _name_tokenizer_in_config(directory: str) -> None:
    """config.json names the tokenizer class: transformers 4.x pipelines load a tokenizer for a model type they do
    not know (a remote-code config) only when the config says which class it is."""
    tokenizer_config = os.path.join(directory, "tokenizer_config.json")
    if not os.path.isfile(tokenizer_config):
        return
    with open(tokenizer_config, encoding="utf-8") as f:
        tokenizer_class = json.load(f).get("tokenizer_class")
    config_file = os.path.join(directory, "config.json")
    if tokenizer_class and os.path.isfile(config_file):
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
        config["tokenizer_class"] = tokenizer_class
        _write_config(config_file, config)


def readable_as_umask_allows(directory: str) -> None:
    """Files as open() would create them (0666 less the umask): some writers (safetensors, temporary files) use 0600,
    and a checkpoint in a shared folder must be readable by the team. `directory` itself too (mkdtemp makes 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)


BERT_TWIN_DIR = "bert"


def save_bert_twin(model: PreTrainedModel, tokenizer, output_dir: str, model_card: str | None = None) -> str:
    """Write output_dir/bert/: `model` (a MiniBERT class) as the matching transformers BERT class, with
    `model_card` (`minibert.card.render_cards(...).twin`)."""
    return save_model_folder(
        minibert_to_bert(model), tokenizer, os.path.join(output_dir, BERT_TWIN_DIR), model_card=model_card
    )


def remove_bert_twin(output_dir: str) -> None:
    """A run that writes no twin removes the one an earlier run left in its (checked, own) output folder: that twin
    holds the earlier weights."""
    shutil.rmtree(os.path.join(output_dir, BERT_TWIN_DIR), ignore_errors=True)


# Strings that exercise what a BERT tokenizer's settings change: case, accents, CJK, punctuation, sentence pairs.
_PROBES = [("Hello WORLD, héllo wörld! 中文 [MASK] tokens?", None), ("Paris is nice.", "Is it? Yes, it is.")]


def _save_tokenizer(tokenizer, directory: str, max_length: int | None = None) -> None:
    """Save `tokenizer` so that it loads as the same tokenizer everywhere.

    A tokenizer trained with `tokenizers` and wrapped generically is saved as `TokenizersBackend`, a class older
    transformers and other libraries cannot load. A BERT-style WordPiece tokenizer is saved as `BertTokenizer`, with
    the normalizer's settings (`do_lower_case`, ...) that class rebuilds its pipeline from, and `vocab.txt`; anything
    else as `PreTrainedTokenizerFast`, which reads tokenizer.json as it is. Either way the saved tokenizer is
    reloaded and must encode a few probes exactly as the original does. `model_max_length` is capped at the
    model's `max_position_embeddings`, so pipelines truncate instead of overflowing the position table.
    """
    tokenizer.save_pretrained(directory)
    config_file = os.path.join(directory, "tokenizer_config.json")
    if not os.path.isfile(config_file):
        return
    with open(config_file, encoding="utf-8") as f:
        config = json.load(f)
    if max_length and not (0 < (config.get("model_max_length") or 0) <= max_length):
        config["model_max_length"] = max_length
    backend = getattr(tokenizer, "backend_tokenizer", None)
    generic = config.get("tokenizer_class") in (None, "TokenizersBackend", "PreTrainedTokenizerFast")
    bert_settings = _bert_settings(backend) if generic and backend is not None else None
    if bert_settings is not None:
        # model_input_names stated, not left to each version's class default: transformers 5.0's BertTokenizer
        # would drop token_type_ids.
        bert_settings["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]
        config.update(bert_settings, tokenizer_class="BertTokenizer")
        _write_config(config_file, config)
        _write_vocab(backend, os.path.join(directory, "vocab.txt"))
        if _encodes_like(backend, directory):
            return
        os.remove(os.path.join(directory, "vocab.txt"))
        for key in bert_settings:
            config.pop(key)
    if generic:
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    _write_config(config_file, config)


def _bert_settings(backend) -> dict | None:
    """`BertTokenizer`'s arguments that rebuild `backend` (a `tokenizers.Tokenizer`), or None if it is no BERT."""
    spec = json.loads(backend.to_str())
    model, normalizer, pre = spec.get("model") or {}, spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}
    if model.get("type") != "WordPiece" or model.get("continuing_subword_prefix") != "##":
        return None
    if normalizer.get("type") != "BertNormalizer" or not normalizer.get("clean_text", True):
        return None
    if pre.get("type") != "BertPreTokenizer":
        return None
    return {
        "do_lower_case": bool(normalizer.get("lowercase", True)),
        "strip_accents": normalizer.get("strip_accents"),
        "tokenize_chinese_chars": bool(normalizer.get("handle_chinese_chars", True)),
    }


def _write_vocab(backend, path: str) -> None:
    """vocab.txt, one token per line in id order: what BERT tokenizers outside `tokenizers` read."""
    vocab = sorted(backend.get_vocab(with_added_tokens=False).items(), key=lambda item: item[1])
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{token}\n" for token, _ in vocab)


def _encodes_like(backend, directory: str) -> bool:
    from transformers import AutoTokenizer

    try:
        reloaded = AutoTokenizer.from_pretrained(directory).backend_tokenizer
    except Exception:
        return False
    for a, b in _PROBES:
        x, y = backend.encode(a, b), reloaded.encode(a, b)
        if x.ids != y.ids or x.type_ids != y.type_ids:
            return False
    return True


def _write_config(path: str, config: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)


def push_to_hub(
    output_dir: str,
    repo_id: str | None,
    token: str | None = None,
    private: bool = False,
    api=None,
    commit_message: str = "Upload MiniBERT",
) -> str:
    """Upload `output_dir` to the Hub repository `repo_id` with huggingface_hub; returns the repository URL.

    `api` is an `HfApi`-like object (tests pass a recorder); by default a real `HfApi(token=token)`.
    Training state (`checkpoints/`, TensorBoard runs) stays local.
    """
    if not repo_id:
        raise UserError("--push_to_hub needs --hub_model_id")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    try:
        repo = api.create_repo(repo_id, exist_ok=True, private=private)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=output_dir,
            commit_message=commit_message,
            ignore_patterns=["checkpoints/*", "runs/*", "tensorboard/*", ".saving-*", "*.tmp"],
        )
    except UserError:
        raise
    except Exception as e:  # network, auth, permissions: the checkpoint on disk is untouched
        raise UserError(f"upload to {repo_id} failed ({type(e).__name__}: {e}); {output_dir} is intact") from None
    return str(getattr(repo, "url", repo) or f"https://huggingface.co/{repo_id}")
