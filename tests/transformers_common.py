"""transformers' own common model tests (`ModelTesterMixin`), for the transformers version that is installed.

They are not in the wheel; the source distribution on PyPI carries `tests/test_modeling_common.py`. It is fetched
once with pip into a cache folder and imported from there as the package `transformers_tests`. Two mixins it
imports live in test folders the source distribution does not ship (`tests/exporters`, `tests/generation`):
they are replaced by empty classes. Generation does not apply to an encoder, and export is tested by
`tests/test_runtimes.py` (torch.export, ONNX, full-graph compile) against the model itself.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers

PACKAGE = "transformers_tests"
_STUBS = {
    "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
}


def cache_dir() -> Path:
    base = os.environ.get("MINIBERT_TEST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "minibert")
    return Path(base) / f"transformers-{transformers.__version__}-tests"


def _fetch(root: Path) -> None:
    """Put `test_modeling_common.py` of the installed version under root/transformers_tests (atomically)."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--no-build-isolation",
                f"transformers=={transformers.__version__}",
                "-d",
                tmp,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
        (sdist,) = Path(tmp).glob("transformers-*.tar.gz")
        staged = Path(tmp) / PACKAGE
        staged.mkdir()
        with tarfile.open(sdist) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("/tests/test_modeling_common.py"))
            (staged / "test_modeling_common.py").write_bytes(tar.extractfile(member).read())
        (staged / "__init__.py").write_text("")
        for name, text in _STUBS.items():
            path = staged / name
            path.parent.mkdir(exist_ok=True)
            (path.parent / "__init__.py").write_text("")
            path.write_text(text)
        root.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staged, root / PACKAGE)
        except OSError:  # another process published it first
            pass


def load_common_module():
    """The module `transformers_tests.test_modeling_common` of the installed transformers."""
    root = cache_dir()
    if not (root / PACKAGE / "test_modeling_common.py").exists():
        _fetch(root)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(f"{PACKAGE}.test_modeling_common")
