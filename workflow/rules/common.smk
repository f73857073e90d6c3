# Shared names and input/param functions; all logic lives in the torch-free pixmim.workflow.
# Rules live in the other files (snakemake --lint: no rules beside functions).
import os
import re
import sys

from pixmim import registry
from pixmim import workflow as W

R = config["results"]
# the SLURM resources a training job's layout sets (pixmim.workflow.launch.slurm_resources)
LAYOUT_RESOURCES = ("nodes", "gpu", "gres", "tasks", "tasks_per_gpu", "mpi")
STORE = f"{R}/mlflow/store.json"
# The conda env of each rule family (snakemake --sdm conda); paths are relative to the
# rule files. Any other family (a plugin stage's) runs in the training env.
ENVS = {
    "data": "../../envs/data.yaml",
    "train": "../../envs/train.yaml",
    "dense": "../../envs/dense.yaml",
}
# Jobs run `python -m pixmim ...`: with --sdm conda the interpreter of the rule's env (its
# activation puts it first on PATH), otherwise the interpreter running Snakemake, put first
# on PATH here (`.venv/bin/snakemake` then needs no activated venv).
os.environ.update(
    PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
)


wildcard_constraints:
    exp="[A-Za-z0-9][A-Za-z0-9_.-]*",
    stage="|".join(registry.stages(W.plugins(config))),
    table="table[0-9a-z]+",
    ckpt="[a-z0-9_]+",
    file="[^/]+",


def stage_input(wildcards, stage=None):
    """A job's inputs (pixmim.workflow.stage_inputs): its config (written at DAG build),
    its MLflow tags as an input that never triggers a rerun (ancient: adding a table
    retags runs, it does not recompute them), the outputs of the stage it consumes, the
    generated data it reads, the tracking store."""
    d = W.stage_inputs(config, wildcards.exp, stage or wildcards.stage)
    return {**d, "tags": ancient(d["tags"]), "store": STORE}


def table_inputs(wildcards):
    return W.table_inputs(config, wildcards.table)


def sweep_inputs(wildcards):
    return W.sweep_inputs(config)


def figure_inputs(name):
    return lambda wildcards: W.figure_inputs(config, name)


def figure_outputs(name):
    """A figure's files (pixmim.workflow.figure_files) by name, the first as ``out`` (the
    file its drawing function is given), those with a caption in the report."""
    out = {}
    for i, (path, caption) in enumerate(W.figure_files(config, name)):
        key = "out" if i == 0 else re.sub(r"\W", "_", os.path.basename(path))
        where = {"caption": f"../report/{caption}", "category": "Figures"}
        out[key] = report(path, **where) if caption else path
    return out


def family_env(family):
    """The conda env file of a stage rule family (ENVS)."""
    return ENVS["dense" if family == "dense" else "train"]


def weights(path):
    """An output path; a weights file (*.pth) is temp() where config keep_weights is false:
    Snakemake deletes it once every job reading it is done."""
    if path.endswith(".pth") and not config.get("keep_weights", True):
        return temp(path)
    return path


def out_dir(wildcards, output):
    """The folder a job writes into: that of its metrics.json (an output, so the path
    also holds where jobs do not share the file system)."""
    return os.path.dirname(output.metrics)


def stem(wildcards, output):
    """A table's output path without its suffix (table writes <stem>.csv and <stem>.md)."""
    return os.path.splitext(output.csv)[0]


def data_root(wildcards, input):
    """The images a job reads: its generated dataset (an input), or data.root for real
    data (read in place: no input, since no rule makes it)."""
    return input.data if input.data else W.data_root(config)


def launch(stage=None):
    """The command prefix that starts a job's processes (pixmim.workflow.launch): its
    layout (nodes, gpus) from its config, its CPU threads from the rule."""

    def prefix(wildcards, threads):
        lay = W.job_layout(config, wildcards.exp, stage or wildcards.stage)
        return W.launch_command(lay["nodes"], lay["gpus"], threads)

    return prefix


def layout_resource(name, stage=None):
    """One SLURM resource of a job (gpu, nodes, gres, tasks, ...) from its config's layout
    (pixmim.workflow.launch.slurm_resources); None leaves it unset."""

    def value(wildcards):
        lay = W.job_layout(config, wildcards.exp, stage or wildcards.stage)
        return W.slurm_resources(lay["nodes"], lay["gpus"])[name]

    return value


def released(key):
    """A released checkpoint's ``source`` or ``checksum`` (config key checkpoints.<ckpt>;
    a checksum its authors do not publish is empty: the fetch refuses it, naming the key).
    """

    def value(wildcards):
        return config["checkpoints"][wildcards.ckpt][key] or ""

    return value
