"""Fetch a released checkpoint (torch-free, standard library only).

``fetch(source, dest, checksum=...)`` copies a local file or downloads an ``http(s)://`` URL to
``dest``: the bytes go to ``<dest>.part`` beside it, an interrupted download resumes from
that file with an HTTP ``Range`` request, dropped connections, timeouts and 5xx answers are
retried with exponential backoff, and only a complete file whose checksum matches is renamed
onto ``dest`` (``os.replace``, atomic). A checksum mismatch or an HTML page (an error page
saved under a checkpoint's name) leaves nothing behind. Every failure is one
:class:`FetchError` whose message is one line naming the source.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from pixmim.progress import progress

CHUNK = 1 << 20  # bytes per read and per progress update
# OpenMMLab names its weight files `<name>-<first 8 hex digits of the file's sha256>.pth`
# (mmengine's model zoo, as in mmselfsup's configs/selfsup/pixmim/metafile.yml)
_OPENMMLAB_NAME = re.compile(r"-([0-9a-f]{8})\.pth$")
_HTML_START = (b"<!doctype html", b"<html")
# A checksum as the authors publish it: a full sha256, OpenMMLab's 8-hex sha256 prefix, or an
# md5 prefix (facebookresearch/mae's README gives 6 hex digits of each file's md5).
_CHECKSUM = re.compile(r"(sha256):([0-9a-f]{64}|[0-9a-f]{8})|(md5):([0-9a-f]{6,32})")


class FetchError(RuntimeError):
    """A checkpoint could not be fetched; the message is one line naming the source."""


class _Transient(Exception):
    """A failure worth retrying: a dropped connection, a timeout, a 5xx answer."""


def openmmlab_hash(name: str) -> str | None:
    """The sha256 prefix an OpenMMLab weight file (path or URL) names, or None."""
    found = _OPENMMLAB_NAME.search(urllib.parse.urlparse(name).path)
    return found.group(1) if found else None


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of ``path`` (``sha256`` or ``md5``)."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(source: str | Path, dest: str | Path, *, checksum: str, retries: int = 5,
          timeout: float = 60.0, backoff: float = 1.0,
          sleep: Callable[[float], None] = time.sleep) -> Path:
    """Copy or download ``source`` to ``dest`` and check its checksum.

    Args:
        source: a local path, a ``file://`` URL or an ``http(s)://`` URL.
        dest: the checkpoint's path; nothing is fetched when it already has ``checksum``.
        checksum: ``sha256:<64 hex digits>``, ``sha256:<8 hex>`` (OpenMMLab's prefix,
            :func:`openmmlab_hash`) or ``md5:<6 to 32 hex>`` (a published md5 prefix).
        retries: further attempts after a transient failure (so ``retries + 1`` in all).
        timeout: seconds to wait for the connection and for each read.
        backoff: the wait before the first retry, doubled before each next one.
        sleep: how to wait (the tests record the waits instead).

    Raises:
        FetchError: one line naming the source, for a 4xx answer (not retried), retries
            exhausted (the attempts and the last error; the ``.part`` is kept for the next
            call to resume), an HTML page, or a checksum mismatch (expected vs got); in the
            last two cases neither ``dest`` nor its ``.part`` is left. A write error (a full
            disk) names the ``.part`` and is not retried.
    """
    source, dest, (algorithm, want) = str(source), Path(dest), _expected(checksum)
    if dest.is_file():
        if file_digest(dest, algorithm).startswith(want):
            return dest
        dest.unlink()  # a stale or corrupt file is not the checkpoint asked for
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    url = urllib.parse.urlparse(source)
    if url.scheme in ("http", "https"):
        _download(source, part, retries=retries, timeout=timeout, backoff=backoff, sleep=sleep)
    elif url.scheme in ("", "file"):
        _copy(Path(urllib.request.url2pathname(url.path)) if url.scheme else Path(source), part)
    else:
        raise FetchError(f"{source}: unsupported source (a path, file://, http:// or https://)")
    _verify(source, part, algorithm, want)
    os.replace(part, dest)
    return dest


def _expected(checksum: str) -> tuple[str, str]:
    """(algorithm, expected hex digest or prefix) of a checksum (:data:`_CHECKSUM`)."""
    found = _CHECKSUM.fullmatch(checksum.strip().lower())
    if not found:
        raise FetchError(f"checksum {checksum!r} is none of sha256:<64 hex>, sha256:<8 hex> "
                         "(OpenMMLab's prefix), md5:<6 to 32 hex>")
    algorithm, want = (g for g in found.groups() if g)
    return algorithm, want


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _copy(path: Path, part: Path) -> None:
    if not path.is_file():
        raise FetchError(f"{path}: no such file")
    with path.open("rb") as src:
        _write(iter(lambda: src.read(CHUNK), b""), part, "wb", 0, path.stat().st_size)


def _write(chunks: Iterable[bytes], part: Path, mode: str, have: int,
           total: int | None) -> None:
    """Write ``chunks`` to ``part`` (``mode="ab"``: after the ``have`` bytes there)."""
    try:
        with part.open(mode) as f, progress(desc=part.name.removesuffix(".part"), total=total,
                                            initial=have, unit="B", unit_scale=True,
                                            unit_divisor=1024) as bar:
            for chunk in chunks:
                f.write(chunk)
                bar.update(len(chunk))
    except OSError as err:  # a full disk, a folder without write permission
        raise FetchError(f"{part}: {_one_line(err)}") from err


def _download(url: str, part: Path, *, retries: int, timeout: float, backoff: float,
              sleep: Callable[[float], None]) -> None:
    for attempt in range(retries + 1):
        if attempt:
            sleep(backoff * 2 ** (attempt - 1))
        try:
            return _attempt(url, part, timeout)
        except _Transient as err:
            last = err
    raise FetchError(f"{url}: failed after {retries + 1} attempts; last error: {last}")


def _attempt(url: str, part: Path, timeout: float) -> None:
    """One request: resume ``part`` from its size (``Range``), or start it afresh."""
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and have:  # nothing after `have`: the part is complete (or wrong)
            return
        if err.code >= 500 or err.code in (408, 429):
            raise _Transient(f"HTTP {err.code} {err.reason}") from err
        raise FetchError(f"{url}: HTTP {err.code} {err.reason} (not retried)") from err
    except (OSError, http.client.HTTPException) as err:  # URLError is an OSError
        reason = getattr(err, "reason", None)  # URLError wraps the socket's error
        raise _Transient(_one_line(reason if isinstance(reason, OSError) else err)) from err
    with response:
        if response.headers.get_content_type() == "text/html":
            part.unlink(missing_ok=True)
            raise FetchError(f"{url}: the server sent an HTML page (Content-Type text/html), "
                             "not a checkpoint")
        if response.status != 206:  # a server that ignores Range sends the whole file
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        _write(_reads(response), part, "ab" if have else "wb", have, total)
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Transient(f"connection closed after {size} of {total} bytes")


def _reads(response: http.client.HTTPResponse) -> Iterator[bytes]:
    """The body in chunks; a network failure mid-way is transient (the part is kept).

    ``read1`` returns what one socket read gives: a stalled connection times out after the
    bytes received so far are written, where ``read(CHUNK)`` would lose them.
    """
    while True:
        try:
            chunk = response.read1(CHUNK)
        except (OSError, http.client.HTTPException) as err:
            raise _Transient(_one_line(err)) from err
        if not chunk:
            return
        yield chunk


def _verify(source: str, part: Path, algorithm: str, want: str) -> None:
    """Remove ``part`` and raise unless it is the checkpoint (no HTML page, the checksum)."""
    with part.open("rb") as f:
        head = f.read(256).lstrip().lower()
    if head.startswith(_HTML_START):
        part.unlink()
        raise FetchError(f"{source}: an HTML page, not a checkpoint (an error page saved "
                         "under the checkpoint's name?)")
    got = file_digest(part, algorithm)
    if not got.startswith(want):
        part.unlink()
        raise FetchError(f"{source}: {algorithm} mismatch: expected {want}, got {got}")


def main(argv: list[str] | None = None) -> int:
    """``python -m pixmim fetch --source S --checksum C --out F`` (the fetch_checkpoint rule)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m pixmim fetch",
                                description="Fetch a released checkpoint: resumed, retried, "
                                            "its checksum verified, renamed into place whole.")
    p.add_argument("--source", required=True, help="a path, file:// or http(s):// URL")
    p.add_argument("--checksum", default="",
                   help="sha256:<64 hex>, sha256:<8 hex> (OpenMMLab) or md5:<6-32 hex>")
    p.add_argument("--name", default="", help="the config's checkpoints entry (for messages)")
    p.add_argument("--out", required=True, help="the file to write")
    p.add_argument("--retries", type=int, default=5,
                   help="further attempts after a dropped connection or a 5xx (default 5)")
    args = p.parse_args(argv)
    if not args.checksum:
        where = f"checkpoints.{args.name}.checksum" if args.name else "--checksum"
        raise FetchError(f"{args.source}: no checksum ({where} is empty: its authors publish "
                         "none; pin the file's sha256 from a download you trust)")
    fetch(args.source, args.out, checksum=args.checksum, retries=args.retries)
    print(f"fetched {args.source} -> {args.out} ({args.checksum} verified)")
    return 0
