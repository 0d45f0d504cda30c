"""A checkpoint saved here loads and computes the same numbers under other transformers versions, without minibert.

For each version (the oldest supported 4.x, and 5.0), a virtual environment holding only that transformers (and the
tokenizers / huggingface_hub it needs) is made once and cached; torch and the rest come from this environment
through a path file, so nothing big is installed twice. Its python runs tests/remote_probe.py on checkpoints this
environment has just saved: every Auto class and the fill-mask / feature-extraction / text-classification /
token-classification pipelines, compared with minibert's outputs here to 1e-5.
"""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import assert_probe_matches_minibert, run_remote_probe

VERSIONS = ["4.48.3", "5.0.0"]


def transformers_requirement(version: str) -> str:
    """What a user of that version installs. transformers 5.x imports `kernels` at import time when it is there,
    and the main environment's (a dependency of its newer transformers, seen through the shared path below) has an
    API 5.0 does not know: 5.x comes with its own pin of kernels, its `hub-kernels` extra."""
    return f"transformers[hub-kernels]=={version}" if version.startswith("5.") else f"transformers=={version}"


def compat_python(version: str) -> str:
    """The python of a cached environment with transformers==version (built on first use, atomically)."""
    base = os.environ.get("MINIBERT_TEST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "minibert")
    requirement = transformers_requirement(version)
    tag = "".join(c if c.isalnum() or c in ".-" else "-" for c in requirement)
    root = Path(base) / f"compat-py{sys.version_info.major}{sys.version_info.minor}-{tag}"
    python = root / "bin" / "python"
    if (root / "ready").exists():
        return str(python)
    staging = root.with_name(root.name + f".tmp{os.getpid()}")
    subprocess.run([sys.executable, "-m", "venv", str(staging)], check=True)
    site = subprocess.run(
        [str(staging / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Appended after the environment's own packages: its transformers / tokenizers / hub win, torch comes from here.
    # A plain path line, so this environment's .pth files (minibert's editable install among them) are not run.
    Path(site, "zz_main_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = subprocess.run(
        [
            str(staging / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            requirement,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"cannot build the transformers {version} environment:\n{proc.stderr[-3000:]}")
    (staging / "ready").write_text(version)
    try:
        os.rename(staging, root)
    except OSError:  # another process built it first
        subprocess.run(["rm", "-rf", str(staging)], check=False)
    return str(python)


@pytest.mark.parametrize("version", VERSIONS)
def test_checkpoints_load_and_match_under_other_transformers(version, tmp_path, wordpiece_tokenizer):
    python = compat_python(version)
    paths, out = run_remote_probe(python, tmp_path, wordpiece_tokenizer, resave=False)
    assert out["transformers"] == version  # the probe really ran under that version
    assert_probe_matches_minibert(paths, out)
