"""What clients that look a model up by its `model_type` read, registered for "minibert" when minibert is imported.

MiniBERT has BERT's module names, so a client's defaults for "bert" are right for it too:

- peft: the default targets of every adapter type (LoRA's `query` / `value`, IA3's, AdaLoRA's, ...), read from
  `peft.utils.constants` when `get_peft_model` is called without `target_modules`.

optimum (ONNX export configs, `ORTModel...(export=True)`, sentence-transformers' `backend="onnx"`) and GLiNER keep
their own tables too; they are not dev dependencies here, so nothing is registered for them (docs/model.md says
which path works instead: the plain-BERT twin).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

MODEL_TYPE = "minibert"
PEFT_TABLES = "peft.utils.constants"


def register_peft(constants) -> None:
    """Every `TRANSFORMERS_MODELS_TO_*` table of peft that knows "bert" gets the same entry for "minibert"."""
    for name in dir(constants):
        table = getattr(constants, name)
        if name.startswith("TRANSFORMERS_MODELS_TO_") and isinstance(table, dict) and "bert" in table:
            table.setdefault(MODEL_TYPE, table["bert"])


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs `callback(module)` right after `module_name` is first imported, by whoever imports it.

    Hand-written because Python has no post-import hook: importing peft eagerly would add its import time to
    every `import minibert`, peft user or not. The finder steps aside (leaves `sys.meta_path`) on its first match.
    """

    def __init__(self, module_name: str, callback):
        self.module_name, self.callback = module_name, callback

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.module_name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                self.callback(module)

            spec.loader.exec_module = exec_module
        return spec


def register_clients() -> None:
    """Register now what is imported already; the rest when it is imported."""
    if PEFT_TABLES in sys.modules:
        register_peft(sys.modules[PEFT_TABLES])
    elif not any(isinstance(f, _AfterImport) and f.module_name == PEFT_TABLES for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(PEFT_TABLES, register_peft))
