"""Warm job starts: a local run's jobs fork from one process that has already imported the
deep-learning stack.

A job of the workflow is ``python -m pixmim <command> ...``: a fresh interpreter that spends
~10 CPU-seconds importing torch, torchvision (whose ``ops`` import ``torch._dynamo``), timm and
MLflow before its first step, which on the embedded default is often longer than the step
itself. For a local run (config key ``warm_start``), the Snakefile starts one server per
Snakemake invocation (:func:`start`, stopped by :func:`stop`) that imports those libraries
once (:data:`PRELOAD`, by name) and listens on a Unix socket named by the environment variable
:data:`ENV`. A job's ``python -m pixmim`` then becomes a client (:func:`relay`): it hands the
server its arguments, working directory, environment, ``sys.path`` and its standard streams
(the file descriptors themselves, so the job writes its log where the rule redirected it); the
server forks, and the fork becomes that command, run by the same :func:`pixmim.__main__.main`.
The client stays the job's process for Snakemake: it forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT
and SIGUSR1/2 to the fork and ends as the fork ended (its exit status, or killed by the same
signal). A client killed outright (SIGKILL) closes its connection, and the server kills the
fork. A job started while the server is still importing waits for it to listen. Anything
else runs the command in the client itself, as a cold start: no variable, no server (or its
process gone before it listened), another interpreter or environment (``--sdm conda``), a
job under SLURM (``SLURM_JOB_ID``) or a process of torchrun (``LOCAL_RANK``): those keep
their launcher's process tree and accounting.

What a fork inherits that a fresh interpreter would not have: the preloaded modules
(third-party libraries, and of pixmim only the mmcv stand-in that OpenMMLab's import needs;
pixmim's own modules are imported by the fork, so plugins and code changes between runs
behave as in a cold start) and the hash seed (``PYTHONHASHSEED``);
Python's and NumPy's global generators are reseeded from the OS, as at a cold start, and
torch's default generator is untouched (a fresh process's fixed default: the server draws no
random numbers). Snakemake's ``benchmark:`` files measure the client's process tree, not the
fork: the dress rehearsal, which reads its memory figures from them, runs cold; a job's own
``resources`` (``metrics.json``) are measured inside the fork, whose peak resident memory
leaves out the preloaded libraries' pages that the job never touches (on the tests' tiny
default DAG every job's ``peak_host_mem_mb`` read 320-330 MB lower warm than cold).

The server freezes the garbage collector's view of what it preloaded (``gc.freeze``, as
CPython's documentation advises for a server that forks): a fork's collections then never walk
the ~600,000 preloaded objects, whose reference counts each walk writes, copying the pages
they sit on. Measured on a tiny table job forked from the server (`python -m pixmim table`
of the tests' tiny DAG, 3 forks each): 3.7 s wall, 3.1-3.2 CPU-s without it, 1.3 s and
0.8 CPU-s with it, against 0.55 s for the same command in the already warm process. A job
learns its fork's end at once: SIGCHLD wakes the server's wait (``signal.set_wakeup_fd``).

Standard library only at import (the Snakefile imports this module at every DAG build).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import io
import json
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pixmim.io import write_text

ENV = "PIXMIM_WARM"  # the server's socket path, set for the jobs of a local run
# A server started once (:func:`launch`, or `python -m pixmim warm --socket PATH`) that every
# local Snakemake run started with this variable uses instead of starting its own (~12 CPU-s
# of imports each): the test suite's DAG runs share one per test process.
SHARED = "PIXMIM_WARM_SHARED"
# What a job imports before its first step (a cold pretraining: ~10 CPU-s, `python -X
# importtime`): torch, torchvision and timm, MLflow with its SQL store (alembic, SQLAlchemy)
# and pandas; and what a dense job imports from OpenMMLab (~4-5 CPU-s more each, measured:
# pixmim.downstream.preload), behind the mmcv stand-in that must precede it.
PRELOAD = ("torch", "torchvision", "timm", "mlflow", "mlflow.store.tracking.sqlalchemy_store",
           "pandas", "pixmim.downstream.preload")
# A job started by a launcher that tracks its processes stays that launcher's child.
COLD_WHEN = ("SLURM_JOB_ID", "LOCAL_RANK", "TORCHELASTIC_RUN_ID")
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)
_HEADER = struct.Struct("!Q")
# Seconds a job waits at most for a server that has not started listening yet (it takes
# ~10-14).
AWAIT_LIMIT = 60.0


def _identity() -> dict[str, str]:
    """What client and server must share: the same interpreter in the same environment."""
    return {"executable": os.path.realpath(sys.executable), "prefix": sys.prefix,
            "version": sys.version}


# --- the client: a job's `python -m pixmim ...` -------------------------------------------

def relay(argv: Sequence[str]) -> int | None:
    """Run ``python -m pixmim argv`` in a fork of the warm server and return its exit status
    (after this process re-raises a signal that killed the fork); None where there is no
    usable server: the caller runs the command itself."""
    path = os.environ.get(ENV)
    if not path or any(k in os.environ for k in COLD_WHEN):
        return None
    _await_server(path)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        request = dict(_identity(), argv=[sys.argv[0], *argv], cwd=os.getcwd(),
                       env=dict(os.environ), path=list(sys.path))
        payload = json.dumps(request).encode()
        socket.send_fds(conn, [_HEADER.pack(len(payload))], [0, 1, 2])
        conn.sendall(payload)
        reader = conn.makefile("r")
        first = reader.readline().split()
    except OSError:
        conn.close()
        return None
    if first[:1] != ["pid"]:  # "cold": another interpreter or environment
        conn.close()
        return None
    child = int(first[1])

    def forward(signum, _frame):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    line = reader.readline().split()
    if line[:1] != ["exit"]:
        print(f"pixmim: the warm server ({path}) went away while running process {child}",
              file=sys.stderr)
        return 1
    code = os.waitstatus_to_exitcode(int(line[1]))
    if code < 0:  # killed by a signal: end the same way, as the shell and Snakemake see it
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def _pid_file(socket_path: str) -> Path:
    """Where :func:`launch` writes the server's pid: beside its socket."""
    return Path(socket_path).with_name("pid")


