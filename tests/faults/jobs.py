"""Tiny CPU job configs and process helpers for the fault tests.

Stages run as users run them: ``python -m pixmim <stage> --config FILE --out DIR`` in a
subprocess with ``OMP_NUM_THREADS=1`` (:func:`run`), or the same command line run by the
CLI's ``main`` in a fork of the test process (:class:`Forked`: a stage's own errors, kills
and resumes; the interpreter's start-up is the subprocess tests'). The SIGTERM test keeps
a subprocess: its exit status is what SLURM reads.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from tests.conftest import ROOT

ARCH = "vit_cpu_patch8_64"
VARIANT = {"target": "lowpass", "radius": 40, "crop": "src"}  # bins at 224 px
STEPS_PER_EPOCH = 4  # 32 training images, batch 8


def env(**extra: str) -> dict[str, str]:
    """The environment of a stage process: one thread, no tracking URI from outside."""
    out = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**out, "OMP_NUM_THREADS": "1", **extra}


def _tracking(uri: str | None) -> dict:
    return {"enabled": False} if uri is None else {"tracking_uri": uri, "experiment": "faults"}


def pretrain_job(data: Path, tracking: str | None = None, epochs: int = 4,
                 data_keys: dict | None = None, variant: dict | None = None, **train) -> dict:
    return {
        "experiment": "mae-pixmim_faults", "stage": "pretrain", "method": "mae",
        "arch": ARCH, "variant": {**VARIANT, **(variant or {})},
        "data": {"root": str(data), "img_size": 64, **(data_keys or {})},
        "train": {"epochs": epochs, "warmup_epochs": 1, "batch_size": 8, "base_lr": 1.5e-3,
                  "seed": 5, "ckpt_every_steps": 1, **train},
        "tracking": _tracking(tracking),
    }


def linear_probe_job(data: Path, pretrain_dir: Path, tracking: str | None = None,
                     epochs: int = 12, method: str = "mae", arch: str = ARCH) -> dict:
    """16 classes (no ImageNet index map) so the top-1 curve moves on 16 val images."""
    return {
        "experiment": "mae-pixmim_faults", "stage": "linear_probe", "method": method,
        "arch": arch,
        "data": {"root": str(data), "img_size": 64, "num_classes": 16,
                 "synth_index_map": False},
        "pretrain_dir": str(pretrain_dir),
        "train": {"epochs": epochs, "warmup_epochs": 0, "batch_size": 8, "base_lr": 2.0,
                  "weight_decay": 0.0, "seed": 5, "ckpt_every_steps": 1},
        "tracking": _tracking(tracking),
    }


def finetune_job(data: Path, pretrain_dir: Path, tracking: str | None = None,
                 epochs: int = 4, method: str = "mae", arch: str = ARCH) -> dict:
    """timm's full recipe (RandAugment, Mixup/CutMix, drop path, random erasing): every
    random draw must replay on resume."""
    return {
        "experiment": "mae-pixmim_faults", "stage": "finetune", "method": method,
        "arch": arch,
        "data": {"root": str(data), "img_size": 64, "num_classes": 16,
                 "synth_index_map": False},
        "pretrain_dir": str(pretrain_dir),
        "train": {"epochs": epochs, "warmup_epochs": 1, "batch_size": 8, "base_lr": 1e-3,
                  "seed": 5, "ckpt_every_steps": 1},
        "tracking": _tracking(tracking),
    }


def write(path: Path, cfg: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def stage_cmd(stage: str, cfg: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pixmim", stage, "--config", str(cfg), "--out", str(out)]


def run(cmd: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """Run ``cmd`` in the repo root; the result carries ``seconds`` (wall time)."""
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=kw.pop("env", env()),
                         timeout=timeout, **kw)
    res.seconds = time.perf_counter() - t0
    return res


class Forked:
    """``cmd`` (a ``python -m pixmim ...`` command line, as :func:`stage_cmd` writes it) run by
    the CLI's ``main`` in a fork of this process, with ``Popen``'s ``poll`` / ``wait`` /
    ``send_signal``: its own process (a crash, an exit, a signal, the state it leaves never
    reach the test), the stage's environment (:func:`env`), stdout and stderr written to
    the files given, and the exit status ``python -m pixmim`` would have (an uncaught
    exception: its traceback on stderr, status 1). The fork starts with torch and the
    stages imported, which a fresh interpreter spends ~6 s of CPU on; the interpreter's
    own entry (``-m pixmim``) is run by the subprocess and DAG tests."""

    def __init__(self, cmd: list[str], stdout: Path | None, stderr: Path) -> None:
        import traceback

        assert cmd[:3] == [sys.executable, "-m", "pixmim"], cmd
        import pixmim.__main__ as cli

        sys.stdout.flush()
        sys.stderr.flush()
        self.returncode: int | None = None
        self.pid = os.fork()
        if self.pid:
            return
        rc = 1  # the child: runs the command, then exits; never returns to pytest
        try:
            for fd, path in ((1, stdout or os.devnull), (2, stderr)):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
            os.chdir(ROOT)
            stage_env = env()
            os.environ.clear()
            os.environ.update(stage_env)
            rc = cli.main(cmd[3:])
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float = 600) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.send_signal(signal.SIGKILL)
                os.waitpid(self.pid, 0)
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.01)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)


def run_forked(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """:func:`run` of ``cmd`` in a fork (:class:`Forked`): the same status and outputs."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        paths = Path(tmp) / "stdout", Path(tmp) / "stderr"
        t0 = time.perf_counter()
        rc = Forked(cmd, *paths).wait(timeout)
        res = subprocess.CompletedProcess(cmd, rc, *(p.read_text() for p in paths))
    res.seconds = time.perf_counter() - t0
    return res


