"""The one CLI: ``python -m pixmim <stage> --config FILE --out DIR``.

Stages are imported lazily so that torch-free commands (``table``) start fast.
"""

from __future__ import annotations

import importlib
import sys

STAGES = {
    "data": ("pixmim.stages.data", "Generate the embedded dataset: data synth --out DIR --seed S"),
    "pretrain": ("pixmim.stages.pretrain", "Masked-image-modeling pretraining"),
    "linear_probe": ("pixmim.stages.linear_probe", "Linear probe on frozen features"),
    "robustness": ("pixmim.stages.robustness", "ImageNet-C/-A/-R/-Sketch of a fine-tuned model"),
    "shape_bias": ("pixmim.stages.shape_bias", "Shape bias on the cue-conflict stimuli"),
    "finetune": ("pixmim.stages.finetune", "End-to-end fine-tuning (and few-shot subsets)"),
    "segment_ade20k": ("pixmim.stages.segment_ade20k", "UperNet on ADE20K (mmsegmentation)"),
    "detect_coco": ("pixmim.stages.detect_coco", "Mask R-CNN, ViTDet style, on COCO (mmdet)"),
    "frequency": ("pixmim.stages.frequency", "Reconstruction PSNR per frequency band (Fig. 5)"),
    "coverage": ("pixmim.stages.coverage", "Object coverage J(F) of the crops (Fig. 6)"),
    "table": ("pixmim.report.tables", "Assemble a paper table from metrics.json files"),
    "figure": ("pixmim.report.figures", "Draw a figure from metrics.json files"),
    "budget": ("pixmim.workflow.budget", "GPU-hours each table / figure still needs"),
    "mlflow-sync": ("pixmim.stages.mlflow_sync", "Replay tracking logged while MLflow was down"),
    "mlflow-init": ("pixmim.stages.mlflow_init", "Create the MLflow store and experiment"),
}


def usage() -> str:
    lines = ["usage: python -m pixmim <stage> [args]", "", "stages:"]
    lines += [f"  {name:<14} {help_}" for name, (_, help_) in STAGES.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        print(f"unknown stage {stage!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(STAGES[stage][0])
    from pixmim.config import ConfigError
    from pixmim.engine.io import WriteError
    from pixmim.engine.loop import Preempted

    try:
        return module.main(rest) or 0
    except Preempted as e:
        # SIGTERM (SLURM's preemption / time limit): state saved; a rerun resumes from it.
        print(f"pixmim {stage}: {e}", file=sys.stderr)
        return Preempted.exit_code
    except (ConfigError, FileNotFoundError, KeyError, ValueError, FloatingPointError,
            WriteError) as e:
        # Bad input (or a full disk): one line naming the culprit, no traceback.
        print(f"pixmim {stage}: error: {one_line(e)}", file=sys.stderr)
        return 1


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
