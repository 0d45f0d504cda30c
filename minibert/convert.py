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
from dataclasses import dataclass

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoTokenizer, BertForPreTraining, PreTrainedModel

from .card import is_hub_id
from .cli import UserError, one_line, run_cli
from .configuration_minibert import SIZE_FIELDS, MiniBertConfig
from .hub import readable_as_umask_allows, save_model_folder
from .modeling_minibert import MiniBertForPreTraining
from .safety import check_writable_dir, read_json_dict, read_json_object
from .twin import MINIBERT_TO_BERT_CLASS, PAIRS, bert_to_minibert, minibert_config_to_bert, minibert_to_bert


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


def _pick_class(config: dict, classes, default) -> type:
    """The first of the checkpoint's `architectures` among `classes`, else `default`."""
    by_name = {c.__name__: c for c in classes}
    return next((by_name[a] for a in config.get("architectures") or [] if a in by_name), default)


def load_pretrained_minibert(model_cls: type, name_or_path: str, **kwargs) -> PreTrainedModel:
    """Load `name_or_path` into `model_cls` (a MiniBERT class): a MiniBERT checkpoint directly, a transformers BERT
    checkpoint converted on the fly. Heads the checkpoint lacks are freshly initialised, as `from_pretrained` does.
    Anything else, or weights whose shapes do not fit, ends in a `UserError`.
    """
    config = read_checkpoint_config(name_or_path)
    model_type = config.get("model_type")
    if model_type == MiniBertConfig.model_type:
        legacy = _legacy_weights(name_or_path)
        if legacy is not None:  # minibert 0.1: fused Q/K/V and shorter names, renamed on the way in
            config = kwargs.pop("config", None) or MiniBertConfig.from_pretrained(name_or_path)
            return model_cls.from_pretrained(None, config=config, state_dict=legacy, **kwargs)
        return _from_pretrained(model_cls, name_or_path, **kwargs)
    if model_type == "bert":
        if isinstance(kwargs.get("config"), MiniBertConfig):
            kwargs["config"] = minibert_config_to_bert(kwargs["config"])
        return bert_to_minibert(_from_pretrained(MINIBERT_TO_BERT_CLASS[model_cls], name_or_path, **kwargs))
    raise UserError(
        f"{name_or_path} is a {model_type or 'unknown'!r} checkpoint, not a BERT: expected model_type "
        f"'minibert' or 'bert' in its config.json"
    )


# minibert 0.1 saved one fused `attention.qkv` and shorter layer names; today's names are BERT's.
_LEGACY_RENAMES = {
    ".attention.dense.": ".attention.output.dense.",
    ".attention.LayerNorm.": ".attention.output.LayerNorm.",
    ".feed_forward.intermediate.": ".intermediate.dense.",
    ".feed_forward.output.": ".output.dense.",
    ".feed_forward.LayerNorm.": ".output.LayerNorm.",
}


def legacy_names_to_bert(state: dict) -> dict:
    """Weights saved by minibert 0.1 (one fused `attention.qkv`, shorter layer names) under BERT's names."""
    out = {}
    for name, tensor in state.items():
        if ".attention.qkv." in name:
            for part, chunk in zip(("query", "key", "value"), tensor.chunk(3, dim=0)):
                out[name.replace(".attention.qkv.", f".attention.self.{part}.")] = chunk.contiguous()
            continue
        for old, new in _LEGACY_RENAMES.items():
            name = name.replace(old, new)
        out[name] = tensor
    return out


def _legacy_weights(name_or_path: str) -> dict | None:
    """The renamed weights of a minibert 0.1 checkpoint (one safetensors file, local or on the Hub), or None for
    any other checkpoint. Kept here, not in the modeling file every checkpoint ships: only minibert's own loaders
    (this one, the CLIs through it, `minibert-convert OLD NEW`) read such checkpoints."""
    from safetensors.torch import load_file
    from transformers.utils import cached_file

    try:
        path = cached_file(name_or_path, "model.safetensors", _raise_exceptions_for_missing_entries=False)
        if path is None:
            return None
        with safe_open(path, framework="pt") as f:
            if not any(".attention.qkv." in key for key in f.keys()):  # noqa: SIM118 (a safetensors file)
                return None
        return legacy_names_to_bert(load_file(path))
    except (OSError, ValueError, SafetensorError):  # unreadable here: `from_pretrained` says what is wrong
        return None


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

    A sentence-transformers model converts as a whole: its transformer module (at the root or in a module folder
    such as `0_Transformer/`) is converted in place and every other module is carried as it is.
    `dst` must be missing or empty; with `overwrite`, an existing checkpoint folder there is replaced as a whole
    (never a training run's folder, never a mix of old and new files)."""
    if os.path.abspath(src) == os.path.abspath(dst):
        raise UserError("SRC and DST must differ: conversion never overwrites its input")
    check_writable_dir(dst, "DST")  # a file, a read-only or a system folder: refused before anything is loaded
    layout = sentence_transformers_layout(src)  # checked before anything is loaded or written
    model_src = os.path.join(src, layout.transformer) if layout else src
    model = _load_converted(model_src, to)
    replace = _check_destination(dst, overwrite)  # once SRC has loaded (its errors come first)
    tokenizer = None
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_src)
    except Exception:
        pass  # a checkpoint without tokenizer files converts too; say so below

    def write(folder: str) -> None:
        save_model_folder(model, tokenizer, os.path.join(folder, layout.transformer) if layout else folder)
        for name in layout.carried if layout else []:
            source, target = os.path.join(src, name), os.path.join(folder, name)
            if os.path.isdir(source):
                shutil.copytree(source, target)
            else:
                shutil.copyfile(source, target)

    _write_converted(write, dst, replace)
    if tokenizer is None:
        print(f"note: {model_src} has no tokenizer files; {dst} holds the model only")
    return type(model).__name__


