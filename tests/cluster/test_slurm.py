"""profiles/slurm on a real SLURM: one node on 127.0.0.1 with two fake GPUs, started
by this test (munged, slurmctld, slurmd; Debian's slurm-wlm, which .ci/run installs).

A small part of the embedded DAG (the generated dataset, both pretraining runs of Table 2 and
the first one's fine-tune) runs through the profile; only its resource values are clamped to
the node. Pretraining and fine-tune have the layout `gpus: 2` in the config, so each job asks
for the node's two GPUs and runs as two torchrun processes (gloo on CPU: the config's device
stays cpu). One pretraining job is requeued mid-run, as a preemption does, and must resume
from its checkpoint. Then a second run has nothing to do. The cluster has one node, so a job
across nodes is checked as its command and sbatch request (tests/workflow/test_layout.py).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, tiny_overrides

PROFILE = ROOT / "profiles" / "slurm"
PARTITION = "pixmim-test"  # not the default partition: the profile must name it
GPUS = 2  # gres.conf fakes them with character devices (no GPU is touched: device is cpu)
# The plugin drops SLURM_CONF before its in-job srun, so the clients must find the config here.
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel")
SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
MISSING = [b for b in BINARIES if shutil.which(b, path=SEARCH) is None]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING), reason=f"SLURM is not installed (no {', '.join(MISSING)}); "
                       ".ci/run installs slurm-wlm, slurm-client and munge with apt"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the test cluster runs its daemons as root and "
                       "links /etc/slurm/slurm.conf"),
]


@dataclass(frozen=True)
class Cluster:
    root: Path
    conf: Path
    cpus: int
    mem_mb: int

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": SEARCH}

    def run(self, *cmd: str, timeout: float = 30) -> str:
        res = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=timeout)
        return res.stdout if res.returncode == 0 else ""

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _write_config(d: Path) -> tuple[Path, int, int]:
    """slurm.conf and gres.conf for this machine as one node on loopback."""
    node = subprocess.run(["slurmd", "-C"], env={"PATH": SEARCH}, capture_output=True,
                          text=True, check=True, timeout=30).stdout.splitlines()[0]
    cpus = int(re.search(r"\bCPUs=(\d+)", node).group(1))
    mem_mb = int(re.search(r"\bRealMemory=(\d+)", node).group(1))
    (d / "ctld").mkdir()
    (d / "spool").mkdir()
    conf = d / "slurm.conf"
    conf.write_text(f"""\
