"""Job start benchmark: one workflow job started cold (a fresh interpreter) against the same job
started warm (forked from the server of :mod:`pixmim.warm`), side by side.

    python benchmarks/job_start.py --json benchmarks/results/job_start_cpu.json

The job is what a rule runs, ``python -m pixmim run --config F --out D``, here a pretraining of
one epoch of two steps on a tiny generated dataset with tracking to a SQLite MLflow store:
nearly all of its time is the start (imports, the MLflow store), as for many jobs of the
embedded default. The two ways alternate round by round (the order flipped every round), one
job at a time, on an otherwise idle machine; each round's cold and warm jobs must write the
same checkpoint (checked bit for bit), so only the start differs. Reported: the median wall
seconds of each way, their ratio, and the geometric mean of the per-round ratios with its 95%
t-interval (:func:`pixmim.report.stats.paired` on log seconds). The server's own start (its
preloading, once per Snakemake run) is timed once and reported beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.loader import ratio_interval  # noqa: E402
from pixmim import warm  # noqa: E402
from pixmim.data.generate.synth import SynthConfig, generate  # noqa: E402
from pixmim.io import atomic_write  # noqa: E402


def job_config(data: Path, uri: str) -> dict:
    """A pretraining of one epoch of two steps (16 images, batch 8) on the CPU ViT."""
    return {"experiment": "mae-pixmim_start", "stage": "pretrain", "method": "mae",
            "arch": "vit_cpu_patch8_64",
            "variant": {"target": "lowpass", "radius": 40, "crop": "src"},
            "data": {"root": str(data), "img_size": 64},
            "train": {"epochs": 1, "warmup_epochs": 0, "batch_size": 8, "base_lr": 1.5e-3,
                      "seed": 5},
            "tracking": {"tracking_uri": uri, "experiment": "start"}}


def run_job(cfg: Path, out: Path, socket: Path | None) -> float:
    env = {k: v for k, v in os.environ.items() if k not in (warm.ENV, "MLFLOW_TRACKING_URI")}
    env["OMP_NUM_THREADS"] = "1"
    if socket is not None:
        env[warm.ENV] = str(socket)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pixmim", "run", "--config", str(cfg),
                          "--out", str(out)], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"job failed ({'warm' if socket else 'cold'}):\n{res.stderr[-3000:]}")
    return seconds


def same_weights(a: Path, b: Path) -> bool:
    import torch

    wa, wb = (torch.load(p, map_location="cpu", weights_only=False)["model"] for p in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", help="write every number to this file")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="pixmim-start-"))
    data = tmp / "synth"
    generate(SynthConfig(seed=2, train_per_class=1, val_per_class=1, short_side=48), data)
    cfg = tmp / "config.yaml"
    cfg.write_text(yaml.safe_dump(job_config(data, f"sqlite:///{tmp / 'mlflow.db'}")))
    run_job(cfg, tmp / "first", None)  # creates the store, fills the page cache
    socket = tmp / "socket"
    t0 = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "pixmim", "warm", "--socket", str(socket)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    while not socket.exists():
        if server.poll() is not None:
            raise SystemExit("the warm server did not start")
        time.sleep(0.02)
    preload_s = time.perf_counter() - t0
    rounds: dict[str, list[float]] = {"cold": [], "warm": []}
    try:
        for r in range(args.rounds):
            for way in (("cold", "warm") if r % 2 == 0 else ("warm", "cold")):
                out = tmp / f"{way}{r}"
                rounds[way].append(run_job(cfg, out, socket if way == "warm" else None))
            if not same_weights(tmp / f"cold{r}" / "checkpoint.pth",
                                tmp / f"warm{r}" / "checkpoint.pth"):
                raise SystemExit(f"round {r + 1}: the cold and warm checkpoints differ")
            print(f"round {r + 1}: cold {rounds['cold'][-1]:.2f} s  warm "
                  f"{rounds['warm'][-1]:.2f} s", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
    med = {k: statistics.median(v) for k, v in rounds.items()}
    lo, mid, hi = ratio_interval(rounds["warm"], rounds["cold"])
    result = {"cpu_count": os.cpu_count(), "load_avg": os.getloadavg(),
              "python": sys.version.split()[0], "job": "pretrain, 1 epoch x 2 steps, SQLite MLflow",
              "preload": list(warm.PRELOAD), "server_start_s": preload_s, "rounds": rounds,
              "median_s": med, "ratio_warm_over_cold": med["warm"] / med["cold"],
              "ratio_per_round_ci95": (lo, mid, hi)}
    print(f"\n## One job's wall time, cold vs warm (median of {args.rounds} rounds)\n")
    print("start | seconds\n--- | ---")
    for k, v in med.items():
        print(f"{k} | {v:.2f}")
    print(f"\nwarm / cold: {result['ratio_warm_over_cold']:.2f}x (per round: {mid:.2f}x, 95% "
          f"interval {lo:.2f}-{hi:.2f}x); the server's start, once per run: {preload_s:.1f} s")
    if args.json:
        atomic_write(Path(args.json), lambda t: Path(t).write_text(json.dumps(result, indent=2)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
