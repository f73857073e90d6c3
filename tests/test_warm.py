"""Warm job starts (pixmim.warm): a job's ``python -m pixmim ...`` run in a fork of a server
that preloaded libraries behaves as the same command run cold: its streams, directory,
environment, arguments and exit status; signals reach it; a client killed outright takes
its job with it; a job without a usable server runs cold; the stage's results are the same
bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pixmim.warm import PRELOAD
from tests.conftest import ROOT

PROBE = "tests.plugins.warm_probe"


def start_server(path: Path, preload: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "pixmim", "warm", "--socket", str(path),
                             "--preload", preload], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the server did not start listening"
        time.sleep(0.05)
    return proc


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server that preloaded numpy only (the probe imports neither numpy nor torch)."""
    path = tmp_path_factory.mktemp("warm") / "socket"
    proc = start_server(path, "numpy")
    yield path
    proc.terminate()
    proc.wait(timeout=30)


def probe(tmp: Path, socket: Path | None, *, then: str = "exit", code: int = 0,
          **env: str) -> tuple[subprocess.Popen, Path, Path]:
    """Start the probe job as a rule starts a job (``python -m pixmim run``, its streams
    redirected to files, in its own folder); returns the process, its report and log."""
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "config.yaml"
    cfg.write_text(yaml.safe_dump({"stage": "warm_probe", "plugins": [PROBE], "then": then,
                                   "code": code}))
    full = {**os.environ, "WARM_PROBE_MARKER": tmp.name, **env,
            "PYTHONPATH": str(ROOT)}  # the plugin's package, as the workflow's cwd gives it
    full.pop("PIXMIM_WARM", None)
    if socket is not None:
        full["PIXMIM_WARM"] = str(socket)
    log = tmp / "job.log"
    with open(log, "w") as out, open(tmp / "stdin.txt", "w+") as stdin:
        stdin.write("a line on stdin\n")
        stdin.seek(0)
        proc = subprocess.Popen([sys.executable, "-m", "pixmim", "run", "--config", "config.yaml",
                                 "--out", "report.json"], cwd=tmp, env=full, stdin=stdin,
                                stdout=out, stderr=subprocess.STDOUT)
    return proc, tmp / "report.json", log


def wait_for(path: Path, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} was not written"
        time.sleep(0.05)
    return json.loads(path.read_text())


def test_a_job_in_a_fork_sees_what_it_would_see_cold(server, tmp_path):
    cold, cold_report, cold_log = probe(tmp_path / "job", None, code=3)
    assert cold.wait(timeout=120) == 3
    cold_view = wait_for(cold_report)
    warm, warm_report, warm_log = probe(tmp_path / "job", server, code=3)
    assert warm.wait(timeout=120) == 3
    warm_view = wait_for(warm_report)

    # cold: the process itself, nothing preloaded; warm: a fork of the server
    assert cold_view["pid"] == cold.pid and cold_view["preloaded"] == []
    assert warm_view["pid"] != warm.pid and warm_view["preloaded"] == ["numpy"]
    # the preloaded objects are frozen out of the fork's collections (numpy: thousands)
    assert cold_view["gc_frozen"] == 0 and warm_view["gc_frozen"] > 1000
    # the server's SIGCHLD handler and wake-up pipe are not the job's
    for key in ("wakeup_fd", "sigchld"):
        assert warm_view[key] == cold_view[key], key
    # and otherwise the same process: directory, arguments, environment, path, streams
    for key in ("cwd", "argv", "marker", "path", "stdin"):
        assert warm_view[key] == cold_view[key], key
    assert warm_view["marker"] == "job" and warm_view["stdin"] == "a line on stdin\n"
    assert warm_view["warm_env"] is None  # what the job starts runs in the job's process
    assert warm_log.read_text() == cold_log.read_text() == "probe stdout\nprobe stderr\n"


def test_a_run_uses_the_shared_server_and_leaves_it_running(server, tmp_path, monkeypatch):
    """A Snakemake run (:func:`pixmim.warm.start` / :func:`~pixmim.warm.stop`) with
    ``PIXMIM_WARM_SHARED`` naming a live server hands its jobs that server and leaves it
    running; naming none, it starts its own and stops it."""
    from types import SimpleNamespace

    from pixmim import warm

    launched = []

    def launch(log):
        launched.append(SimpleNamespace(terminate=lambda: launched.append("stopped"),
                                        wait=lambda timeout: 0))
        return launched[0], str(tmp_path / "own" / "socket")

    monkeypatch.setattr(warm, "launch", launch)
    flow = SimpleNamespace(local_exec=True, deployment_settings=None)
    config = {"results": str(tmp_path / "results")}
    monkeypatch.delenv(warm.ENV, raising=False)
    monkeypatch.setenv(warm.SHARED, str(server))
    warm.start(config, flow)
    assert os.environ[warm.ENV] == str(server) and launched == []
    warm.stop()
    assert warm.ENV not in os.environ
    proc, report, _ = probe(tmp_path / "after", server)  # it still serves
    assert proc.wait(timeout=120) == 0 and wait_for(report)["preloaded"] == ["numpy"]

    monkeypatch.setenv(warm.SHARED, str(tmp_path / "gone" / "socket"))
    warm.start(config, flow)
    assert os.environ[warm.ENV] == str(tmp_path / "own" / "socket") and len(launched) == 1
    warm.stop()
    assert launched[1:] == ["stopped"]


