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
    "table": ("pixmim.report.tables", "Assemble a paper table from metrics.json files"),
    "figure": ("pixmim.report.figures", "Draw a figure from metrics.json files"),
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

    try:
        return module.main(rest) or 0
    except (ConfigError, FileNotFoundError, KeyError, ValueError) as e:
        # Bad input: one line naming the culprit, no traceback.
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"pixmim {stage}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
