"""Headless Chromium against a local ``mlflow server``: what the MLflow UI shows a user.
Shared by the browser test (a store filled by hand) and the end-to-end test (the default
DAG's own store)."""

import html
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
NO_CHROMIUM = "no chromium on PATH or at /usr/bin/chromium (Debian: apt-get install chromium)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow server not healthy after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@contextmanager
def mlflow_server(uri: str, workdir: Path):
    """The base URL of a fresh ``mlflow server`` on the store ``uri``, stopped on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / "server.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", uri, "--workers", "1"]
    # MLflow 3 also starts a job runner and 7 huey consumers by default: not needed for the UI
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("w") as f:  # own process group: the finalizer stops the server and workers
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=workdir, env=env,
                                start_new_session=True)
    try:
        wait_healthy(url, proc, log)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _dump(url: str, tmp_path: Path) -> str:
    """The DOM of ``url`` once the React app has rendered (headless Chromium)."""
    profile = tmp_path / f"chromium-{time.monotonic_ns()}"
    cmd = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom",
           "--virtual-time-budget=60000", url]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def visible_text(page: str) -> str:
    body = page[page.find("<body"):]
    body = re.sub(r"<(script|style|svg)\b.*?</\1>", " ", body, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


def _until(url: str, tmp_path: Path, view, expect: tuple[str, ...], tries: int) -> str:
    """``view`` of the rendered page, rendered again (up to ``tries`` times) while it lacks
    any of ``expect``: the UI loads some panels (the charts, an artifact's image) on timers
    that race the virtual-time budget."""
    for _ in range(tries):
        out = view(_dump(url, tmp_path))
        if all(e in out for e in expect):
            break
    return out


def dom(url: str, tmp_path: Path, expect: tuple[str, ...] = (), tries: int = 1) -> str:
    """The DOM of ``url`` once rendered (retried as :func:`_until`)."""
    return _until(url, tmp_path, lambda page: page, expect, tries)


def render(url: str, tmp_path: Path, expect: tuple[str, ...] = (), tries: int = 3) -> str:
    """The visible text of ``url`` once rendered (retried as :func:`_until`)."""
    return _until(url, tmp_path, visible_text, expect, tries)


def runs_page(url: str, exp_id: str, search: str | None = None, mode: str = "") -> str:
    query = [f"searchFilter={quote(search, safe='')}"] if search else []
    query += [f"compareRunsMode={mode}"] if mode else []
    return f"{url}/#/experiments/{exp_id}/runs" + ("?" + "&".join(query) if query else "")
