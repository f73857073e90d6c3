"""Shared fixtures: the repo root, the default config, a tiny end-to-end config."""

import os
import subprocess
import sys
from pathlib import Path

# Tiny models run fastest single-threaded, and subprocess tests then do not oversubscribe
# the cores (set before anything imports torch).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# The longest test modules (the sum of their tests' times under `pytest --durations`),
# longest first. They run before the others: `make test` hands whole modules to its two
# workers (pytest-xdist, --dist loadfile) in collection order, so the long ones start at
# once and the many short modules fill in around them, and the two workers end together
# instead of one running a long module alone at the end (collection order would start the
# end-to-end DAG runs of tests/workflow/ last). A worker is handed its next module while its
# first one runs: the first four go e2e, SLURM, plugins, envs -> worker 1 runs the e2e DAG
# then pip's resolutions, worker 2 the SLURM run (mostly idle, beside the e2e DAG's two
# cores) then the plugins' DAG.
LONGEST_FIRST = (
    "tests/workflow/test_e2e.py",
    "tests/cluster/test_slurm.py",  # mostly waiting on SLURM's polls: overlaps the rest
    "tests/workflow/test_plugins.py",
    "tests/workflow/test_envs.py",
    "tests/downstream/test_dense_distributed.py",
    "tests/downstream/test_seg_learns.py",
    "tests/families/test_toy_family.py",
    "tests/faults/test_dense_preemption.py",
    "tests/workflow/test_layout.py",
    "tests/workflow/test_released.py",
    "tests/stages/test_data_parallel.py",
    "tests/stages/test_pretrain_stage.py",
    "tests/stages/test_monitor.py",
    "tests/report/test_mlflow_browser.py",
    "tests/faults/test_tracking_faults.py",
    "tests/faults/test_preemption.py",
    "tests/workflow/test_rehearsal.py",
    "tests/faults/test_bad_input.py",
    "tests/stages/test_linear_probe_stage.py",
    "tests/engine/test_distributed.py",
    "tests/paper/test_paper_models.py",
    "tests/faults/test_kill_resume.py",
    "tests/downstream/test_openmmlab.py",
    "tests/families/test_flops.py",
)


def pytest_collection_modifyitems(items):
    """The modules of LONGEST_FIRST first, in its order; the rest keep collection order."""
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.partition("::")[0], len(rank)))


@pytest.fixture(scope="session", autouse=True)
def shared_warm_server(request, tmp_path_factory):
    """One warm server per test process (pixmim.warm.SHARED) for every local Snakemake run
    the tests start, instead of one per run (~12 CPU-s of imports each, 10 runs in the
    suite). The `python -m pixmim` commands the tests start themselves still run cold
    (they read pixmim.warm.ENV, not SHARED). Not for `make test-fast`, which runs no DAG."""
    from pixmim import warm

    if "not slow" in request.config.option.markexpr or os.environ.get(warm.SHARED) or \
            os.name != "posix":
        yield None
        return
    proc, path = warm.launch(tmp_path_factory.getbasetemp() / "warm-server.log")
    os.environ[warm.SHARED] = path
    try:
        yield path
    finally:
        os.environ.pop(warm.SHARED, None)
        warm.halt(proc, path)


@pytest.fixture
def default_config() -> dict:
    from pixmim.workflow import load_config

    return load_config()


def run_dag(tmp_path: Path, overlay: dict) -> Path:
    """Run the whole DAG (profiles/ci) with ``overlay`` as a config file; return its
    results folder (the overlay's ``results``), failing with Snakemake's output."""
    import yaml

    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    cmd = [sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/ci",
           "--configfile", str(path)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return Path(overlay["results"])


def tiny_overrides(tmp: Path) -> dict:
    """A config overlay that runs the whole default DAG in about a minute on 2 cores."""
    return {
        "results": str(tmp / "results"),
        "seeds": [0],  # the default's three seeds triple every job; multi-seed: test_plugins
        "mlflow": {"tracking_uri": f"sqlite:///{tmp / 'results' / 'mlflow' / 'mlflow.db'}",
                   "experiment": "pixmim-e2e"},
        "data": {"synth": {"seed": 1, "train_per_class": 6, "val_per_class": 3,
                           "short_side": 48},
                 "scenes": {"seed": 1, "train": 8, "val": 2}},
        "schedules": {300: 1, 800: 2, 1600: 3},
        "pretrain": {"epochs": 2, "warmup_epochs": 1, "batch_size": 16, "base_lr": 1.5e-3,
                     "log_every": 2},
        "linear_probe": {"epochs": 2, "warmup_epochs": 0, "batch_size": 16, "base_lr": 0.1,
                         "eval_every": 1},
        "finetune": {"epochs": 1, "warmup_epochs": 0, "batch_size": 16},
        "few_shot": {"batch_size": 4, "epochs": 1, "warmup_epochs": 0},
        "segmentation": {"iters": 4, "val_interval": 2, "batch_size": 2, "warmup_iters": 1,
                         "runs": 2},
        "detection": {"iters": 4, "val_interval": 4, "batch_size": 2, "warmup_iters": 1},
        "evaluation": {"views": {"seed": 1, "c_per_class": 1, "a_per_class": 2,
                                 "r_per_class": 2, "sketch_per_class": 1, "cue_per_shape": 2}},
    }


@pytest.fixture(scope="session")
def fixture_roots(tmp_path_factory) -> Path:
    """``python -m pixmim data fixtures`` once per session: the datasets in their real
    on-disk layouts (pixmim.data.generate.fixtures; a few seconds)."""
    from pixmim.data.generate.fixtures import generate

    out = tmp_path_factory.mktemp("fixtures") / "datasets"
    generate(out)
    return out
