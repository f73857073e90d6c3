"""Where a number came from: the data a run read, the commit it ran at (torch-free).

A dataset's fingerprint is computed once, by the job that generates it, and written beside
it as ``fingerprint.json`` (:func:`write_fingerprint`); every job then reads it
(:func:`job_data`), never recomputes it, and records it in its ``metrics.json`` and as the
MLflow tag ``data_fingerprint``, with the commit (``git_commit``, the run's
``mlflow.source.git.commit``) and whether the tree had uncommitted changes (``git_dirty``).
A table lists, per cell, the run ids, commits and fingerprints of its seeds' runs.

The fingerprint hashes the dataset's file listing (relative path and size of every file,
sorted), not the files' contents, plus the generator's settings (the ``generator`` and
``config`` of its ``meta.json``). Reading every byte of ImageNet (~150 GB) per dataset is
the cost this avoids; a generated dataset is a pure function of its settings, so settings
plus listing tell two generations apart. A real dataset (``data.source: folder``) carries
no fingerprint unless one was written into its root (``python -m pixmim data fingerprint
--root DIR``, the listing alone); its runs record ``unfingerprinted``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from pixmim.io import read_json, write_json

FINGERPRINT = "fingerprint.json"
META = "meta.json"  # a generated dataset's settings (pixmim.io.atomic_dir writes it)
UNFINGERPRINTED = "unfingerprinted"  # a dataset with no fingerprint.json
NO_DATA = "none"  # a stage that reads no dataset
FOLDER = "folder"  # a dataset read in place that no pixmim generator made (data.source: folder)
GIT_COMMIT_TAG = "mlflow.source.git.commit"  # mlflow.utils.mlflow_tags.MLFLOW_GIT_COMMIT
SCHEME = ("sha256 over the sorted listing (relative path, size in bytes) of every file and "
          "the generator settings; file contents are not read")


def _listing(root: Path) -> tuple[str, int, int]:
    """(sha256 of the sorted ``relative/path<TAB>size`` lines, files, bytes) under ``root``;
    the top-level ``meta.json`` (hashed as settings) and ``fingerprint.json`` left out."""
    h, files, size = hashlib.sha256(), 0, 0
    stack = [root]
    entries: list[tuple[str, int]] = []
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as it:
            for e in it:
                if e.is_dir(follow_symlinks=True):
                    stack.append(Path(e.path))
                    continue
                rel = Path(e.path).relative_to(root).as_posix()
                if folder == root and (e.name in (META, FINGERPRINT)
                                       or e.name.startswith(f".{FINGERPRINT}.")):
                    continue
                entries.append((rel, e.stat(follow_symlinks=True).st_size))
    for rel, n in sorted(entries):
        h.update(f"{rel}\t{n}\n".encode())
        files, size = files + 1, size + n
    return h.hexdigest(), files, size


def settings_of(root: Path) -> dict[str, Any] | None:
    """The generator settings of a generated dataset (its ``meta.json``'s ``generator`` and
    ``config``: no timings, no paths); None for a folder without one."""
    meta = root / META
    if not meta.is_file():
        return None
    data = json.loads(meta.read_text(encoding="utf-8"))
    return {"generator": data.get("generator"), "config": data.get("config")}


def fingerprint(root: str | Path) -> dict[str, Any]:
    """The fingerprint record of the dataset at ``root`` (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"fingerprint: {root} is not a folder")
    listing, files, size = _listing(root)
    settings = settings_of(root)
    digest = hashlib.sha256(json.dumps({"listing": listing, "settings": settings},
                                       sort_keys=True).encode()).hexdigest()
    parts = sorted(e.name for e in os.scandir(root) if e.is_dir())
    return {"sha256": digest, "listing_sha256": listing, "files": files, "bytes": size,
            "settings": settings, "parts": parts, "scheme": SCHEME}


def write_fingerprint(root: str | Path) -> dict[str, Any]:
    """Compute the fingerprint of ``root`` and write it (atomically) as its
    ``fingerprint.json``; returns the record."""
    record = fingerprint(root)
    write_json(Path(root) / FINGERPRINT, record)
    return record


def _dataset_folder(root: Path) -> tuple[Path, dict[str, Any]] | None:
    """The folder whose ``fingerprint.json`` covers ``root`` (itself, or the folder above
    when it lists ``root`` as one of its parts) and that record; None when neither has one."""
    for folder in (root, root.parent):
        f = folder / FINGERPRINT
        if f.is_file():
            record = read_json(f)
            if folder == root or root.name in record.get("parts", []):
                if "sha256" not in record:
                    raise ValueError(f"{f}: no sha256 entry (not a pixmim fingerprint)")
                return folder, record
    return None


def read_fingerprint(root: str | Path) -> str:
    """The fingerprint of the dataset at ``root``: its ``fingerprint.json``, or that of the
    folder above when it lists ``root`` as one of its parts (``synth_views/imagenet-c``,
    ``scenes/ade20k``); :data:`UNFINGERPRINTED` when neither exists."""
    found = _dataset_folder(Path(root))
    return UNFINGERPRINTED if found is None else str(found[1]["sha256"])


def data_source(root: str | Path) -> str:
    """What the dataset at ``root`` is, for a table note: a generated one's description
    (``generated: <description> [<generator>]``, from the ``meta.json`` beside its
    fingerprint or in ``root``), else :data:`FOLDER` (data the project did not make)."""
    root = Path(root)
    found = _dataset_folder(root)
    for folder in dict.fromkeys([root] + ([found[0]] if found else [])):
        meta = folder / META
        if meta.is_file():
            data = json.loads(meta.read_text(encoding="utf-8"))
            if data.get("generator"):
                what = data.get("description") or "a generated dataset"
                return f"generated: {what} [{data['generator']}]"
    return FOLDER


def combine(per_root: dict[str, str]) -> str:
    """One fingerprint for what a job read: the dataset's when it read one (or several
    folders of one), a sha256 over the distinct ones when several, :data:`NO_DATA` when
    none, :data:`UNFINGERPRINTED` when any of them has none."""
    found = sorted(set(per_root.values()))
    if not found:
        return NO_DATA
    if UNFINGERPRINTED in found:
        return UNFINGERPRINTED
    if len(found) == 1:
        return found[0]
    return hashlib.sha256("\n".join(found).encode()).hexdigest()


def job_data(roots: list[str]) -> dict[str, Any]:
    """``data_fingerprint`` (combined), ``data_fingerprints`` and ``data_sources`` (per
    folder: :func:`data_source`) of a job that read the dataset folders ``roots``."""
    per_root = {r: read_fingerprint(r) for r in dict.fromkeys(roots)}
    return {"data_fingerprint": combine(per_root), "data_fingerprints": per_root,
            "data_sources": {r: data_source(r) for r in per_root}}


def git_dirty() -> bool | None:
    """Whether the working tree (of the current directory) has uncommitted changes to
    tracked files; None outside a git repository."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip())


def commit_label(commit: str, dirty: bool | None) -> str:
    """``<sha>`` or ``<sha>-dirty`` (uncommitted changes at run time): the table's form."""
    return f"{commit}-dirty" if dirty else commit
