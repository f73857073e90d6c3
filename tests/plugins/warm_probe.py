"""A stage that reports the process it runs in, for the warm-start tests
(tests/test_warm.py): declared as a plugin stage, so ``python -m pixmim run --config F`` runs
it as the workflow runs any job. Standard library only, so that what it finds already
imported was imported before it ran.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import time
from pathlib import Path

from pixmim.declare import Stage

STAGES = [Stage(name="warm_probe", module="tests.plugins.warm_probe",
                help="report the job's process (tests)", rule="warm_probe", consumes=None)]


def main(argv: list[str]) -> int:
    """``--config F --out REPORT``: write the process's view of itself to REPORT, print a
    line to each stream, then do what the config's ``then`` says: ``exit`` with its
    ``code``, ``wait`` (SIGTERM: exit 75, like a preempted stage; SIGHUP: noted, then ended by it)
    or ``crash``."""
    import yaml

    cfg = yaml.safe_load(Path(argv[argv.index("--config") + 1]).read_text())
    report = Path(argv[argv.index("--out") + 1])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(75))

    def hangup(signum, _frame):  # noted, then the default action: the process ends by it
        report.with_suffix(".signal").write_text(signal.Signals(signum).name)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGHUP, hangup)
    view = {"pid": os.getpid(), "cwd": os.getcwd(), "argv": sys.argv,
            "marker": os.environ.get("WARM_PROBE_MARKER"), "path": sys.path,
            "warm_env": os.environ.get("PIXMIM_WARM"),
            "preloaded": sorted(m for m in ("numpy", "torch") if m in sys.modules),
            "stdin": sys.stdin.readline(),
            # what the server set for itself and a fresh interpreter does not have
            "gc_frozen": gc.get_freeze_count(), "wakeup_fd": signal.set_wakeup_fd(-1),
            "sigchld": str(signal.getsignal(signal.SIGCHLD))}
    report.write_text(json.dumps(view))
    print("probe stdout")
    print("probe stderr", file=sys.stderr)
    then = cfg.get("then", "exit")
    if then == "wait":
        time.sleep(60)
    if then == "crash":
        raise RuntimeError("probe crashed")
    return int(cfg.get("code", 0))
