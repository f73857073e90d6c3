"""The built-in per-experiment stages: ``STAGES``, plain data the DAG imports without torch.

Each entry names the module that runs it (``pixmim.stages.<x>``: ``run(cfg, out)`` and
``main(argv)``, imported only by its jobs), the rule that runs it, what it consumes and
writes, how its job config is resolved, its table columns and its cost model for the budget
(fields: :class:`pixmim.declare.Stage`). A user's stage is the same declaration in a plugin
module (config key ``plugins``).
"""

from __future__ import annotations

from pixmim.declare import Stage

# Full fine-tuning and the few-shot subsets of Table 19 (1% and 10% class-balanced).
# Cost: a training step (forward + backward) on all tokens.
_FT = dict(module="pixmim.stages.finetune", help="End-to-end fine-tuning", rule="finetune",
           outputs=("model.pth", "metrics.json"), job="finetune", section="finetune",
           data="images", cost=dict(kind="epochs", passes="train"))
# detect_coco_2x is Table 18's 2x schedule (its iterations: `stage_overrides.detect_coco_2x.
# detection` of the config). Cost: the encoder trained at 1024 px (its family counts global
# attention in every block: ViT-B ~1,315 GFLOPs, ViTDet's windows ~920), times the heads'
# share (assumed 1.2: ViTDet reports ~0.8 T multiply-adds for its ViT-B Mask R-CNN, i.e.
# ~1.6 TFLOPs, about 1.2x the global-attention count).
_DET = dict(module="pixmim.stages.detect_coco", rule="dense", job="dense", section="detection",
            data="scenes", cost=dict(kind="iters", passes="train", heads=1.2))

STAGES = [
    Stage(name="pretrain", module="pixmim.stages.pretrain",
          help="Masked-image-modeling pretraining", rule="pretrain", consumes=None,
          outputs=("checkpoint.pth", "metrics.json"), job="train", section="pretrain",
          data="images", cost=dict(kind="pretrain")),
    # Cost: the frozen encoder's forward on all tokens per image and epoch.
    Stage(name="linear_probe", module="pixmim.stages.linear_probe",
          help="Linear probe on frozen features", rule="linear_probe", job="train",
          section="linear_probe", data="images", columns={"lin": ("top1_best", "lin (%)")},
          cost=dict(kind="epochs", passes="forward")),
    Stage(**_FT, name="finetune", columns={"ft": ("top1_best", "ft (%)")}),
    Stage(**{**_FT, "help": "Fine-tuning on 1% of the labels (Table 19)"}, name="finetune_1pct",
          params={"fraction": 0.01}, columns={"fs1": ("top1_best", "1% (%)")}),
    Stage(**{**_FT, "help": "Fine-tuning on 10% of the labels (Table 19)"},
          name="finetune_10pct", params={"fraction": 0.1},
          columns={"fs10": ("top1_best", "10% (%)")}),
    # Images read: IN-C 50k x 75, IN-A 7.5k, IN-R 30k, IN-S 50,889.
    Stage(name="robustness", module="pixmim.stages.robustness",
          help="ImageNet-C/-A/-R/-Sketch of a fine-tuned model", rule="evaluate",
          consumes="finetune", job="evaluate", data="views",
          params=dict(eval_sets=("imagenet_c", "imagenet_a", "imagenet_r", "imagenet_sketch")),
          columns={"in_c": ("mce", "IN-C mCE (lower better)"),
                   "in_a": ("imagenet_a_top1", "IN-A (%)"),
                   "in_r": ("imagenet_r_top1", "IN-R (%)"),
                   "in_s": ("imagenet_sketch_top1", "IN-S (%)")},
          cost=dict(kind="images", images=3838389, passes="forward")),
    # Figure 8; 1,280 cue-conflict images. Column: the fraction of cue-matching decisions
    # that follow the shape (Geirhos et al. 2019), for the calibration's evaluation tier.
    Stage(name="shape_bias", module="pixmim.stages.shape_bias",
          help="Shape bias on the cue-conflict stimuli", rule="evaluate", consumes="finetune",
          job="evaluate", data="views", params=dict(eval_sets=("cue_conflict",)),
          columns={"shape": ("shape_bias", "shape bias (fraction)")},
          cost=dict(kind="images", images=1280, passes="forward")),
    # Figures 1 and 5; ImageNet val, 50k images.
    Stage(name="frequency", module="pixmim.stages.frequency",
          help="Reconstruction PSNR per frequency band (Fig. 5)", rule="evaluate",
          job="frequency", data="images",
          cost=dict(kind="images", images=50000, passes="forward")),
    # Cost: the encoder trained at the 512 crop, times the heads' share (assumed): ViT-B's
    # forward at 512 is ~213 GFLOPs, UperNet's with 768 channels ~1,000 (the 3x3 bottleneck
    # over 4 x 768 channels at 1/4 resolution alone ~696), so ~5.7x the encoder's.
    Stage(name="segment_ade20k", module="pixmim.stages.segment_ade20k",
          help="UperNet on ADE20K (mmsegmentation)", rule="dense", job="dense",
          section="segmentation", data="scenes", columns={"miou": ("miou", "mIoU")},
          cost=dict(kind="iters", passes="train", heads=5.7)),
    Stage(**_DET, name="detect_coco", help="Mask R-CNN, ViTDet style, on COCO (mmdet)",
          columns={"ap_box": ("ap_box", "AP box"), "ap_mask": ("ap_mask", "AP mask")}),
    Stage(**_DET, name="detect_coco_2x", help="Mask R-CNN on COCO, 2x schedule (Table 18)",
          columns={"ap_box_2x": ("ap_box", "AP box (2x)"),
                   "ap_mask_2x": ("ap_mask", "AP mask (2x)")}),
]