def _load_converted(src: str, to: str) -> PreTrainedModel:
    """The checkpoint `src` loaded and converted `to` "minibert" or "bert" (the class its `architectures` name)."""
    config = read_checkpoint_config(src)
    model_type = config.get("model_type")
    mini_cls = _pick_class(config, [mini for _, mini in PAIRS], MiniBertForPreTraining)
    if to == "minibert":
        if model_type == MiniBertConfig.model_type and _legacy_weights(src) is not None:  # minibert 0.1: upgraded
            return load_pretrained_minibert(mini_cls, src)
        if model_type != "bert":
            raise UserError(
                f"{src} has model_type {model_type!r}; `--to minibert` needs a transformers BERT checkpoint"
            )
        bert_cls = _pick_class(config, [bert for bert, _ in PAIRS], BertForPreTraining)
        return bert_to_minibert(_from_pretrained(bert_cls, src))
    if to == "bert":
        if model_type != MiniBertConfig.model_type:
            raise UserError(f"{src} has model_type {model_type!r}; `--to bert` needs a MiniBERT checkpoint")
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


def _write_converted(write, dst: str, replace: bool) -> None:
    """`write(folder)` run on a staging folder beside `dst`, which then becomes `dst` in one rename, so a failure
    never leaves `dst` half-written; with `replace`, the old folder is swapped out as a whole: none of the old
    checkpoint's files stays beside the new ones."""
    staging = tempfile.mkdtemp(prefix=".converting-", dir=os.path.dirname(os.path.abspath(dst)))
    try:
        write(staging)
        readable_as_umask_allows(staging)
        if not replace:
            os.replace(staging, dst)  # `dst` is missing or an empty folder
            return
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


# What a sentence-transformers model keeps beside the transformer's own files (at the root, and in the
# transformer's module folder when it has one).
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


@dataclass(frozen=True)
class SentenceTransformersLayout:
    transformer: str  # the transformer module's folder in the model ("" for the root)
    carried: list[str]  # files and module folders copied as they are, relative to the model's root


def sentence_transformers_layout(src: str) -> SentenceTransformersLayout | None:
    """Where a sentence-transformers model in `src` keeps its transformer, and what conversion carries across as it
    is (the module list, pooling, dense layers...); None for a plain checkpoint. Without those modules,
    `SentenceTransformer(converted)` would fall back to its defaults and return other embeddings, silently.

    Accepted is what sentence-transformers loads: the transformer at the root or in its own module folder
    (`0_Transformer/`, older models' `0_BERT/`), module types under their current or legacy names, and modules
    listed without a folder (all-MiniLM-L6-v2's `2_Normalize` on the Hub). Where sentence-transformers is
    installed, it loads `src` first and its refusal is ours; without it, only the module list's own form is checked.
    """
    modules_file = os.path.join(src, "modules.json")
    if not os.path.isfile(modules_file):
        return None
    try:
        with open(modules_file, encoding="utf-8") as f:
            paths = [str(m.get("path", "")) for m in json.load(f)]
    except (OSError, ValueError, AttributeError, TypeError) as e:
        raise UserError(f"cannot read {modules_file} (a sentence-transformers module list): {e}") from None
    for path in paths:
        if os.path.isabs(path) or ".." in path.replace("\\", "/").split("/"):
            raise UserError(f"{modules_file} names the module folder {path!r}, which lies outside {src}")
    _refused_by_sentence_transformers(src)
    folders = [p.strip("/") for p in paths if p not in ("", ".")]
    # The transformer is the module whose folder holds a transformers config (other modules' config.json, such as
    # Pooling's, name no model_type); a model lists exactly one.
    holders = [p for p in folders if _holds_transformers_config(os.path.join(src, p))]
    if any(p in ("", ".") for p in paths) and _holds_transformers_config(src):
        holders.append("")
    if len(holders) != 1:
        found = ", ".join(repr(h or ".") for h in holders) or "none"
        raise UserError(
            f"{modules_file}: conversion needs exactly one transformer module (a config.json with a model_type); "
            f"found {found}"
        )
    transformer = holders[0]
    carried = [n for n in SENTENCE_TRANSFORMERS_FILES if os.path.isfile(os.path.join(src, n))]
    if transformer:  # its own settings (sentence_bert_config.json) beside the converted weights
        inner = os.path.join(src, transformer)
        carried += [
            os.path.join(transformer, n) for n in SENTENCE_TRANSFORMERS_FILES if os.path.isfile(os.path.join(inner, n))
        ]
    # Modules without a folder (Normalize) need none: sentence-transformers builds them from their type alone.
    carried += [p for p in folders if p != transformer and os.path.isdir(os.path.join(src, p))]
    return SentenceTransformersLayout(transformer, carried)


def _holds_transformers_config(folder: str) -> bool:
    return "model_type" in (read_json_dict(os.path.join(folder, "config.json")) or {})


def _refused_by_sentence_transformers(src: str) -> None:
    """A UserError with sentence-transformers' own reason when it cannot load `src` (nothing when it is not
    installed): conversion accepts exactly the layouts the library that owns them accepts."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return
    try:
        SentenceTransformer(src, device="cpu", local_files_only=True)
    except Exception as e:
        raise UserError(f"{src} does not load as a sentence-transformers model ({one_line(e)})") from None


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
