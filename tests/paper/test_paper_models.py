"""Paper-size models from the resolved paper-scale job configs, on the meta device (shapes
only, no weights): token counts, mask units, the low-pass radius and the share of bins it
keeps, output shapes; and every pretraining checkpoint's keys loading into each of its
downstream models at paper size. A mismatch such as LSMAE pretrained at 224 but fine-tuned
at 448 fails here in seconds, on the CPU. The geometry facts are written down below, each
with its source.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from pixmim.config import JobConfig, from_dict
from pixmim.models import create_model
from pixmim.models.classifier import build_classifier
from pixmim.models.export import fit_pos_embeds, load_pretrained
from pixmim.models.targets import lowpass_mask
from pixmim.stages.common import build_pretrained
from pixmim.stages.pretrain import build, model_kwargs
from pixmim.workflow.jobs import job_config
from tests.paper.test_conformance import paper_jobs

# (method, arch) -> input px, patch grid side, mask units, units kept at 75% masking,
# patches per unit. ViT-B/16 at 224: 14 x 14 patches, keep 49 (MAE Sec. 4, reference facts).
# LSMAE: 448 px, 28 x 28 patches, 14 x 14 units of 2 x 2 patches, keep 49 units = 196 patches
# (long_seq_mae). ConvMAE: masks drawn on the 1/16 grid (14 x 14), keep 49 (models_convmae.py).
GEOMETRY = {
    ("mae", "vit_base_patch16_224"): (224, 14, 196, 49, 1),
    ("mae", "vit_small_patch16_224"): (224, 14, 196, 49, 1),
    ("mae", "vit_large_patch16_224"): (224, 14, 196, 49, 1),
    ("mff", "vit_base_patch16_224"): (224, 14, 196, 49, 1),
    ("lsmae", "vit_base_patch16_448"): (448, 28, 196, 49, 4),
    ("convmae", "convvit_base_224"): (224, 14, 196, 49, 1),
}
# PixMIM Sec. 4.1: r = 40 bins at 224 px keeps ~10% of the bins (pi 40^2 / 224^2 = 10.0%);
# at 448 px the radius scales to 80 (lowpass.scale_with_size), the share stays ~10%.
KEPT_SHARE = 0.10


def pretrain_jobs() -> list[dict[str, Any]]:
    """One resolved pretraining job per distinct (method, arch, target) of the paper."""
    config, exps, jobs = paper_jobs()
    seen, out = set(), []
    for exp, stage in jobs:
        if stage != "pretrain":
            continue
        job = job_config(config, exp, stage, exps)
        key = (job["method"], job["arch"], job["variant"]["target"],
               job["variant"].get("radius"))
        if key not in seen:
            seen.add(key)
            out.append(job)
    return out


JOBS = pretrain_jobs()
IDS = [f"{j['method']}-{j['arch']}-{j['variant']['target']}{j['variant'].get('radius', '')}"
       for j in JOBS]


def test_every_paper_model_has_its_geometry_written_down():
    assert {(j["method"], j["arch"]) for j in JOBS} == set(GEOMETRY)


@pytest.mark.parametrize("job", JOBS, ids=IDS)
def test_paper_pretraining_model_geometry_on_meta(job):
    cfg = from_dict(JobConfig, job)
    size, side, units, kept, per_unit = GEOMETRY[(cfg.method, cfg.arch)]
    assert cfg.data.img_size == size
    with torch.device("meta"):
        model = build(cfg)
        assert model.num_mask_units == units
        n = 2
        imgs = torch.empty(n, 3, size, size)
        loss, pred, mask = model(imgs, noise=torch.rand(n, units))
    tokens = side * side
    assert mask.shape == (n, tokens)
    assert pred.shape[:2] == (n, tokens)
    assert int(units * (1 - cfg.mask_ratio)) == kept
    if cfg.variant.target in ("lowpass", "highpass"):
        radius = model_kwargs(cfg)["radius"]
        assert radius == pytest.approx(cfg.variant.radius * size / 224, abs=1e-4)
        share = lowpass_mask(size, size, radius, cfg.variant.lowpass_mode).float().mean().item()
        assert share == pytest.approx(math.pi * radius**2 / size**2, abs=0.005)
        if cfg.variant.radius == 40:  # the paper's PixMIM
            assert share == pytest.approx(KEPT_SHARE, abs=0.005)


@pytest.mark.parametrize("job", [j for j in JOBS if j["method"] == "lsmae"][:1], ids=["lsmae"])
def test_lsmae_keeps_whole_units_at_paper_geometry(job):
    """A scaled-down copy with the paper job's geometry (448 px, 16-px patches, 2 x 2 units,
    75%), real tensors: every sample keeps 196 patches forming exactly 49 whole units."""
    cfg = from_dict(JobConfig, job)
    small = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=1,
                 decoder_num_heads=2)
    model = create_model(cfg.method, cfg.arch, **{**model_kwargs(cfg), **small}).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        _, _, mask = model(torch.randn(2, 3, 448, 448))
    kept = (mask == 0).view(2, 14, 2, 14, 2)  # [n, unit row, 2, unit col, 2]
    per_unit = kept.sum(dim=(2, 4))
    assert ((per_unit == 0) | (per_unit == 4)).all()
    assert (per_unit == 4).sum(dim=(1, 2)).tolist() == [49, 49]


def downstream_jobs(pre_job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    config, exps, jobs = paper_jobs()
    exp = pre_job["experiment"]
    return {stage: job_config(config, exp, stage, exps) for e, stage in jobs if e == exp}


@pytest.mark.parametrize("job", JOBS, ids=IDS)
def test_paper_checkpoint_loads_into_every_downstream_model_on_meta(job):
    """The pretraining state dict (meta tensors) loads, with the exact key checks the stages
    use, into the fine-tune classifier, the probe's encoder at the evaluation size, and the
    dense backbones at the paper's crops (512 ADE20K, 1024 COCO)."""
    from pixmim import families
    from pixmim.downstream.backbones import load_encoder as load_dense

    cfg = from_dict(JobConfig, job)
    meta = {"method": cfg.method, "arch": cfg.arch, "model_kwargs": model_kwargs(cfg)}
    stages = downstream_jobs(job)
    with torch.device("meta"):
        state = build(cfg).state_dict()
        for stage, djob in stages.items():
            if "finetune" in djob:
                f = djob["finetune"]
                clf = build_classifier(cfg.method, cfg.arch, 1000, f["drop_path"],
                                       f["global_pool"], img_size=djob["data"]["img_size"])
                load_pretrained(clf, state, cfg.method)
            elif stage == "linear_probe":
                enc = build_pretrained(meta, djob["data"]["img_size"])
                enc.load_state_dict(fit_pos_embeds(state, enc))
                assert enc.forward_probe_features(
                    torch.empty(2, 3, djob["data"]["img_size"], djob["data"]["img_size"])
                ).shape[0] == 2
            elif "dense" in djob:
                # the backbone as the job's config names it (its family's dense config)
                nets, dcfg = families.nets_of(cfg.method), from_dict(JobConfig, djob)
                kw = dict(nets.segmentation(dcfg, cfg.arch, None)[0] if stage == "segment_ade20k"
                          else nets.detection(dcfg, cfg.arch, None, 256)[0])
                bb = nets.MODULES[kw.pop("type")](**kw)
                load_dense(bb, state, cfg.method, cfg.arch)
    assert {"finetune", "linear_probe"} <= set(stages) or cfg.arch != "vit_base_patch16_224"

