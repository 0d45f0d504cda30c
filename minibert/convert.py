"""Conversion between transformers' BERT and MiniBERT, both ways.

    minibert-convert SRC DST              # a transformers BERT checkpoint -> the matching MiniBERT checkpoint
    minibert-convert SRC DST --to bert    # and back

The two models have the same module and parameter names and hold the same numbers: conversion is a change of
config (`model_type` "bert" <-> "minibert") with the weights copied as they are, and is exact.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Sequence

import torch
import transformers
from safetensors import SafetensorError, safe_open
from transformers import AutoTokenizer, BertConfig, BertForPreTraining, BertModel, PreTrainedModel

from . import AUTO_CLASSES
from .card import is_hub_id
from .cli import UserError, one_line, run_cli
from .configuration_minibert import SIZE_FIELDS, MiniBertConfig
from .modeling_minibert import MiniBertForPreTraining, MiniBertModel
from .safety import check_writable_dir, read_json_object

# transformers BERT class <-> MiniBERT class, one pair per Auto class: MiniBertForX's twin is transformers' BertForX.
PAIRS = [(getattr(transformers, mini.__name__.removeprefix("Mini")), mini) for mini in AUTO_CLASSES.values()]
TO_MINIBERT = {bert.__name__: mini for bert, mini in PAIRS}
TO_BERT = {mini.__name__: bert for bert, mini in PAIRS}
MINIBERT_TO_BERT_CLASS = {mini: bert for bert, mini in PAIRS}

# Config fields with the same meaning in both (BertConfig's names), plus the fine-tuning fields.
SHARED_CONFIG_FIELDS = [
    *SIZE_FIELDS,
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
    "classifier_dropout",
    "id2label",
    "label2id",
    "problem_type",
]


# --------------------------------------------------------------------------------------------------------------
# Configs and weights
# --------------------------------------------------------------------------------------------------------------
def bert_config_to_minibert(config: BertConfig) -> MiniBertConfig:
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise UserError(
            "this BERT is configured as a decoder (is_decoder / add_cross_attention); MiniBERT is an encoder"
        )
    position = getattr(config, "position_embedding_type", "absolute")
    if position not in (None, "absolute"):
        raise UserError(f"position_embedding_type={position!r} is not supported: MiniBERT uses absolute positions")
    fields = {k: getattr(config, k) for k in SHARED_CONFIG_FIELDS if getattr(config, k, None) is not None}
    try:
        return MiniBertConfig(**fields)
    except ValueError as e:
        raise UserError(f"this BERT config cannot be converted: {e}") from None


def minibert_config_to_bert(config: MiniBertConfig) -> BertConfig:
    other = config.non_bert_choices()
    if other:
        raise UserError(
            f"this model is not a BERT ({', '.join(f'{k}={v}' for k, v in other.items())}): transformers' "
            "BertModel has no such layers, so it has no native BERT twin; share it with its remote code"
        )
    return BertConfig(**{k: getattr(config, k) for k in SHARED_CONFIG_FIELDS if getattr(config, k, None) is not None})


def _copy_weights(src: PreTrainedModel, dst: PreTrainedModel) -> None:
    missing, unexpected = dst.load_state_dict(src.state_dict(), strict=False)
    # The tied MLM decoder appears under two names; everything else must match exactly.
    missing = [k for k in missing if not k.endswith(("decoder.weight", "decoder.bias"))]
    unexpected = [
        k for k in unexpected if not k.endswith(("decoder.weight", "decoder.bias", "position_ids", "token_type_ids"))
    ]
    if missing or unexpected:
        raise UserError(f"weights do not line up (missing {missing[:5]}, unexpected {unexpected[:5]})")
    dst.tie_weights()


def bert_to_minibert(model: PreTrainedModel) -> PreTrainedModel:
    """A transformers BERT model (any class in PAIRS) -> the matching MiniBERT model, same weights."""
    cls = TO_MINIBERT.get(type(model).__name__)
    if cls is None:
        raise UserError(f"{type(model).__name__} has no MiniBERT counterpart; supported: {', '.join(TO_MINIBERT)}")
    kwargs = {"add_pooling_layer": model.pooler is not None} if cls is MiniBertModel else {}
    out = cls(bert_config_to_minibert(model.config), **kwargs)
    _copy_weights(model, out)
    return out.to(model.dtype)


def minibert_to_bert(model: PreTrainedModel) -> PreTrainedModel:
    """A MiniBERT model -> the matching transformers BERT model, same weights."""
    cls = TO_BERT[type(model).__name__]
    kwargs = {"add_pooling_layer": model.pooler is not None} if cls is BertModel else {}
    out = cls(minibert_config_to_bert(model.config), **kwargs)
    _copy_weights(model, out)
    return out.to(model.dtype)


# --------------------------------------------------------------------------------------------------------------
# Checkpoints on disk
# --------------------------------------------------------------------------------------------------------------
def read_checkpoint_config(path: str) -> dict:
    """config.json of a local checkpoint directory, or of a Hub model id; a UserError if there is none."""
    if os.path.isdir(path):
        config_file = os.path.join(path, "config.json")
        if not os.path.isfile(config_file):
            raise UserError(f"{path} is not a model checkpoint: it has no config.json")
        return read_json_object(config_file)
    if os.path.exists(path):
        raise UserError(f"{path} is a file; a checkpoint is a directory holding config.json and weights")
    if not is_hub_id(path):  # `/data/ckpt`, `./ckpt`, `~/ckpt`, `a/b/c`: a local directory that is not there
        raise UserError(f"{path}: no such checkpoint directory")
    try:  # a Hub model id
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(path).to_dict()
    except Exception as e:
        hub_said = one_line(e)
        raise UserError(f"cannot find checkpoint {path!r}: no such local directory; the Hub said: {hub_said}") from None


def _pick_class(config: dict, table: dict, default) -> type:
    for arch in config.get("architectures") or []:
        if arch in table:
            return table[arch]
    return default


def load_pretrained_minibert(model_cls: type, name_or_path: str, **kwargs) -> PreTrainedModel:
    """Load `name_or_path` into `model_cls` (a MiniBERT class): a MiniBERT checkpoint directly, a transformers BERT
    checkpoint converted on the fly. Heads the checkpoint lacks are freshly initialised, as `from_pretrained` does.
    Anything else, or weights whose shapes do not fit, ends in a `UserError`.
    """
    config = read_checkpoint_config(name_or_path)
    model_type = config.get("model_type")
    if model_type == MiniBertConfig.model_type:
        return _from_pretrained(model_cls, name_or_path, **kwargs)
    if model_type == "bert":
        if isinstance(kwargs.get("config"), MiniBertConfig):
            kwargs["config"] = minibert_config_to_bert(kwargs["config"])
        return bert_to_minibert(_from_pretrained(MINIBERT_TO_BERT_CLASS[model_cls], name_or_path, **kwargs))
    raise UserError(
        f"{name_or_path} is a {model_type or 'unknown'!r} checkpoint, not a BERT: expected model_type "
        f"'minibert' or 'bert' in its config.json"
    )


# What a damaged or unreadable weights file raises (safetensors has its own error class; a torch pickle others).
_LOAD_ERRORS = (RuntimeError, ValueError, OSError, EOFError, pickle.UnpicklingError, SafetensorError)


def refuse_pickled_weights(path: str) -> None:
    """Weights are read from safetensors only: a local folder with only pytorch_model.bin (a pickle) is refused."""
    if not os.path.isdir(path):
        return
    names = os.listdir(path)
    if any(n.endswith(".safetensors") for n in names):
        return
    pickled = sorted(n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt")))
    if pickled:
        raise UserError(
            f"{path} holds its weights only as a pickle ({pickled[0]}), which minibert never loads (a pickle can run "
            "code). If you trust its source, convert it once to safetensors, e.g. with transformers: "
            f"`BertForPreTraining.from_pretrained('{path}').save_pretrained(NEW_FOLDER)`, and use NEW_FOLDER"
        )


def _from_pretrained(cls: type, path: str, **kwargs) -> PreTrainedModel:
    """`cls.from_pretrained(path)`, with every way a checkpoint can fail to fit turned into one clear UserError."""
    refuse_pickled_weights(path)
    try:
        return cls.from_pretrained(path, **kwargs)
    except UserError:
        raise
    except _LOAD_ERRORS as e:
        if isinstance(e, SafetensorError):
            reason = f"its safetensors weights are damaged or truncated ({one_line(e)})"
        elif "ignore_mismatched_sizes" in str(e):
            reason = _shape_mismatch(cls, path, kwargs.get("config"))
        else:
            reason = one_line(e)
        raise UserError(f"cannot load {path} as {cls.__name__}: {reason}") from None


def _shape_mismatch(cls: type, path: str, config=None) -> str:
    """Name the config sizes and the first weight whose shapes differ between the checkpoint and the model."""
    detail = []
    try:
        config = config if config is not None else cls.config_class.from_pretrained(path)
        saved = read_checkpoint_config(path)
        detail += [
            f"{k}={saved[k]} in the checkpoint but {getattr(config, k)} in the model's config"
            for k in SIZE_FIELDS
            if k in saved and saved[k] != getattr(config, k, saved[k])
        ]
        with torch.device("meta"):
            expected = {k.removeprefix("bert."): tuple(v.shape) for k, v in cls(config).state_dict().items()}
        for name in sorted(os.listdir(path)):
            if name.endswith(".safetensors"):
                with safe_open(os.path.join(path, name), framework="pt") as f:
                    for key in f.keys():  # noqa: SIM118 (a safetensors file, not a dict)
                        shape, wanted = tuple(f.get_slice(key).get_shape()), expected.get(key.removeprefix("bert."))
                        if wanted is not None and wanted != shape:
                            detail.append(f"{key} has shape {shape} in the checkpoint, {wanted} in the model")
                            break
    except Exception:  # the explanation is a courtesy: never let it hide the error itself
        pass
    return "the checkpoint's weight shapes do not fit the model" + (f" ({'; '.join(detail[:3])})" if detail else "")


def convert_checkpoint(src: str, dst: str, to: str = "minibert", overwrite: bool = False) -> str:
    """Convert the checkpoint directory `src` into `dst`, with its tokenizer; returns the class written.

    `dst` must be missing or empty; with `overwrite`, an existing checkpoint folder there is replaced as a whole
    (never a training run's folder, never a mix of old and new files)."""
    if os.path.abspath(src) == os.path.abspath(dst):
        raise UserError("SRC and DST must differ: conversion never overwrites its input")
    if os.path.exists(dst) and not os.path.isdir(dst):
        raise UserError(f"{dst} is a file; DST must be a directory (it is created if missing)")
    check_writable_dir(dst, "DST")
    model = _load_converted(src, to)
    replace = _check_destination(dst, overwrite)  # once SRC has loaded (its errors come first)
    carry = sentence_transformers_modules(src)  # checked before anything is written

    def extra(folder: str) -> None:
        for name in carry:
            source = os.path.join(src, name)
            if os.path.isdir(source):
                shutil.copytree(source, os.path.join(folder, name))
            else:
                shutil.copyfile(source, os.path.join(folder, name))

    tokenizer = None
    try:
        tokenizer = AutoTokenizer.from_pretrained(src)
    except Exception:
        pass  # a checkpoint without tokenizer files converts too; say so below
    _write_converted(model, tokenizer, dst, extra, replace)
    if tokenizer is None:
        print(f"note: {src} has no tokenizer files; {dst} holds the model only")
    return type(model).__name__


def _load_converted(src: str, to: str) -> PreTrainedModel:
    """The checkpoint `src` loaded and converted `to` "minibert" or "bert" (the class its `architectures` name)."""
    config = read_checkpoint_config(src)
    model_type = config.get("model_type")
    if to == "minibert":
        if model_type != "bert":
            raise UserError(
                f"{src} has model_type {model_type!r}; `--to minibert` needs a transformers BERT checkpoint"
            )
        bert_cls = _pick_class(config, {b.__name__: b for b, _ in PAIRS}, BertForPreTraining)
        return bert_to_minibert(_from_pretrained(bert_cls, src))
    if to == "bert":
        if model_type != MiniBertConfig.model_type:
            raise UserError(f"{src} has model_type {model_type!r}; `--to bert` needs a MiniBERT checkpoint")
        mini_cls = _pick_class(config, {m.__name__: m for _, m in PAIRS}, MiniBertForPreTraining)
        return minibert_to_bert(load_pretrained_minibert(mini_cls, src))
    raise UserError(f"--to must be 'minibert' or 'bert', got {to!r}")


def _check_destination(dst: str, overwrite: bool) -> bool:
    """Whether `dst` holds a checkpoint to replace; a non-empty `dst` needs `overwrite` and must be a model folder."""
    existing = sorted(n for n in os.listdir(dst) if not n.startswith(".")) if os.path.isdir(dst) else []
    if existing and not overwrite:
        raise UserError(
            f"DST {dst} is not empty ({', '.join(existing[:5])}): pass --overwrite to replace the "
            "checkpoint there, or choose a new folder"
        )
    if existing and ("config.json" not in existing or "checkpoints" in existing):
        raise UserError(
            f"--overwrite: {dst} is not a model checkpoint folder (or holds a training run's "
            "checkpoints/); conversion replaces only a checkpoint folder"
        )
    return bool(existing)


def _write_converted(model: PreTrainedModel, tokenizer, dst: str, extra, replace: bool) -> None:
    """The model folder written to `dst` (staged, so a failure never leaves it half-written); with `replace`, the
    old folder is swapped out as a whole: none of the old checkpoint's files stays beside the new ones."""
    from .hub import save_model_folder

    if not replace:
        save_model_folder(model, tokenizer, dst, extra=extra)
        return
    staging = tempfile.mkdtemp(prefix=".converting-", dir=os.path.dirname(os.path.abspath(dst)))
    try:
        save_model_folder(model, tokenizer, staging, extra=extra)
        old = staging + ".old"
        os.replace(dst, old)
        try:
            os.replace(staging, dst)
        except OSError:
            os.replace(old, dst)  # the old checkpoint back in place
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# What a sentence-transformers model keeps beside the transformer's own files.
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


def sentence_transformers_modules(src: str) -> list[str]:
    """The files and module folders of a sentence-transformers model in `src` (pooling, normalisation, dense
    layers...), which conversion carries across as they are; [] for a plain checkpoint. Without them,
    `SentenceTransformer(converted)` would fall back to its defaults and return other embeddings, silently."""
    modules_file = os.path.join(src, "modules.json")
    if not os.path.isfile(modules_file):
        return []
    try:
        with open(modules_file, encoding="utf-8") as f:
            modules = json.load(f)
        paths = [m.get("path", "") for m in modules]
        kinds = [str(m.get("type", "")) for m in modules]
    except (OSError, ValueError, AttributeError, TypeError) as e:
        raise UserError(f"cannot read {modules_file} (a sentence-transformers module list): {e}") from None
    for path, kind in zip(paths, kinds):
        if kind.endswith("Transformer") and path not in ("", "."):
            raise UserError(
                f"{src} is a sentence-transformers model whose transformer lives in {path}/: convert "
                f"that folder, then copy the other modules beside the result"
            )
        if path not in ("", ".") and not os.path.isdir(os.path.join(src, path)):
            raise UserError(f"{modules_file} names the module folder {path}/, which {src} does not have")
    carried = [name for name in SENTENCE_TRANSFORMERS_FILES if os.path.isfile(os.path.join(src, name))]
    return carried + [p for p in paths if p not in ("", ".")]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="minibert-convert",
        description="Convert a transformers BERT checkpoint directory into a MiniBERT one (or back with --to bert).",
    )
    parser.add_argument("src", help="checkpoint directory to read")
    parser.add_argument("dst", help="directory to write (created)")
    parser.add_argument("--to", choices=["minibert", "bert"], default="minibert", help="target format")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the checkpoint folder DST (default: refuse a non-empty DST)"
    )
    args = parser.parse_args(argv)
    written = convert_checkpoint(args.src, args.dst, args.to, overwrite=args.overwrite)
    print(f"wrote {written} to {args.dst}")


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
