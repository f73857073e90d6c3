"""How a training job's processes are started: the one place that builds the command
(torch-free; the workflow's rules and ``python -m pixmim launch`` call it).

A job of ``nodes`` x ``gpus`` (its config's layout, :func:`pixmim.workflow.jobs.layout`)
runs ``max(gpus, 1) x nodes`` processes of ``python -m pixmim run ...``:

* one process (gpus <= 1, one node): ``python`` itself;
* one node, G > 1: ``torchrun --standalone --nproc_per_node G`` (``python -m
  torch.distributed.run``), which sets each process's RANK, WORLD_SIZE, LOCAL_RANK and
  MASTER_ADDR/PORT;
* N > 1 nodes (SLURM only): ``srun`` starts one torchrun per node of the allocation, which
  meet at a c10d rendezvous on the allocation's first node (``scontrol show hostnames``),
  under an id and port unique to the SLURM job.

Each process gets ``threads / processes per node`` OpenMP threads (at least one). The
prefix ends where the interpreter's arguments begin: ``<prefix> -m pixmim run ...``.
"""

from __future__ import annotations

import argparse
import shlex

PORT = 29500  # torchrun's default rendezvous port; a multi-node job adds job id mod SPREAD
SPREAD = 20000  # ... so that two jobs whose first node is the same do not collide


def launch_command(nodes: int, gpus: int, threads: int, python: str = "python") -> str:
    """The shell prefix that starts ``python`` as ``max(gpus, 1) x nodes`` processes with
    ``threads`` CPU threads per node between them."""
    if nodes < 1 or gpus < 0 or threads < 1:
        raise ValueError(f"launch: nodes {nodes} (>= 1), gpus {gpus} (>= 0), threads "
                         f"{threads} (>= 1)")
    per_node = max(gpus, 1)
    omp = max(threads // per_node, 1)
    py = shlex.quote(python)
    if nodes == 1:
        if per_node == 1:
            return f"OMP_NUM_THREADS={omp} {py}"
        return (f"OMP_NUM_THREADS={omp} {py} -m torch.distributed.run --standalone "
                f"--nproc_per_node {per_node}")
    # several nodes: only inside a SLURM allocation of `nodes` nodes (one task each)
    need = (f"nodes: {nodes} needs a SLURM allocation of {nodes} nodes "
            "(snakemake --workflow-profile profiles/slurm)")
    return (f': "${{SLURM_JOB_NODELIST:?{need}}}"; '
            'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1); '
            f"OMP_NUM_THREADS={omp} srun --nodes {nodes} --ntasks {nodes} "
            f"--ntasks-per-node 1 --cpus-per-task {threads} --kill-on-bad-exit=1 "
            f"{py} -m torch.distributed.run --nnodes {nodes} --nproc_per_node {per_node} "
            f'--rdzv_backend c10d --rdzv_endpoint "$head:$(( {PORT} + SLURM_JOB_ID % {SPREAD} ))" '
            '--rdzv_id "pixmim-$SLURM_JOB_ID"')


def slurm_resources(nodes: int, gpus: int) -> dict[str, int | str | None]:
    """The resources of a job of this layout as snakemake-executor-plugin-slurm reads
    them: one node, ``gpu`` (sbatch --gpus, the job's total); several nodes, ``gres``
    ``gpu:G`` (per node), one task per node (``tasks``, with ``tasks_per_gpu: 0`` so
    that no --ntasks-per-gpu is derived from it) and ``mpi`` set, so that the job step
    runs the rule's command itself (which calls srun) instead of inside ``srun -n1``.
    None: the resource is unset."""
    if nodes == 1:
        return {"nodes": 1, "gpu": gpus, "gres": None, "tasks": None, "tasks_per_gpu": None,
                "mpi": None}
    return {"nodes": nodes, "gpu": None, "gres": f"gpu:{gpus}" if gpus else None,
            "tasks": nodes, "tasks_per_gpu": 0, "mpi": "srun"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pixmim launch",
        description="Print the command prefix that starts a job's processes "
                    "(then: <prefix> -m pixmim run --config ...).")
    p.add_argument("--nodes", type=int, default=1, help="nodes of the job (default 1)")
    p.add_argument("--gpus", type=int, default=0,
                   help="processes per node, one per GPU (0: one process; default)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per node (default 1)")
    p.add_argument("--python", default="python", help="the interpreter (default python)")
    a = p.parse_args(argv)
    print(launch_command(a.nodes, a.gpus, a.threads, a.python))
    return 0