def run_ok(cmd: list[str], forked: bool = False, **kw) -> subprocess.CompletedProcess:
    res = run_forked(cmd, **kw) if forked else run(cmd, **kw)
    assert res.returncode == 0, res.stderr[-4000:]
    return res


def lines(text: str) -> list[str]:
    """Output lines; tqdm's carriage returns split lines too."""
    return [s for s in re.split(r"[\r\n]+", text) if s.strip()]


def error_line(res: subprocess.CompletedProcess, stage: str) -> str:
    """The one ``pixmim <stage>: error: ...`` line of a failed run (exit 1, no traceback)."""
    assert res.returncode == 1, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr and 'File "' not in res.stderr, res.stderr[-3000:]
    errors = [s for s in lines(res.stderr) if ": error: " in s]
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"pixmim {stage}: error: "), errors[0]
    return errors[0]


def start(cmd: list[str], err, forked: bool):
    """``cmd`` started with stdout dropped and stderr to the open file ``err``: in a fork
    (:class:`Forked`) or a subprocess."""
    if forked:
        return Forked(cmd, None, Path(err.name))
    return subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=err)


def interrupt(cmd: list[str], out: Path, delay: float, sig: int = signal.SIGKILL,
              log: Path | None = None, forked: bool = False) -> tuple[bool, int, str]:
    """Start ``cmd``, wait for its first ``_state/last.pth``, wait ``delay`` s more, send
    ``sig``. Returns (alive when signalled, exit status, stderr)."""
    log = log or out.parent / f"{out.name}.stderr"
    state = out / "_state" / "last.pth"
    with log.open("w") as err:
        proc = start(cmd, err, forked)
        deadline = time.time() + 300
        while not state.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert state.exists(), f"no {state} before the job ended:\n{log.read_text()[-3000:]}"
        time.sleep(delay)
        alive = proc.poll() is None
        if alive:
            proc.send_signal(sig)
        rc = proc.wait(timeout=300)
    return alive, rc, log.read_text()


def run_watched(cmd: list[str], out: Path, forked: bool = False) -> tuple[str, float]:
    """Run ``cmd`` to completion; return its stderr and the seconds between its first and
    its last ``_state/last.pth`` write (the training window, in which a kill lands mid-run)."""
    log = out.parent / f"{out.name}.stderr"
    state = out / "_state" / "last.pth"
    writes: set[float] = set()
    with log.open("w") as err:
        proc = start(cmd, err, forked)
        while proc.poll() is None:
            try:
                writes.add(state.stat().st_mtime)
            except FileNotFoundError:
                pass
            time.sleep(0.01)
    stderr = log.read_text()
    assert proc.returncode == 0, stderr[-4000:]
    assert len(writes) > 1, "the job wrote no resume states"
    return stderr, max(writes) - min(writes)


def model_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = model_weights(a), model_weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=0, atol=0, msg=key)


def mlflow_client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def history(client, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def snakemake(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The workflow as users run it (CI profile), from the repo root."""
    return run([sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/ci", *args],
               timeout=timeout)
