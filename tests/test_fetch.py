"""Fetching a released checkpoint, against a loopback HTTP server that serves, cuts a transfer
mid-way, stalls, fails, ignores Range and sends error pages; and from a local path. Every
expected checksum is hashlib's over the bytes the test wrote; no test waits on a backoff (the
waits are recorded instead)."""

from __future__ import annotations

import hashlib
import http.server
import random
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from pixmim.fetch import FetchError, fetch, openmmlab_hash

BODY = random.Random(0).randbytes(300_000)
SHA = hashlib.sha256(BODY).hexdigest()
MD5 = hashlib.md5(BODY).hexdigest()
OTHER = random.Random(1).randbytes(len(BODY))
PAGE = b"<!DOCTYPE html>\n<html><body><h1>Sign in to download</h1></body></html>\n"

Answer = Callable[[http.server.BaseHTTPRequestHandler, int], None]


# ------------------------------------------------------------ the loopback server
class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Answer] = {}
        self.log: list[tuple[str, str | None, int]] = []  # (path, Range header, status)
        self.release = threading.Event()  # ends a stalled answer

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        seen = sum(path == self.path for path, _, _ in self.server.log)
        self.server.routes[self.path](self, seen)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.server.log.append((self.path, self.headers.get("Range"), int(code)))

    def log_message(self, *args) -> None:  # quiet
        pass


def serve(body: bytes, *, ranges: bool = True, content_type: str = "application/octet-stream",
          length: bool = True) -> Answer:
    """Answer with ``body``: 206 from a ``Range: bytes=N-`` (416 past its end) if ``ranges``."""

    def answer(h: http.server.BaseHTTPRequestHandler, seen: int) -> None:
        start, asked = 0, h.headers.get("Range")
        if ranges and asked:
            start = int(re.fullmatch(r"bytes=(\d+)-", asked).group(1))
            if start >= len(body):
                h.send_response(416)
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            h.send_response(200)
        h.send_header("Content-Type", content_type)
        if length:  # else the body ends when the connection closes (HTTP/1.0)
            h.send_header("Content-Length", str(len(body) - start))
        h.end_headers()
        h.wfile.write(body[start:])

    return answer


def cut(body: bytes, after: int, *, stall: bool = False) -> Answer:
    """First request: announce all of ``body``, send ``after`` bytes, then close the
    connection (or, with ``stall``, send nothing more until the test ends); later ones are
    served with Range."""
    rest = serve(body)

    def answer(h: http.server.BaseHTTPRequestHandler, seen: int) -> None:
        if seen:
            return rest(h, seen)
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body[:after])
        h.wfile.flush()
        if stall:
            h.server.release.wait(5)

    return answer


def fail(status: int, times: int = 10**9, then: Answer | None = None) -> Answer:
    def answer(h: http.server.BaseHTTPRequestHandler, seen: int) -> None:
        if seen < times:
            return h.send_error(status)
        then(h, seen)

    return answer


@pytest.fixture
def server():
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def out(tmp_path) -> Path:
    """The folder the checkpoint goes to (``out / "w.pth"``)."""
    return tmp_path / "out"


def get(source: str | Path, out: Path, sha256: str = SHA, **kwargs) -> tuple[Path, list]:
    """``fetch`` into ``out / "w.pth"`` checking ``sha256`` (a digest or prefix, or a whole
    ``algorithm:hex`` checksum); also returns the backoff waits it asked for."""
    waits: list[float] = []
    kwargs = {"retries": 3, "backoff": 0.5, "sleep": waits.append, **kwargs}
    checksum = sha256 if ":" in sha256 else f"sha256:{sha256}"
    return fetch(source, out / "w.pth", checksum=checksum, **kwargs), waits


