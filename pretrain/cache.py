"""The prepared-data cache: entries published whole, each with a manifest that is checked before it is trusted.

`<root>/<kind>-<key>/` holds one entry (a tokenizer, tokenized documents, or training and validation examples).
An entry is written in a work directory, its manifest (`manifest.json`) is written last, and the directory is
renamed into place: a failed or interrupted run never leaves a half-written entry, and two processes publishing
the same entry keep one.

The manifest lists every file of the entry with its size, a digest (BLAKE2b of the whole file up to 1 MiB, of 16
evenly spaced 64 KiB blocks and the size above that: cheap on a 10 GB cache, and it still sees a file swapped
for another, a truncated or an edited one), and for each Arrow file its row count. A hit is checked against it;
an entry that fails (a file missing or changed: a sync tool or a partial copy at work, a cache from an
older minibert without a manifest) is rebuilt, and the log says so and why. So a run never trains on data the
cache did not make for it. What still cannot be read after the check is one error line naming the entry.

A full disk while caching is one error line naming the folder, the free space and about how much is needed;
the work directory goes, and the entries already published stay as they were.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from minibert.cli import UserError
from minibert.safety import pid_alive
from minibert.safety import write_json as safe_write_json

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
_WHOLE_FILE_BYTES = 1 << 20
_SAMPLE_BLOCKS, _BLOCK_BYTES = 16, 1 << 16
# Bytes of cache per byte of text: 10.6 bytes a token (BENCHMARKS.md, issue 12) at ~4 bytes of text a token,
# rounded up. Only sizes the "space needed" of a full-disk message.
CACHE_BYTES_PER_TEXT_BYTE = 3


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def write_json(path: str, data: dict) -> None:
    """`minibert.safety.write_json` with sorted keys (a cache entry's JSON reads the same whatever built it)."""
    safe_write_json(path, data, sort_keys=True)


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


# ----------------------------------------------------------------------------------------------------------
# Manifests
# ----------------------------------------------------------------------------------------------------------


def file_digest(path: str, with_size: bool = True) -> str:
    """BLAKE2b of a file of up to 1 MiB; above that, of 16 evenly spaced 64 KiB blocks (first and last included),
    and of its size (`with_size`): a change of size, a swapped or a truncated file always shows, an edit in the
    unread parts of a large file does not (the price of checking a large cache in milliseconds). Also the content
    sample of a corpus's fingerprint (`corpus.content_sample`, without the size)."""
    size = os.path.getsize(path)
    h = hashlib.blake2b(str(size).encode() if with_size else b"", digest_size=16)
    with open(path, "rb") as f:
        if size <= _WHOLE_FILE_BYTES:
            h.update(f.read())
        else:
            step = (size - _BLOCK_BYTES) / (_SAMPLE_BLOCKS - 1)
            for i in range(_SAMPLE_BLOCKS):
                f.seek(int(i * step))
                h.update(f.read(_BLOCK_BYTES))
    return h.hexdigest()


def arrow_rows(path: str) -> int:
    """Rows of an Arrow IPC stream file (what `datasets` writes), read from the batches' headers only."""
    with pa.memory_map(path) as source:
        return sum(batch.num_rows for batch in pa.ipc.open_stream(source))


def make_manifest(directory: str) -> dict:
    files = {}
    for folder, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, directory)
            if relative == MANIFEST:
                continue
            entry = {"bytes": os.path.getsize(path), "digest": file_digest(path)}
            if name.endswith(".arrow"):
                entry["rows"] = arrow_rows(path)
            files[relative] = entry
    return {"version": MANIFEST_VERSION, "files": files}


def manifest_problem(directory: str) -> str | None:
    """Why the entry in `directory` does not match its manifest, or None when it does."""
    try:
        manifest = read_json(os.path.join(directory, MANIFEST))
        expected = manifest["files"]
        if manifest.get("version") != MANIFEST_VERSION or not isinstance(expected, dict):
            return "its manifest is of another version"
    except FileNotFoundError:
        return "it has no manifest (an older minibert wrote it, or a copy left it out)"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"its manifest cannot be read ({type(e).__name__})"
    # Files the manifest does not list are left alone: nothing reads them (`datasets` loads the files its
    # state.json names, and that file is in the manifest), and `datasets` may add its own cache files there.
    for relative, entry in sorted(expected.items()):
        path = os.path.join(directory, relative)
        if not os.path.isfile(path):
            return f"{relative} is missing"
        try:
            size = os.path.getsize(path)
            if size != entry["bytes"]:
                return f"{relative} has {size:,} bytes, its manifest says {entry['bytes']:,}"
            if file_digest(path) != entry["digest"]:
                return f"{relative} is not the file its manifest describes (another content)"
            if "rows" in entry and arrow_rows(path) != entry["rows"]:
                return f"{relative} does not hold the {entry['rows']:,} rows its manifest says"
        except (OSError, pa.ArrowException, KeyError, TypeError) as e:
            return f"{relative} cannot be checked ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    return None