ClusterName=pixmimtest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job waits cred_expire seconds before it may start again (default 120)
AuthInfo=socket={d / 'munge.sock'},cred_expire=5
CredType=cred/munge
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation={d / 'ctld'}
SlurmdSpoolDir={d / 'spool'}
SlurmctldPidFile={d / 'slurmctld.pid'}
SlurmdPidFile={d / 'slurmd.pid'}
SlurmctldLogFile={d / 'slurmctld.log'}
SlurmdLogFile={d / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# squeue (the profile's status command) sees finished jobs for MinJobAge seconds
MinJobAge=3600
ReturnToService=2
# pending jobs (a requeued one) are tried every 2 s rather than every 60 s
SchedulerParameters=sched_interval=2
GresTypes=gpu
{node} NodeAddr=127.0.0.1 Gres=gpu:{GPUS} State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=NO MaxTime=INFINITE State=UP
""")
    # fake GPUs: gres needs real character devices
    (d / "gres.conf").write_text("".join(f"Name=gpu File={dev}\n"
                                         for dev in ("/dev/null", "/dev/zero")[:GPUS]))
    key = d / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    return conf, cpus, mem_mb


def _start(d: Path, name: str, *cmd: str) -> subprocess.Popen:
    with open(d / f"{name}.out", "w") as out:
        return subprocess.Popen([shutil.which(cmd[0], path=SEARCH), *cmd[1:]], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _wait(predicate, timeout: float, what: str, logs=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n{logs()}")
        time.sleep(0.2)


@pytest.fixture
def slurm_cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("slurm")
    conf, cpus, mem_mb = _write_config(d)
    cluster = Cluster(d, conf, cpus, mem_mb)
    backup = SYSTEM_CONF.with_name("slurm.conf.pixmim-test-backup")
    made_dir = not SYSTEM_CONF.parent.exists()
    procs: list[subprocess.Popen] = []
    try:
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        if SYSTEM_CONF.is_symlink() and not SYSTEM_CONF.exists():
            SYSTEM_CONF.unlink()  # dangling: left by a killed run of this test
        if SYSTEM_CONF.exists() or SYSTEM_CONF.is_symlink():
            SYSTEM_CONF.rename(backup)
        SYSTEM_CONF.symlink_to(conf)
        procs.append(_start(d, "munged", "munged", "--foreground", "--force",
                            f"--socket={d / 'munge.sock'}", f"--key-file={d / 'munge.key'}",
                            f"--pid-file={d / 'munged.pid'}", f"--log-file={d / 'munged.log'}",
                            f"--seed-file={d / 'munged.seed'}"))
        _wait((d / "munge.sock").exists, 20, "munged's socket",
              lambda: (d / "munged.out").read_text() + cluster.log("munged"))
        procs.append(_start(d, "slurmctld", "slurmctld", "-D", "-f", str(conf)))
        procs.append(_start(d, "slurmd", "slurmd", "-D", "-f", str(conf)))
        _wait(lambda: cluster.run("sinfo", "-h", "-N", "-o", "%t", timeout=10).strip() == "idle",
              60, "the node to be idle",
              lambda: cluster.log("slurmctld")[-3000:] + cluster.log("slurmd")[-3000:])
        yield cluster
    finally:
        # leftover jobs first (their slurmstepd outlive slurmd), then the daemons, then the link:
        # with a config but no controller every SLURM client call (and so every snakemake
        # command, which imports the plugin) waits ~10 s for the controller
        if len(procs) == 3:
            cluster.run("scancel", "--partition", PARTITION)
            deadline = time.monotonic() + 30
            while cluster.run("squeue", "-h", "-t", "PD,R,CG,S").strip() and \
                    time.monotonic() < deadline:
                time.sleep(0.5)
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if SYSTEM_CONF.is_symlink() and SYSTEM_CONF.readlink() == conf:
            SYSTEM_CONF.unlink()
        if backup.exists() or backup.is_symlink():
            backup.rename(SYSTEM_CONF)
        if made_dir and not any(SYSTEM_CONF.parent.iterdir()):
            SYSTEM_CONF.parent.rmdir()


def node_profile(tmp_path: Path, cluster: Cluster) -> Path:
    """The slurm profile's resources with values clamped to the test node, quick polling and
    kept job logs. Users give the slurm profile as the workflow profile (in place of
    profiles/default); here it is the general --profile and this one the workflow profile,
    whose keys replace the general profile's."""
    import yte  # Snakemake's own profile templating

    with open(PROFILE / "config.yaml") as f:
        base = yte.process_yaml(f, require_use_yte=True)

    def clamp(resources: dict) -> dict:
        out = dict(resources)
        if "gpu" in out:
            out["gpu"] = min(out["gpu"], GPUS)
        if "mem_mb" in out:
            out["mem_mb"] = min(out["mem_mb"], cluster.mem_mb // 4)
        return out

    profile = {
        "default-resources": clamp(base["default-resources"]),
        "set-resources": {rule: clamp(res) for rule, res in base["set-resources"].items()},
        "set-threads": {rule: min(n, cluster.cpus) for rule, n in base["set-threads"].items()},
        "slurm-init-seconds-before-status-checks": 1,
        "slurm-keep-successful-logs": True,
        "slurm-logdir": str(tmp_path / "slurm_logs"),
    }
    out = tmp_path / "node_profile"
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return out


def jobs_of(cluster: Cluster) -> dict[str, str]:
    """SLURM job id -> comment (the plugin's `rule_<rule>_wildcards_<wildcards>`)."""
    out = cluster.run("squeue", "-h", "-t", "all", "-o", "%i|%k")
    return dict(line.split("|", 1) for line in out.splitlines() if "|" in line)


def test_profile_runs_dag_part_on_slurm_and_requeued_job_resumes(slurm_cluster, tmp_path,
                                                                  monkeypatch):
    from pixmim import workflow as W

    monkeypatch.setenv("PIXMIM_SLURM_PARTITION", PARTITION)
    overlay = tiny_overrides(tmp_path)
    overlay["pretrain"]["ckpt_every_steps"] = 1  # a checkpoint to resume from, early on
    overlay["pretrain"]["gpus"] = GPUS  # the layout: one process per (fake) GPU of the node
    overlay["finetune"]["gpus"] = GPUS
    overlay_path = tmp_path / "overlay.yaml"
    overlay_path.write_text(yaml.safe_dump(overlay))
    cfg = W.load_config(overlay_path)
    exps = list(W.experiments(cfg))[:2]  # Table 2's pair: MAE and PixMIM-MAE
    runs = [Path(W.run_dir(cfg, exp, "pretrain")) for exp in exps]
    finetune = Path(W.run_dir(cfg, exps[0], "finetune"))
    targets = [W.data_root(cfg), *(str(run / "metrics.json") for run in runs),
               str(finetune / "metrics.json")]
    cmd = [sys.executable, "-m", "snakemake", *targets, "--profile", str(PROFILE),
           "--workflow-profile", str(node_profile(tmp_path, slurm_cluster)),
           "--configfile", str(overlay_path)]

    started = time.monotonic()
    log_path = tmp_path / "snakemake.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        # preempt the first pretraining job once it has a checkpoint: the profile submits with
        # --requeue, so SLURM puts it back in the queue (same job id) and starts it again
        state = runs[0] / "_state" / "last.pth"
        _wait(lambda: state.exists() or proc.poll() is not None, 600,
              "the first pretraining checkpoint", lambda: log_path.read_text()[-4000:])
        assert proc.poll() is None, log_path.read_text()[-4000:]
        comment = f"rule_pretrain_wildcards_{exps[0]}"
        job_id = next(i for i, c in jobs_of(slurm_cluster).items() if c == comment)
        assert not (runs[0] / "metrics.json").exists(), "pretraining ended before the requeue"
        res = subprocess.run(["scontrol", "requeue", job_id], env=slurm_cluster.env(),
                             capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)
    elapsed = time.monotonic() - started
    out = log_path.read_text()
    assert proc.returncode == 0, out[-6000:]

    # every target, and every job ran under SLURM: the plugin's job logs and slurmctld agree
    assert (Path(W.data_root(cfg)) / "train").is_dir()
    jobs = jobs_of(slurm_cluster)
    assert sorted(jobs.values()) == sorted(["rule_generate_data",
                                            *(f"rule_pretrain_wildcards_{e}" for e in exps),
                                            f"rule_finetune_wildcards_{exps[0]}_finetune"])
    ctld = slurm_cluster.log("slurmctld")
    for jid, comment in jobs.items():
        assert f"JobId={jid}" in ctld
        logs = list((tmp_path / "slurm_logs").glob(f"{comment.split('_wildcards_')[0]}/**/"
                                                   f"{jid}.log"))
        assert logs, (jid, comment)
        info = slurm_cluster.run("scontrol", "show", "job", "--details", jid)
        assert "JobState=COMPLETED" in info and f"Partition={PARTITION}" in info, info
        if comment.startswith(("rule_pretrain", "rule_finetune")):
            # both fake GPUs of the node, one torchrun process each (gloo DDP on the CPU)
            assert f"TresPerJob=gres:gpu:{GPUS}" in info, info
            assert f"JOB_GRES=gpu:{GPUS}" in info, info
            out = finetune if comment.startswith("rule_finetune") else \
                runs[exps.index(comment.split("_wildcards_")[1])]
            metrics = json.loads((out / "metrics.json").read_text())
            assert metrics["world_size"] == GPUS, comment
        # the preempted job ran twice under the same id and resumed from its checkpoint
        assert re.search(r"\bRestarts=(\d+)", info).group(1) == ("1" if jid == job_id else "0")
    assert "resumed from" in (Path(cfg["results"]) / "logs" / exps[0] / "pretrain.log").read_text()
    assert "resumed from" not in (Path(cfg["results"]) / "logs" / exps[1] / "pretrain.log"
                                  ).read_text()
    print(f"SLURM run of {len(jobs)} jobs: {elapsed:.0f} s")

    # the run is complete: the same command has nothing to do
    again = subprocess.run([*cmd, "-n"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, \
        again.stdout[-3000:] + again.stderr[-3000:]