def _importing(path: str) -> bool:
    """Whether the process :func:`launch` started for ``path`` (its pid file) is alive."""
    try:
        os.kill(int(_pid_file(path).read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def _await_server(path: str) -> None:
    """Wait while the server is still importing (it listens ~10-14 s after the run starts):
    a job started meanwhile would spend longer importing cold. Not once the server's process
    (:func:`_importing`) is gone, nor past :data:`AWAIT_LIMIT` seconds."""
    deadline = time.monotonic() + AWAIT_LIMIT
    while not os.path.exists(path) and _importing(path) and time.monotonic() < deadline:
        time.sleep(0.05)


# --- the server -------------------------------------------------------------------------------

def _recv_exactly(conn: socket.socket, size: int, data: bytes = b"") -> bytes:
    """``data`` completed to ``size`` bytes from ``conn``."""
    while len(data) < size:
        more = conn.recv(min(size - len(data), 1 << 16))
        if not more:
            raise ConnectionError("request cut short")
        data += more
    return data


def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    head, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
    (size,) = _HEADER.unpack(_recv_exactly(conn, _HEADER.size, head))
    return json.loads(_recv_exactly(conn, size)), fds


def _stream(fd: int, name: str) -> io.TextIOWrapper:
    """A text stream over ``fd`` as the interpreter opens its standard streams at start-up:
    stdout line-buffered on a terminal, stderr always, both written through with
    ``PYTHONUNBUFFERED``; stderr's errors backslash-replaced."""
    reading = name == "stdin"
    raw = open(fd, "rb" if reading else "wb", buffering=0, closefd=False)  # noqa: SIM115
    if reading:
        return io.TextIOWrapper(io.BufferedReader(raw), encoding=sys.stdin.encoding)
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    return io.TextIOWrapper(raw if unbuffered else io.BufferedWriter(raw),
                            encoding=sys.stdout.encoding,
                            errors="backslashreplace" if name == "stderr" else "strict",
                            line_buffering=os.isatty(fd) or name == "stderr",
                            write_through=unbuffered or name == "stderr")


def _become(request: dict, fds: list[int]) -> list[str]:
    """In the fork: take on the client's streams, directory, environment, arguments and
    path; return the command's arguments (``argv`` without the program)."""
    signal.set_wakeup_fd(-1)
    for sig in (*FORWARDED, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.pop(ENV, None)  # the command itself, and what it starts, runs here
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin, sys.stdout, sys.stderr = (_stream(0, "stdin"), _stream(1, "stdout"),
                                         _stream(2, "stderr"))
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
    sys.path[:] = request["path"]
    sys.argv = list(request["argv"])
    sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
    # a fresh interpreter seeds these from the OS; forks would otherwise share one stream
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and "torch" in sys.modules:  # a fresh torch reads it at import
        sys.modules["torch"].set_num_threads(int(threads))
    return sys.argv[1:]


def serve(path: str, preload: Sequence[str] = PRELOAD) -> list[str] | None:
    """Import ``preload``, then serve on ``path`` until SIGTERM (or until the process that
    started the server is gone) and no fork is left running. Returns None in the server; in
    a fork, the command's arguments, for the caller to run as this process's command."""
    for name in preload:
        try:
            importlib.import_module(name)
        except ImportError as e:  # an optional library missing: its jobs import it cold
            print(f"warm: not preloaded: {name} ({e})", file=sys.stderr)
    if threading.active_count() > 1:  # a fork copies only the forking thread
        print(f"warm: {threading.active_count()} threads after preloading; not serving",
              file=sys.stderr)
        return None
    gc.collect()
    gc.freeze()  # the forks' collections skip what is preloaded (module docstring)
    identity = _identity()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    os.replace(path + ".tmp", path)  # clients connect only once the server listens
    listener.listen(64)
    parent, server = os.getppid(), os.getpid()
    children: dict[int, socket.socket] = {}
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # its jobs' clients forward Ctrl-C
    # a fork's end (SIGCHLD) or a stop (SIGTERM) writes a byte here, which wakes the select
    wake, wake_w = os.pipe()
    os.set_blocking(wake, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the byte is written
    print(f"warm: serving on {path} (pid {server}, preloaded {', '.join(preload)})",
          file=sys.stderr, flush=True)

    def stop_listening() -> None:  # in the server only (a fork closes its copy itself)
        if os.getpid() == server and listener.fileno() >= 0:
            listener.close()
            os.unlink(path)

    try:
        while True:
            if stopping.is_set() or os.getppid() != parent:
                stop_listening()
                if not children:
                    return None
            ready, _, _ = select.select(
                [s for s in (wake, listener, *children.values())
                 if not isinstance(s, socket.socket) or s.fileno() >= 0], [], [], 0.5)
            for s in ready:
                if not isinstance(s, socket.socket):  # the wake-up pipe
                    _drain(wake)
                elif s is listener:
                    argv = _accept(listener, identity, children)
                    if argv is not None:  # this is the fork
                        os.close(wake)
                        os.close(wake_w)
                        return argv
                elif not s.recv(1, socket.MSG_PEEK):  # the client is gone: so is its job
                    pid = next(p for p, c in children.items() if c is s)
                    os.kill(pid, signal.SIGKILL)
            _reap(children)
    finally:
        stop_listening()


def _drain(fd: int) -> None:
    """Read the non-blocking ``fd`` until it is empty."""
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _accept(listener: socket.socket, identity: dict, children: dict) -> list[str] | None:
    conn, _ = listener.accept()
    try:
        request, fds = _recv_request(conn)
    except (OSError, ValueError) as e:
        print(f"warm: a bad request ({e})", file=sys.stderr)
        conn.close()
        return None
    if any(request.get(k) != v for k, v in identity.items()):
        conn.sendall(b"cold\n")
        conn.close()
        for fd in fds:
            os.close(fd)
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        print(f"warm: process {os.getpid()}: {' '.join(request['argv'][1:])}",
              file=sys.stderr, flush=True)
        listener.close()
        for c in children.values():
            c.close()
        conn.close()
        return _become(request, fds)
    for fd in fds:
        os.close(fd)
    conn.sendall(f"pid {pid}\n".encode())
    children[pid] = conn
    return None


def _reap(children: dict[int, socket.socket]) -> None:
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            try:
                conn.sendall(f"exit {status}\n".encode())
            except OSError:
                pass
            conn.close()


# --- the workflow's side: one server per local Snakemake run -------------------------------

_server: dict = {}


def launch(log: Path) -> tuple[subprocess.Popen, str]:
    """Start a server in the background, its output in ``log``; return its process and its
    socket's path (in a new temporary folder, the server's pid beside it, so that a job
    started before it listens waits for it)."""
    path = os.path.join(tempfile.mkdtemp(prefix="pixmim-warm-"), "socket")
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")  # each fork sets its job's own thread count
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pixmim", "warm", "--socket", path],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                start_new_session=True)
    write_text(_pid_file(path), str(proc.pid))  # atomic: a client reads all of it or none
    return proc, path


def start(config: dict, workflow) -> None:
    """Start the server for this Snakemake run's local jobs (``onstart``), or use the one
    named by :data:`SHARED`; nothing where ``warm_start`` is off, for a rehearsal, where the
    jobs run elsewhere (a cluster executor) or in their own environments (``--sdm conda``)."""
    if (not config.get("warm_start", True) or config.get("rehearsal")
            or not workflow.local_exec or os.name != "posix"):
        return
    if "conda" in str(getattr(workflow.deployment_settings, "deployment_method", "")).lower():
        return
    shared = os.environ.get(SHARED, "")
    if shared and (os.path.exists(shared) or _importing(shared)):  # its owner stops it
        os.environ[ENV] = shared
        return
    proc, path = launch(Path(config["results"]) / "logs" / "warm.log")
    _server.update(proc=proc, path=path)
    os.environ[ENV] = path


def halt(proc: subprocess.Popen, path: str) -> None:
    """Stop a server :func:`launch` started (it ends once its forks have) and remove its
    folder."""
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def stop() -> None:
    """Stop this run's server (``onsuccess`` / ``onerror``), if it started one."""
    os.environ.pop(ENV, None)
    if "proc" in _server:
        halt(_server.pop("proc"), _server.pop("path"))


def main(argv: list[str] | None = None) -> list[str] | None:
    """``python -m pixmim warm --socket PATH``: the server (the workflow starts it)."""
    p = argparse.ArgumentParser(
        prog="python -m pixmim warm",
        description="Serve warm job starts on a Unix socket: import torch, timm and MLflow "
                    "once, fork one process per job (the workflow starts it; config key "
                    "warm_start).")
    p.add_argument("--socket", required=True, help="the socket's path (must not exist)")
    p.add_argument("--preload", default=",".join(PRELOAD),
                   help="the modules to import before serving, comma-separated (default: "
                        "%(default)s)")
    a = p.parse_args(argv)
    return serve(a.socket, [m for m in a.preload.split(",") if m])