# ----------------------------------------------------------------------------------------------------------
# A full disk
# ----------------------------------------------------------------------------------------------------------


def disk_full_error(root: str, error: BaseException, text_bytes: int | None) -> UserError:
    """One line: the folder, its free space, and about how much the cache needs (from the text's size; `datasets`'
    own "Needed:" figure is 0 for a generated dataset, whose size it cannot know beforehand)."""
    try:
        free = f"{shutil.disk_usage(root).free / 1e6:,.0f} MB free"
    except OSError:
        free = "free space unknown"
    if text_bytes:
        need = f"about {CACHE_BYTES_PER_TEXT_BYTE * text_bytes / 1e6:,.0f} MB needed for {text_bytes / 1e6:,.1f} MB of text"
    else:
        need = "the space needed is unknown for this source"
    detail = " ".join(str(error).split())[:120]
    return UserError(
        f"the disk holding the data cache {root} is full ({free}, {need}; {detail}): free space there or point "
        "--data_cache_dir (or $MINIBERT_CACHE) at a larger disk; the entries already cached are unchanged"
    )


# ----------------------------------------------------------------------------------------------------------
# The cache
# ----------------------------------------------------------------------------------------------------------


class CacheMiss(Exception):
    """A read-only `DataCache` lacks an entry the run needs (or holds one that fails its check)."""


class DataCache:
    """`<root>/<kind>-<key>/` directories, each published whole by an atomic rename or not at all, each checked
    against its manifest when found.

    `read_only`: `has` raises `CacheMiss` instead of answering False, so that a caller can find out, without
    building anything, whether everything it needs is there.
    """

    def __init__(self, root: str, overwrite: bool = False, read_only: bool = False):
        self.root, self.overwrite, self.read_only = root, overwrite, read_only
        self._rebuilt: set[str] = set()
        self._damaged: set[str] = set()
        self.used: set[str] = set()  # the entries this run looked for (and so, by its end, found or built)
        os.makedirs(root, exist_ok=True)
        if not read_only:
            self._remove_stale_work_dirs()

    def path(self, kind: str, key: str) -> str:
        return os.path.join(self.root, f"{kind}-{key}")

    def has(self, kind: str, key: str) -> bool:
        path = self.path(kind, key)
        self.used.add(path)
        # --overwrite_cache rebuilds each entry once per run, then uses what it rebuilt.
        if self.overwrite and path not in self._rebuilt:
            return False
        found = os.path.isdir(path)
        if found and path not in self._rebuilt:
            problem = manifest_problem(path)
            if problem:
                if not self.read_only:
                    logger.warning("The data cache entry %s cannot be trusted: %s. Rebuilding it.", path, problem)
                self._damaged.add(path)
                found = False
        if self.read_only and not found:
            raise CacheMiss(path)
        return found

    @contextlib.contextmanager
    def workdir(self) -> Iterator[str]:
        path = tempfile.mkdtemp(dir=self.root, prefix=f"tmp-{socket.gethostname()}-{os.getpid()}-")
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    @contextlib.contextmanager
    def publish(self, kind: str, key: str) -> Iterator[str]:
        """A staging directory to fill; on a normal exit its manifest is written and it is renamed into place."""
        final = self.path(kind, key)
        with self.workdir() as work:
            staging = os.path.join(work, "entry")
            os.makedirs(staging)
            yield staging
            write_json(os.path.join(staging, MANIFEST), make_manifest(staging))  # last: it vouches for the rest
            replace = self.overwrite or final in self._damaged
            if replace and os.path.isdir(final):  # swap the old entry out (deleted with `work`)
                os.rename(final, os.path.join(work, "retired"))
            try:
                os.rename(staging, final)
            except OSError:
                if not os.path.isdir(final):
                    raise
                # Another process published the same entry first; its content is the same as ours, and it
                # may be reading it already: keep it.
        self._damaged.discard(final)
        self._rebuilt.add(final)

    def read(self, path: str, reader, *args, **kwargs):
        """`reader(*args)` on a checked entry; what still fails is one error line naming the entry."""
        try:
            return reader(*args, **kwargs)
        except (OSError, ValueError, KeyError, IndexError, TypeError, pa.ArrowException) as e:
            detail = " ".join(str(e).split())[:200]
            raise UserError(
                f"the data cache entry {path} cannot be read ({type(e).__name__}: {detail}); delete it or rerun "
                "with --overwrite_cache"
            ) from None

    def _remove_stale_work_dirs(self) -> None:
        """Work directories of runs that were killed (their process is gone) or that are a day old."""
        host = socket.gethostname()
        for name in os.listdir(self.root):
            if not name.startswith("tmp-"):
                continue
            path = os.path.join(self.root, name)
            parts = name.split("-")
            try:
                stale = time.time() - os.path.getmtime(path) > 86_400
            except OSError:
                continue  # removed meanwhile by its own process
            if len(parts) >= 4 and "-".join(parts[1:-2]) == host and parts[-2].isdigit():
                stale = stale or not pid_alive(int(parts[-2]))
            if stale:
                shutil.rmtree(path, ignore_errors=True)