def test_an_error_is_reported_by_the_job_as_cold(server, tmp_path):
    proc, _, log = probe(tmp_path / "crash", server, then="crash")
    assert proc.wait(timeout=120) == 1
    assert "RuntimeError: probe crashed" in log.read_text()


def test_sigterm_reaches_the_job_and_its_exit_status_comes_back(server, tmp_path):
    proc, report, _ = probe(tmp_path / "term", server, then="wait")
    view = wait_for(report)
    assert view["pid"] != proc.pid
    proc.send_signal(signal.SIGTERM)  # what SLURM and Snakemake send to the job
    assert proc.wait(timeout=30) == 75  # the stage's own answer (a preempted stage's)


def test_a_job_killed_by_a_signal_ends_its_client_the_same_way(server, tmp_path):
    proc, report, _ = probe(tmp_path / "hup", server, then="wait")
    wait_for(report)
    proc.send_signal(signal.SIGHUP)  # forwarded: the job notes it, then ends by it
    assert proc.wait(timeout=30) == -signal.SIGHUP
    assert report.with_suffix(".signal").read_text() == "SIGHUP"


def test_a_client_killed_outright_takes_its_job_with_it(server, tmp_path):
    proc, report, _ = probe(tmp_path / "kill", server, then="wait")
    job = wait_for(report)["pid"]
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{job}").exists() and "Z" not in _state(job):
        assert time.monotonic() < deadline, "the job outlived its killed client"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:  # gone between the check and the read (ENOENT, or ESRCH mid-exit)
        return "Z"


@pytest.mark.parametrize("env", [{"SLURM_JOB_ID": "7"}, {"LOCAL_RANK": "0"}, {}],
                         ids=["under-slurm", "under-torchrun", "no-server"])
def test_a_job_without_a_usable_server_runs_cold(server, tmp_path, env):
    socket = server if env else tmp_path / "no-such-socket"
    proc, report, _ = probe(tmp_path / "cold", socket, **env)
    assert proc.wait(timeout=120) == 0
    view = wait_for(report)
    assert view["pid"] == proc.pid and view["preloaded"] == []


def test_a_job_started_while_the_server_imports_waits_for_it(tmp_path):
    """As the workflow starts it (:func:`pixmim.warm.start`: the server's pid beside its
    socket), a job started before the server listens runs warm, not cold; a job whose server
    is gone before listening runs cold at once."""
    from pixmim import warm

    folder = tmp_path / "server"
    folder.mkdir()
    socket_path = folder / "socket"
    # a server that takes 3 s longer to import than it does: the job starts long before
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3); "
                             "from pixmim.__main__ import main; main(['warm', '--socket', "
                             f"{str(socket_path)!r}, '--preload', 'numpy'])"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)
    (folder / "pid").write_text(str(proc.pid))
    try:
        job, report, _ = probe(tmp_path / "early", socket_path)
        assert job.wait(timeout=120) == 0
        assert wait_for(report)["preloaded"] == ["numpy"]  # a fork of the server
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    gone = folder.with_name("gone")
    gone.mkdir()
    (gone / "pid").write_text(str(proc.pid))  # ended, never listened
    start = time.monotonic()
    job, report, _ = probe(tmp_path / "gone", gone / "socket")
    assert job.wait(timeout=120) == 0 and wait_for(report)["preloaded"] == []
    assert time.monotonic() - start < warm.AWAIT_LIMIT


def test_a_stopped_server_finishes_its_jobs_then_ends(tmp_path):
    path = tmp_path / "socket"
    server = start_server(path, "")
    proc, report, _ = probe(tmp_path / "last", path, then="wait")
    wait_for(report)
    server.terminate()  # what the workflow does after its last job (onsuccess / onerror)
    time.sleep(1)
    assert server.poll() is None and not path.exists()  # no new jobs; this one runs on
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 75
    assert server.wait(timeout=30) == 0


def test_a_pretraining_forked_from_the_preloaded_stack_equals_a_cold_one(tmp_path):
    """The whole preload (torch, timm, MLflow, ...): the same job, cold and warm, writes the
    same checkpoint to the last bit and the same losses."""
    from pixmim.data.generate.synth import SynthConfig, generate
    from tests.faults.jobs import assert_same_weights, env, pretrain_job, write

    data = tmp_path / "synth"
    generate(SynthConfig(seed=2, train_per_class=2, val_per_class=1, short_side=48), data)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = write(tmp_path / "config.yaml", pretrain_job(data, tracking=uri, epochs=2))
    path = tmp_path / "socket"
    server = start_server(path, ",".join(PRELOAD))
    try:
        outs = {}
        for name, extra in (("cold", {}), ("warm", {"PIXMIM_WARM": str(path)})):
            outs[name] = tmp_path / name
            res = subprocess.run([sys.executable, "-m", "pixmim", "run", "--config", str(cfg),
                                  "--out", str(outs[name])], cwd=ROOT, env=env(**extra),
                                 capture_output=True, text=True, timeout=300)
            assert res.returncode == 0, res.stderr[-3000:]
    finally:
        server.terminate()
        log = server.communicate(timeout=60)[0]
    assert f"run --config {cfg} --out {outs['warm']}" in log  # the warm one was forked
    assert f"--out {outs['cold']}" not in log
    assert_same_weights(outs["cold"] / "checkpoint.pth", outs["warm"] / "checkpoint.pth")
    cold, warm = (json.loads((outs[n] / "metrics.json").read_text()) for n in ("cold", "warm"))
    for key in ("loss_curve", "final_loss", "epochs"):
        assert cold[key] == warm[key], key
