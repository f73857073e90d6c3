"""The lr a paper-scale job trains at, read off the project's own optimizer and schedule at
the end of the warm-up, against the paper's rule written here: lr = base lr x batch / 256
(MAE Sec. A.1, which PixMIM's Appendix B follows), with the base lrs and batches of PixMIM
Tables 7-11. A change of the rule in the engine, or of a base lr or batch in the config,
shows here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from pixmim.config import JobConfig, from_dict
from pixmim.engine.loop import build_scheduler
from pixmim.stages import finetune, linear_probe, pretrain
from pixmim.workflow.catalogue import experiments, load_config
from pixmim.workflow.jobs import job_config

ROOT = Path(__file__).resolve().parents[2]
STEPS = 10  # optimizer steps per epoch of the check (any count: the warm-up is in epochs)

# run, stage, base lr, batch: the paper's (PixMIM Tables 7-11)
CASES = [
    ("pixmim_mae_800", "pretrain", 1.5e-4, 4096),      # Table 7
    ("pixmim_lsmae_800", "pretrain", 1.5e-4, 2048),    # Table 8
    ("pixmim_mae_800", "finetune", 1e-3, 1024),        # Table 9
    ("pixmim_mae_800", "linear_probe", 0.1, 16384),    # Table 10
    ("pixmim_convmae_800", "linear_probe", 0.1, 4096),  # Table 11
]
# AdamW's betas (PixMIM Table 7: 0.9, 0.95; Table 9: 0.9, 0.999)
BETAS = {"pretrain": (0.9, 0.95), "finetune": (0.9, 0.999)}


def paper_job(run: str, stage: str) -> JobConfig:
    config = load_config(ROOT / "config" / "paper.yaml")
    exps = experiments(config)
    exp = next(e for e, k in exps.items() if run in k["names"])
    job = job_config(config, exp, stage, exps)
    job["train"]["device"] = "cpu"
    return from_dict(JobConfig, job)


def optimizer_of(stage: str, cfg: JobConfig) -> torch.optim.Optimizer:
    """The stage's own optimizer on a small stand-in model."""
    if stage == "pretrain":
        return pretrain.build_optimizer(nn.Linear(4, 4), cfg.train, torch.device("cpu"))
    if stage == "finetune":
        import timm

        model = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2,
                                  num_classes=4, global_pool="avg")
        return finetune.build_optimizer(model, cfg)
    return linear_probe.lars(nn.Linear(4, 4), cfg)


@pytest.mark.parametrize("run, stage, base_lr, batch", CASES,
                         ids=[f"{r}-{s}" for r, s, *_ in CASES])
def test_lr_after_warmup_is_the_papers_base_lr_times_batch_over_256(run, stage, base_lr, batch):
    cfg = paper_job(run, stage)
    optimizer = optimizer_of(stage, cfg)
    scheduler = build_scheduler(optimizer, cfg.train, STEPS)
    scheduler.step_update(round(cfg.train.warmup_epochs * STEPS))
    # the group at full lr (layer decay scales the others down)
    lr = max(g["lr"] for g in optimizer.param_groups)
    assert lr == pytest.approx(base_lr * batch / 256, rel=1e-9), (
        f"{run}/{stage}: the training loop's lr after warm-up is {lr:g}; the paper's rule "
        f"gives {base_lr:g} x {batch} / 256 = {base_lr * batch / 256:g}")


@pytest.mark.parametrize("stage", sorted(BETAS))
def test_the_stage_optimizer_is_adamw_with_the_papers_betas(stage):
    """The optimizer the stage builds (not only the config's keys): AdamW, Table 7 / 9 betas."""
    optimizer = optimizer_of(stage, paper_job("pixmim_mae_800", stage))
    assert type(optimizer).__name__ == "AdamW"
    assert {tuple(g["betas"]) for g in optimizer.param_groups} == {BETAS[stage]}
