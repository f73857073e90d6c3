"""How every training job is spread over GPUs and nodes: the paper's effective batches at
paper scale, the divisibility check, the launch command and the SLURM request (torch-free)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from pixmim import registry
from pixmim import workflow as W
from pixmim.config import ConfigError, DenseConfig, TrainConfig, check_world, from_dict
from pixmim.workflow.launch import launch_command, slurm_resources
from pixmim.workflow.specs import target_jobs

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "config" / "paper.yaml"

# The paper's effective batch per stage (PixMIM TMLR 2024, Appendix B), by method where a
# method has its own: Table 7 (pretraining, MAE / MFF / ConvMAE) 4096, Table 8 (LSMAE)
# 2048; Table 9 (fine-tuning, every method; the few-shot stages fine-tune with it) 1024;
# Table 10 (linear probe, MAE / MFF / LSMAE) 16384, Table 11 (ConvMAE) 4096; Tables 12/13
# (ADE20K UperNet) 16; Table 14 (COCO Mask R-CNN, MAE / MFF / LSMAE) 64, Table 15
# (ConvMAE) 16.
PAPER_BATCH = {
    "pretrain": {"default": 4096, "lsmae": 2048},
    "finetune": {"default": 1024},
    "finetune_1pct": {"default": 1024},
    "finetune_10pct": {"default": 1024},
    "linear_probe": {"default": 16384, "convmae": 4096},
    "segment_ade20k": {"default": 16},
    "detect_coco": {"default": 64, "convmae": 16},
    "detect_coco_2x": {"default": 64, "convmae": 16},
}


@pytest.fixture(scope="module")
def paper():
    config = W.load_config(PAPER)
    exps = W.experiments(config)
    jobs = set().union(*(target_jobs(config, t) for t in config["targets"]))
    return config, exps, sorted(jobs)


def test_every_paper_job_runs_at_the_papers_effective_batch(paper):
    config, exps, jobs = paper
    seen = set()
    for exp, stage in jobs:
        spec = registry.stage(stage)
        job = W.job_config(config, exp, stage, exps)
        lay = W.layout(job, spec)
        if spec.job not in ("train", "finetune", "dense"):  # the evaluations: one process
            assert lay["processes"] == 1, (exp, stage)
            continue
        method = exps[exp]["method"]
        want = PAPER_BATCH[stage].get(method, PAPER_BATCH[stage]["default"])
        assert lay["batch_size"] == want, (exp, stage, lay)
        # the layout multiplies out to it, and the resolved job config carries it
        assert (lay["per_gpu_batch"] * max(lay["gpus"], 1) * lay["nodes"]
                * lay["accum_steps"]) == want, (exp, stage, lay)
        sec = job["dense" if spec.job == "dense" else "train"]
        assert (sec["nodes"], sec["gpus"], sec["accum_steps"]) == (
            lay["nodes"], lay["gpus"], lay["accum_steps"]), (exp, stage)
        assert lay["gpus"] >= 1, (exp, stage)  # paper scale: no stage on one device alone
        seen.add(stage)
    assert seen == set(PAPER_BATCH)  # every training stage of the paper was checked


def test_budget_prints_each_jobs_layout(paper):
    out = subprocess.run([sys.executable, "-m", "pixmim", "budget", "--configfile", str(PAPER),
                          "--json", "table2"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr

    rows = json.loads(out.stdout)["targets"]["table2"]
    det = next(r for r in rows if r["stage"] == "detect_coco" and r["experiment"].startswith(
        "mae-"))
    # ViTDet's 64 GPUs: 8 nodes x 8 GPUs x 1 image (config/paper.yaml)
    assert (det["nodes"], det["gpus_per_node"], det["per_gpu_batch"], det["accum_steps"],
            det["batch_size"]) == (8, 8, 1, 1, 64)
    for r in rows:
        assert (r["nodes"] * r["gpus_per_node"] * r["per_gpu_batch"] * r["accum_steps"]
                == r["batch_size"]), r
        # GPU-hours = nodes x GPUs x wall hours
        assert r["gpu_hours"] == pytest.approx(r["wall_hours"] * r["nodes"]
                                               * r["gpus_per_node"]), r


def test_a_batch_that_does_not_divide_is_one_config_error_line(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"finetune": {"gpus": 3}}))
    res = subprocess.run([sys.executable, "-m", "pixmim", "budget", "--configfile", str(PAPER),
                          "--configfile", str(site), "table2"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    msg = ("finetune.batch_size: 1024 does not divide into max(finetune.gpus, 1) x "
           "finetune.nodes x finetune.accum_steps = 3 x 1 x 1 = 3")
    assert msg in lines[0], lines[0]
    # the same at DAG build: resolving the job's config (W.materialize) stops on it
    cfg = W.load_config(PAPER, site)
    exps = W.experiments(cfg)
    exp = next(e for e, k in exps.items() if k["method"] == "mae")
    with pytest.raises(ConfigError, match=r"\(job mae-.*/finetune; ") as e:
        W.job_config(cfg, exp, "finetune", exps)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_snakemake_stops_on_a_non_dividing_layout_with_one_line(tmp_path):
    from tests.conftest import tiny_overrides

    overlay = tiny_overrides(tmp_path)
    overlay["segmentation"].update(gpus=3)  # batch 2 over 3 processes
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    res = subprocess.run([sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/ci",
                          "-n", "--configfile", str(path)], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode != 0
    err = [line for line in (res.stdout + res.stderr).splitlines() if "ConfigError" in line]
    assert len(err) == 1 and ("segmentation.batch_size: 2 does not divide into "
                              "max(segmentation.gpus, 1) x segmentation.nodes x "
                              "segmentation.accum_steps = 3 x 1 x 1 = 3") in err[0], \
        res.stdout[-3000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stdout + res.stderr


def test_the_dense_and_train_configs_check_their_layout():
    with pytest.raises(ConfigError, match=r"^dense\.batch_size: 16 does not divide .* 8 x 1 x 4"):
        from_dict(DenseConfig, {"batch_size": 16, "gpus": 8, "accum_steps": 4}, "dense")
    with pytest.raises(ConfigError, match=r"^train\.batch_size: 64 does not divide .* 1 x 2 x 3"):
        from_dict(TrainConfig, {"batch_size": 64, "nodes": 2, "accum_steps": 3}, "train")
    assert from_dict(DenseConfig, {"batch_size": 64, "gpus": 8, "nodes": 8}, "d").gpus == 8


def test_the_world_size_must_match_the_layout():
    check_world(2, 2, 1, "train")
    check_world(1, 0, 1, "train")  # gpus 0: whatever torchrun started (one process here)
    check_world(16, 8, 2, "train")
    with pytest.raises(ConfigError, match=r"train\.gpus x train\.nodes = 8 x 2 = 16 .* 8 "):
        check_world(8, 8, 2, "train")


# ---------------------------------------------------------------- the launch command
def test_one_process_is_python_itself():
    assert launch_command(1, 0, 8) == "OMP_NUM_THREADS=8 python"
    assert launch_command(1, 1, 8) == "OMP_NUM_THREADS=8 python"


def test_one_node_of_two_gpus_is_a_standalone_torchrun():
    assert launch_command(1, 2, 8) == ("OMP_NUM_THREADS=4 python -m torch.distributed.run "
                                       "--standalone --nproc_per_node 2")


def test_two_nodes_of_four_gpus_srun_one_torchrun_per_node():
    cmd = launch_command(2, 4, 32)
    assert "OMP_NUM_THREADS=8 srun --nodes 2 --ntasks 2 --ntasks-per-node 1 " \
           "--cpus-per-task 32" in cmd
    assert "python -m torch.distributed.run --nnodes 2 --nproc_per_node 4 " \
           "--rdzv_backend c10d --rdzv_endpoint " in cmd
    assert 'scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1' in cmd
    assert '--rdzv_id "pixmim-$SLURM_JOB_ID"' in cmd


def _fake_slurm(tmp: Path) -> dict[str, str]:
    """``scontrol`` that expands a node list, ``srun`` that prints its arguments."""
    bin_ = tmp / "bin"
    bin_.mkdir()
    for name, body in (("scontrol", 'echo gpu-node-07; echo gpu-node-08'),
                       ("srun", 'echo "OMP=$OMP_NUM_THREADS $*"')):
        f = bin_ / name
        f.write_text(f"#!/bin/sh\n{body}\n")
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    return {**os.environ, "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}"}


def test_the_multi_node_command_runs_in_a_slurm_allocation(tmp_path):
    env = _fake_slurm(tmp_path)
    cmd = launch_command(2, 4, 32) + " -m pixmim run --config c.yaml"
    res = subprocess.run(["bash", "-c", cmd], env={**env, "SLURM_JOB_NODELIST":
                                                    "gpu-node-[07-08]", "SLURM_JOB_ID": "123"},
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == (
        "OMP=8 --nodes 2 --ntasks 2 --ntasks-per-node 1 --cpus-per-task 32 --kill-on-bad-exit=1 "
        "python -m torch.distributed.run --nnodes 2 --nproc_per_node 4 --rdzv_backend c10d "
        "--rdzv_endpoint gpu-node-07:29623 --rdzv_id pixmim-123 -m pixmim run --config c.yaml")
    # outside an allocation: one line saying so, nothing started
    env.pop("SLURM_JOB_NODELIST", None)
    res = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True,
                         timeout=30)
    assert res.returncode != 0 and res.stdout == ""
    assert "nodes: 2 needs a SLURM allocation of 2 nodes" in res.stderr


def test_the_cli_prints_the_prefix():
    res = subprocess.run([sys.executable, "-m", "pixmim", "launch", "--nodes", "1", "--gpus",
                          "2", "--threads", "2"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == launch_command(1, 2, 2)


# ---------------------------------------------------------------- the SLURM request
class _Res(dict):
    """A job's resources as the SLURM plugin reads them (``get`` and attributes)."""

    def __getattr__(self, name):
        return self[name]


