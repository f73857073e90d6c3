"""The one CLI: ``python -m pixmim <command> [args]``.

The per-experiment stages come from the stage registry (:mod:`pixmim.registry`); ``run``
runs whichever stage a job config names (plugin stages included), which is what the
workflow's rules call. Modules are imported lazily so that torch-free commands start fast.

Commands are spelled with hyphens (``linear-probe``, ``mlflow-sync``); the underscore
spelling of any command (``linear_probe``: the stage's key in configs, rules and result
folders) is accepted as an alias.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from pixmim import __version__, registry, warm
from pixmim.config import ConfigError
from pixmim.io import WriteError
from pixmim.registry import RegistryError

# commands that are not per-experiment stages: module, help
TOOLS = {
    "run": ("pixmim.__main__", "Run the stage a job config names: run --config F --out D"),
    "data": ("pixmim.stages.data", "Generate the embedded datasets: data {synth,views,scenes}"),
    "coverage": ("pixmim.stages.coverage", "Object coverage J(F) of the crops (Fig. 6)"),
    "table": ("pixmim.report.tables", "Assemble a paper table from metrics.json files"),
    "figure": ("pixmim.report.figures", "Draw a figure from metrics.json files"),
    "budget": ("pixmim.workflow.budget", "GPU-hours each table / figure still needs"),
    "fetch": ("pixmim.fetch", "Fetch a released checkpoint, its checksum verified"),
    "export": ("pixmim.stages.export", "Write a run's checkpoint in another library's layout"),
    "launch": ("pixmim.workflow.launch",
               "The command prefix that starts a job's nodes x GPUs processes"),
    "rehearsal": ("pixmim.workflow.resources",
                  "Dress rehearsal: `rehearsal resources` writes memory per job kind"),
    "mlflow-sync": ("pixmim.stages.mlflow_sync", "Replay tracking logged while MLflow was down"),
    "mlflow-init": ("pixmim.stages.mlflow_init", "Create the MLflow store and experiment"),
    "warm": ("pixmim.warm", "Serve warm job starts to a local run's jobs (config warm_start)"),
}


def cli_name(name: str) -> str:
    """The command's spelling on the command line: ``linear_probe`` -> ``linear-probe``."""
    return name.replace("_", "-")


def commands() -> dict[str, tuple[str, str]]:
    """Command (hyphenated) -> (module, help): the registry's stages, then the tools."""
    stages = {cli_name(n): (s.module, s.help) for n, s in registry.stages().items()}
    return {**stages, **TOOLS}


def usage() -> str:
    lines = ["usage: python -m pixmim [-h] [--version] <command> [args]", "",
             "The PixMIM Bench pipeline's one command line; `<command> --help` shows a "
             "command's options.", "", "commands:"]
    lines += [f"  {name:<15} {help_}" for name, (_, help_) in commands().items()]
    lines += ["", "An underscore spelling is an alias (linear_probe = linear-probe).", "",
              "options:", "  -h, --help      show this help message and exit",
              "  -V, --version   show the version and exit"]
    return "\n".join(lines)


def run_job(argv: list[str]) -> int:
    """``run --config F ...``: the stage (and plugins) named in the job config ``F``."""
    import argparse

    import yaml

    p = argparse.ArgumentParser(
        prog="python -m pixmim run", description="Run the stage that a job config names.",
        epilog="The other options (--out DIR, --tags FILE) are the stage's own and are passed "
               "on to it: see `python -m pixmim <stage> --help`.")
    p.add_argument("--config", required=True, help="resolved job config (YAML) naming its stage")
    path = Path(p.parse_known_args(argv)[0].config)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    job = yaml.safe_load(path.read_text()) or {}
    if not isinstance(job, dict) or "stage" not in job:
        raise ValueError(f"{path}: a job config names its stage (key 'stage')")
    registry.use_plugins(job.get("plugins"))
    return registry.stage_module(job["stage"]).main(argv) or 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"pixmim {__version__}")
        return 0
    name, rest = cli_name(argv[0]), argv[1:]
    table = commands()
    if name not in table:
        print(f"unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if name != "warm":
        rc = warm.relay(argv)  # in a fork of the local run's warm server, if there is one
        if rc is not None:
            return rc
    try:
        if name == "run":
            rc = run_job(rest)
        elif name == "warm":
            job = warm.main(rest)  # returns in a fork only: the job to run as this process
            rc = 0 if job is None else main(job)
        else:
            # the command's module is imported here, by name, on purpose: a stage's torch
            # (and OpenMMLab) loads only for that stage; --help and the tools stay torch-free
            rc = importlib.import_module(table[name][0]).main(rest) or 0
        sys.stdout.flush()  # a reader gone away shows here, not in the exit's flush
        return rc
    except BrokenPipeError:
        # `... | head`: no traceback; the exit status of a tool SIGPIPE stopped (128 + 13)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ConfigError, RegistryError, FileNotFoundError, KeyError, ValueError,
            FloatingPointError, WriteError) as e:
        # Bad input (or a full disk): one line naming the culprit, no traceback.
        print(f"pixmim {argv[0]}: error: {one_line(e)}", file=sys.stderr)
        return 1
    except BaseException as e:
        # only a stage that imported the training loop can be preempted (and --help's
        # SystemExit must not import torch to find that out)
        loop = sys.modules.get("pixmim.engine.loop")
        if loop is not None and isinstance(e, loop.Preempted):
            # SIGTERM (SLURM's preemption / time limit): state saved; a rerun resumes.
            print(f"pixmim {argv[0]}: {e}", file=sys.stderr)
            return loop.Preempted.exit_code
        raise


def one_line(e: BaseException) -> str:
    """The message of ``e``; for an error re-raised from a DataLoader worker ("Caught
    ValueError in DataLoader worker process 0" + the worker's traceback), the worker's own
    message: the traceback's last line without its exception name."""
    msg = str(e.args[0] if isinstance(e, KeyError) and e.args else e)
    if "\nOriginal Traceback" in msg:
        msg = msg.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return msg


if __name__ == "__main__":
    sys.exit(main())
