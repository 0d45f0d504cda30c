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

from .cli import HubArguments, UserError


def save_checkpoint(model: PreTrainedModel, tokenizer, output_dir: str, model_card: str | None = None) -> str:
    """Write a Hub-ready checkpoint of `model` (+ tokenizer and card) to `output_dir`.

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
            _save_tokenizer(tokenizer, staging)
        if model_card is not None:
            with open(os.path.join(staging, "README.md"), "w", encoding="utf-8") as f:
                f.write(model_card)
        os.makedirs(output_dir, exist_ok=True)
        for name in os.listdir(staging):
            os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def _save_tokenizer(tokenizer, directory: str) -> None:
    tokenizer.save_pretrained(directory)
    # A tokenizer trained with `tokenizers` and wrapped generically is saved as `TokenizersBackend`, a class
    # older transformers and other libraries cannot load. BERT's WordPiece set-up is `BertTokenizer`.
    config_file = os.path.join(directory, "tokenizer_config.json")
    if os.path.isfile(config_file):
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
        if config.get("tokenizer_class") in (None, "TokenizersBackend", "PreTrainedTokenizerFast"):
            config["tokenizer_class"] = "BertTokenizer"
            with open(config_file, "w", encoding="utf-8") as f:
                json.dump(config, f, indent=2, ensure_ascii=False)


def push_to_hub(output_dir: str, hub_args: HubArguments, api=None, commit_message: str = "Upload MiniBERT") -> str:
    """Upload `output_dir` to `hub_args.hub_model_id` with huggingface_hub; returns the repository URL.

    `api` is an `HfApi`-like object (tests pass a recorder); by default a real `HfApi(token=...)`.
    Training state (`checkpoints/`, TensorBoard runs) stays local.
    """
    if not hub_args.hub_model_id:
        raise UserError("--push_to_hub needs --hub_model_id")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=hub_args.hub_token)
    try:
        repo = api.create_repo(hub_args.hub_model_id, exist_ok=True, private=hub_args.hub_private_repo)
        api.upload_folder(
            repo_id=hub_args.hub_model_id,
            folder_path=output_dir,
            commit_message=commit_message,
            ignore_patterns=["checkpoints/*", "runs/*", "tensorboard/*", ".saving-*", "*.tmp"],
        )
    except UserError:
        raise
    except Exception as e:  # network, auth, permissions: the checkpoint on disk is untouched
        raise UserError(f"upload to {hub_args.hub_model_id} failed ({type(e).__name__}: {e}); {output_dir} is intact") from None
    return str(getattr(repo, "url", repo) or f"https://huggingface.co/{hub_args.hub_model_id}")