def _sbatch(nodes: int, gpus: int) -> str:
    sub = pytest.importorskip("snakemake_executor_plugin_slurm.submit_string")
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    res = _Res({k: v for k, v in slurm_resources(nodes, gpus).items() if v is not None},
               runtime=60, mem_mb=1000, cpus_per_task=64)
    job = SimpleNamespace(resources=res, threads=64)
    params = {"run_uuid": "u", "slurm_logfile": "l", "comment_str": "c", "account": "",
              "partition": "", "workdir": ""}
    return sub.get_submit_command(job, params) + set_gres_string(job)


def test_one_node_asks_for_its_gpus():
    call = _sbatch(1, 8)
    assert "--nodes=1" in call and "--gpus=8" in call and "--cpus-per-task=64" in call
    assert "--ntasks-per-gpu" not in call


def test_several_nodes_ask_for_gpus_per_node_and_one_task_each():
    """sbatch --nodes 8 --ntasks 8 --gres=gpu:8: 64 GPUs, one task (torchrun) per node; the
    job step then runs the rule's command as is (``mpi``), which calls srun itself."""
    call = _sbatch(8, 8)
    assert "--nodes=8" in call and "--ntasks=8" in call and "--gres=gpu:8" in call
    assert "--ntasks-per-gpu" not in call and "--gpus=" not in call
    assert slurm_resources(8, 8)["mpi"] == "srun"