def refused(source: str | Path, out: Path, sha256: str = SHA, **kwargs) -> str:
    """The one-line message of the FetchError that fetching ``source`` raises."""
    with pytest.raises(FetchError) as err:
        get(source, out, sha256, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    return message


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*"))


# ------------------------------------------------------------ downloads that succeed
def test_a_download_lands_at_dest_and_leaves_no_part(server, out):
    server.routes["/w.pth"] = serve(BODY)
    dest, waits = get(server.url("/w.pth"), out)
    assert dest == out / "w.pth" and dest.read_bytes() == BODY
    assert leftovers(out) == ["w.pth"] and waits == []
    assert server.log == [("/w.pth", None, 200)]


@pytest.mark.parametrize("stall", [False, True], ids=["dropped", "timed-out"])
def test_a_transfer_cut_midway_resumes_with_a_range_request(server, out, stall):
    server.routes["/w.pth"] = cut(BODY, 100_000, stall=stall)
    dest, waits = get(server.url("/w.pth"), out, timeout=0.3)
    assert dest.read_bytes() == BODY
    assert server.log == [("/w.pth", None, 200), ("/w.pth", "bytes=100000-", 206)]
    assert waits == [0.5]


def test_a_part_left_by_an_earlier_run_is_resumed(server, out):
    out.mkdir()
    (out / "w.pth.part").write_bytes(BODY[:123_456])
    server.routes["/w.pth"] = serve(BODY)
    dest, _ = get(server.url("/w.pth"), out)
    assert dest.read_bytes() == BODY and leftovers(out) == ["w.pth"]
    assert server.log == [("/w.pth", "bytes=123456-", 206)]


def test_a_complete_part_is_verified_and_renamed(server, out):
    """Killed between the last byte and the rename: the server has nothing more (416)."""
    out.mkdir()
    (out / "w.pth.part").write_bytes(BODY)
    server.routes["/w.pth"] = serve(BODY)
    assert get(server.url("/w.pth"), out)[0].read_bytes() == BODY
    assert server.log == [("/w.pth", f"bytes={len(BODY)}-", 416)]


def test_a_server_that_ignores_range_restarts_the_file(server, out):
    out.mkdir()
    (out / "w.pth.part").write_bytes(BODY[:1000])
    server.routes["/w.pth"] = serve(BODY, ranges=False)
    assert get(server.url("/w.pth"), out)[0].read_bytes() == BODY  # not appended to the part
    assert server.log == [("/w.pth", "bytes=1000-", 200)]


def test_5xx_is_retried_with_exponential_backoff(server, out):
    server.routes["/w.pth"] = fail(503, times=3, then=serve(BODY))
    dest, waits = get(server.url("/w.pth"), out)
    assert dest.read_bytes() == BODY
    assert [status for _, _, status in server.log] == [503, 503, 503, 200]
    assert waits == [0.5, 1.0, 2.0]


def test_the_progress_bar_shows_the_bytes_and_the_percentage(server, out, capsys):
    server.routes["/w.pth"] = serve(BODY)
    server.routes["/nolength.pth"] = serve(BODY, length=False)
    get(server.url("/w.pth"), out)
    err = capsys.readouterr().err
    assert "w.pth: 100%" in err and "293k/293k" in err  # 300,000 B in KiB
    get(server.url("/nolength.pth"), out / "nolength")  # the length is unknown: no percentage
    err = capsys.readouterr().err
    assert "w.pth: 293kB [" in err and "%" not in err


# ------------------------------------------------------------ failures
@pytest.mark.parametrize("status", [403, 404, 410])
def test_a_4xx_is_reported_at_once_without_retry(server, out, status):
    server.routes["/w.pth"] = fail(status)
    message = refused(server.url("/w.pth"), out)
    assert server.url("/w.pth") in message and f"HTTP {status}" in message
    assert len(server.log) == 1 and leftovers(out) == []


def test_retries_exhausted_name_the_url_the_attempts_and_the_last_error(server, out):
    server.routes["/w.pth"] = fail(500)
    waits: list[float] = []
    message = refused(server.url("/w.pth"), out, sleep=waits.append)
    assert message.startswith(server.url("/w.pth"))
    assert "4 attempts" in message and "HTTP 500" in message
    assert len(server.log) == 4 and waits == [0.5, 1.0, 2.0] and leftovers(out) == []


def test_a_refused_connection_is_retried_then_reported(out):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/w.pth"
    message = refused(url, out, retries=2)
    assert url in message and "3 attempts" in message and "ConnectionRefusedError" in message


@pytest.mark.parametrize("content_type, says", [
    ("text/html; charset=utf-8", "HTML page (Content-Type text/html)"),  # the body is not read
    ("application/octet-stream", "an HTML page, not a checkpoint"),  # it only starts like one
])
def test_an_html_page_is_refused_and_leaves_nothing(server, out, content_type, says):
    server.routes["/w.pth"] = serve(PAGE, content_type=content_type)
    message = refused(server.url("/w.pth"), out)
    assert server.url("/w.pth") in message and says in message
    assert len(server.log) == 1 and leftovers(out) == []


def test_a_write_error_is_reported_at_once(server, out):
    (out / "w.pth.part").mkdir(parents=True)  # the part cannot be opened as a file
    server.routes["/w.pth"] = serve(BODY)
    message = refused(server.url("/w.pth"), out)
    assert str(out / "w.pth.part") in message and "IsADirectoryError" in message
    assert len(server.log) == 1


def test_a_checksum_mismatch_names_both_and_leaves_nothing(server, out):
    server.routes["/w.pth"] = serve(OTHER)
    message = refused(server.url("/w.pth"), out)
    assert f"expected {SHA}, got {hashlib.sha256(OTHER).hexdigest()}" in message
    assert leftovers(out) == []


def test_a_malformed_checksum_is_refused_before_any_request(server, out):
    server.routes["/w.pth"] = serve(BODY)
    bad = ["", SHA, "sha256:", f"sha256:{SHA[:7]}", f"sha256:{SHA[:63]}", f"sha256:{SHA[:8]}0",
           "sha256:" + "g" * 64, f"md5:{MD5[:5]}", f"md5:{MD5}0", f"sha1:{SHA[:40]}"]
    for checksum in bad:
        with pytest.raises(FetchError, match="is none of sha256:<64 hex>"):
            fetch(server.url("/w.pth"), out / "w.pth", checksum=checksum)
    assert server.log == [] and leftovers(out) == []


def test_an_unsupported_scheme_is_refused(out):
    assert "unsupported source" in refused("ftp://example.org/w.pth", out)


# ------------------------------------------------------------ OpenMMLab's hash prefix
def test_openmmlab_hash_reads_the_prefix_from_a_name_or_url():
    assert openmmlab_hash("pixmim_vit-base-p16_300e_in1k_20230322-0123abcd.pth") == "0123abcd"
    assert openmmlab_hash("https://x.org/a/b_20230322-0123abcd.pth?download=1") == "0123abcd"
    for name in ["mae_pretrain_vit_base.pth", "a-0123abcd.pth.part", "a-0123abc.pth", "a.pth"]:
        assert openmmlab_hash(name) is None


def test_an_openmmlab_prefix_is_accepted_and_a_wrong_one_refused(server, out):
    path = f"/pixmim_vit-base_20230322-{SHA[:8]}.pth"
    server.routes[path] = serve(BODY)
    prefix = openmmlab_hash(server.url(path))
    assert prefix == SHA[:8]
    assert get(server.url(path), out, prefix)[0].read_bytes() == BODY
    wrong = f"{int(prefix, 16) ^ 1:08x}"
    message = refused(server.url(path), out / "wrong", wrong)
    assert f"expected {wrong}, got {SHA}" in message and leftovers(out / "wrong") == []


def test_a_published_md5_prefix_is_accepted_and_a_wrong_one_refused(server, out):
    """facebookresearch/mae publishes 6 hex digits of each file's md5."""
    server.routes["/w.pth"] = serve(BODY)
    assert get(server.url("/w.pth"), out, f"md5:{MD5[:6]}")[0].read_bytes() == BODY
    wrong = f"{int(MD5[:6], 16) ^ 1:06x}"
    message = refused(server.url("/w.pth"), out / "wrong", f"md5:{wrong}")
    assert f"md5 mismatch: expected {wrong}, got {MD5}" in message
    assert leftovers(out / "wrong") == []


# ------------------------------------------------------------ an existing dest, a local file
def test_an_existing_good_dest_is_not_fetched_again(server, out):
    out.mkdir()
    (out / "w.pth").write_bytes(BODY)
    server.routes["/w.pth"] = serve(BODY)
    assert get(server.url("/w.pth"), out)[0].read_bytes() == BODY
    assert get(server.url("/w.pth"), out, SHA[:8])[0].read_bytes() == BODY
    assert server.log == []


def test_an_existing_wrong_dest_is_replaced_or_removed(server, out):
    """A stale file is not the checkpoint: fetched again, and gone if the fetch fails."""
    out.mkdir()
    (out / "w.pth").write_bytes(OTHER)
    server.routes["/w.pth"] = serve(BODY)
    assert get(server.url("/w.pth"), out)[0].read_bytes() == BODY
    assert len(server.log) == 1
    (out / "w.pth").write_bytes(OTHER)
    server.routes["/gone.pth"] = fail(404)
    refused(server.url("/gone.pth"), out)
    assert leftovers(out) == []


@pytest.mark.parametrize("form", ["path", "str", "file-url"])
def test_a_local_file_is_copied(tmp_path, out, form):
    src = tmp_path / "released.pth"
    src.write_bytes(BODY)
    source = {"path": src, "str": str(src), "file-url": src.as_uri()}[form]
    assert get(source, out)[0].read_bytes() == BODY and leftovers(out) == ["w.pth"]
    assert src.read_bytes() == BODY


@pytest.mark.parametrize("content, expect", [(OTHER, "sha256 mismatch"), (PAGE, "HTML page")])
def test_a_local_file_gets_the_same_checks(tmp_path, out, content, expect):
    src = tmp_path / "released.pth"
    src.write_bytes(content)
    message = refused(src, out)
    assert str(src) in message and expect in message and leftovers(out) == []


def test_a_missing_local_file_is_reported(tmp_path, out):
    message = refused(tmp_path / "absent.pth", out)
    assert str(tmp_path / "absent.pth") in message and "no such file" in message
