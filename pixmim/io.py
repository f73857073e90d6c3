"""Atomic file writes (torch-free): a reader never sees a half-written output."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

_UMASK = os.umask(0o022)
os.umask(_UMASK)


class WriteError(OSError):
    """An output could not be written (disk full, quota, permissions); names the file."""


def _free_space(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free there"
    except OSError:
        return "free space unknown"


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` onto ``path`` (same folder).

    Raises:
        WriteError: naming ``path`` when the write fails (a full disk reaches us as an
            OSError, or from ``torch.save`` as a RuntimeError); the temporary file is
            removed and a previous ``path`` is left as it was.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are shared files
        write(Path(tmp))
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        cause = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise WriteError(f"cannot write {path} ({type(err).__name__}: {cause}; "
                         f"{_free_space(path.parent)}); any previous {path.name} is unchanged") \
            from err
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON (NaN/inf are rejected)."""

    def _write(tmp: Path) -> None:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")

    return atomic_write(path, _write)


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file not found: {path}")
    return json.loads(path.read_text())


def atomic_dir(out: str | Path, build: Callable[[Path], dict],
               existing: Callable[[], dict | None]) -> dict:
    """Publish a generated folder atomically.

    ``existing()`` returns the meta of an up-to-date ``out`` (or raises if it differs);
    otherwise ``build(tmp)`` fills a sibling temporary folder and returns its meta, which is
    written last as ``meta.json`` before the folder is renamed onto ``out``. A concurrent
    writer that finished first wins if its result is identical.
    """
    out = Path(out)
    if (meta := existing()) is not None:
        return meta
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        meta = build(tmp)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        try:
            tmp.rename(out)
        except OSError:  # another process finished first: accept it if identical
            meta = existing() or meta
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def existing_meta(out: str | Path, config: dict, generator: str, kind: str) -> dict | None:
    """The ``meta.json`` of an up-to-date generated folder at ``out`` (None if absent).

    An empty folder counts as absent (it is removed). Raises FileExistsError when ``out``
    holds something else: no readable meta, or another config or generator version.
    """
    out = Path(out)
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        return None
    meta_path = out / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise FileExistsError(f"{out} exists but is not a {kind} (cannot read {meta_path}: "
                              f"{err})") from err
    if meta.get("config") != config or meta.get("generator") != generator:
        raise FileExistsError(
            f"{out} holds a {kind} with a different config or generator "
            f"({meta.get('generator')}, {meta.get('config')}); wanted ({generator}, {config}). "
            "Delete it or choose another --out.")
    return meta