def test_a_rules_resources_come_from_the_written_job_config(tmp_path):
    cfg = W.load_config(PAPER)
    cfg["results"] = str(tmp_path)
    exps = W.experiments(cfg)
    exp = next(e for e, k in exps.items() if k["method"] == "mae")
    job = W.job_config(cfg, exp, "detect_coco", exps)
    path = Path(W.job_dir(cfg, exp, "detect_coco")) / "config.yaml"
    job["dense"]["nodes"] = 2  # what the rule reads: the file as written at DAG build
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(job))
    assert W.job_layout(cfg, exp, "detect_coco")["nodes"] == 2
    assert W.job_layout(cfg, exp, "segment_ade20k")["gpus"] == 8  # no file: resolved


# ---------------------------------------------------------------- through Snakemake
@pytest.mark.slow
def test_a_finetune_a_segmentation_and_their_pretraining_run_as_two_processes(tmp_path):
    """`gpus: 2` with `device: cpu`: through Snakemake the rules start two gloo processes per
    job (torchrun), and each stage ran as a world of two (the segmentation through mmengine's
    pytorch launcher, one image per process, its BatchNorm synced over gloo)."""
    from tests.conftest import tiny_overrides

    overlay = tiny_overrides(tmp_path)
    overlay["pretrain"]["gpus"] = 2
    overlay["finetune"].update(gpus=2)
    overlay["segmentation"].update(gpus=2, runs=1)
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    cfg = W.load_config(path)
    exp = next(iter(W.experiments(cfg)))
    targets = [str(Path(W.run_dir(cfg, exp, s)) / "metrics.json")
               for s in ("finetune", "segment_ade20k")]
    res = subprocess.run([sys.executable, "-m", "snakemake", *targets, "--workflow-profile",
                          "profiles/ci", "--configfile", str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    for stage in ("pretrain", "finetune", "segment_ade20k"):
        metrics = json.loads((Path(W.run_dir(cfg, exp, stage)) / "metrics.json").read_text())
        assert metrics["world_size"] == 2, (stage, metrics)
        # the rule's command: torchrun with two processes on this one node
        assert "-m torch.distributed.run --standalone --nproc_per_node 2 -m pixmim run" in \
            res.stdout + res.stderr, stage


@pytest.mark.slow
def test_the_multi_node_rendezvous_forms_one_world(tmp_path):
    """The two-node command with srun faked as two local copies (two "nodes" on this
    machine) and scontrol naming this host first: the torchruns meet at the c10d rendezvous
    and their processes form one world of nodes x gpus, ranks 0-3."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name, body in (("scontrol", "echo 127.0.0.1; echo 127.0.0.2"),
                       # srun's own options dropped: the command starts at the interpreter
                       ("srun", f'while [ "$1" != "{sys.executable}" ]; do shift; done\n'
                                '"$@" & "$@" & wait')):
        f = bin_ / name
        f.write_text(f"#!/bin/bash\n{body}\n")
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    probe = tmp_path / "probe.py"
    # one write per line (print writes its pieces apart: the processes' lines interleaved)
    probe.write_text("import os\nos.write(1, f\"rank {os.environ['RANK']} of "
                     "{os.environ['WORLD_SIZE']}\\n\".encode())\n")
    job_id = str(os.getpid() % 20000)  # the port: 29500 + this
    cmd = launch_command(2, 2, 2, python=sys.executable) + f" {probe}"
    env = {**os.environ, "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}",
           "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_JOB_ID": job_id}
    res = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = sorted(line for line in res.stdout.splitlines() if line.startswith("rank"))
    assert lines == [f"rank {r} of 4" for r in range(4)], res.stdout + res.stderr[-2000:]
