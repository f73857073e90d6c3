"""Equality with the official implementations that are installable with a licence that
allows it (Apache-2.0, test-only dependencies in requirements-nodeps.txt): given the same
weights and the same mask noise, our MAE and MFF give mmpretrain 1.2.0's loss, prediction
and mask; our ``official`` low-pass equals mmselfsup 1.0.0's PixMIM target generator.

mmselfsup 1.0.0 asserts mmcv < 2.1.0 at import (we have 2.1.0): its target generator's
module is loaded from its file with a stand-in for the package's registry, its only
mmselfsup import. Each test skips, naming why, when its reference does not import.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import types

import pytest
import torch

from pixmim.models import create_model

# Weights renamed from ours (timm blocks) to mmpretrain's (mmcls-style layers), in order.
_RENAMES = [
    (r"^patch_embed\.proj\.", "patch_embed.projection."),
    (r"^blocks\.", "layers."),
    (r"\.norm1\.", ".ln1."),
    (r"\.norm2\.", ".ln2."),
    (r"\.mlp\.fc1\.", ".ffn.layers.0.0."),
    (r"\.mlp\.fc2\.", ".ffn.layers.1."),
    (r"^norm\.", "ln1."),
]
_NECK = ("mask_token", "decoder_")


def mmpretrain():
    try:
        from pixmim.downstream import mmcv_ext

        mmcv_ext.install()
        import mmpretrain.models  # noqa: F401  (registers the modules)
    except Exception as err:  # noqa: BLE001 - any import failure is a reason to skip
        pytest.skip(f"mmpretrain 1.2.0 does not import here: {type(err).__name__}: {err}")
    return sys.modules["mmpretrain.models"]


def to_mmpretrain(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """Our MAE / MFF state dict -> (backbone, neck) state dicts of mmpretrain's MAE."""
    backbone, neck = {}, {}
    for key, value in state.items():
        if key.startswith(_NECK):
            k = key.replace("decoder_norm.", "ln1.")
            for pat, rep in _RENAMES[2:6]:
                k = re.sub(pat, rep, k)
            neck[k] = value
        else:
            k = key
            for pat, rep in _RENAMES:
                k = re.sub(pat, rep, k)
            backbone[k] = value
    return backbone, neck


# The CPU arch of the tests (pixmim.models.mae: vit_cpu_patch8_64), in mmpretrain's terms.
ARCH = dict(embed_dims=64, num_layers=4, num_heads=4, feedforward_channels=256)


def official(kind: str, ours: torch.nn.Module):
    models = mmpretrain()
    from mmpretrain.registry import MODELS

    backbone = dict(type="MAEViT", arch=ARCH, img_size=64, patch_size=8, mask_ratio=0.75)
    if kind == "mff":
        backbone.update(type="MFFViT", out_indices=list(ours.fusion_layers))
    cfg = dict(type="MAE" if kind == "mae" else "MFF", backbone=backbone,
               neck=dict(type="MAEPretrainDecoder", num_patches=64, patch_size=8, in_chans=3,
                         embed_dim=64, decoder_embed_dim=64, decoder_depth=2,
                         decoder_num_heads=2, mlp_ratio=4.0),
               head=dict(type="MAEPretrainHead", norm_pix=True, patch_size=8,
                         loss=dict(type="PixelReconstructionLoss", criterion="L2")))
    from mmengine.registry import DefaultScope

    # Another test in the same process may have left mmseg or mmdet as the default scope.
    with DefaultScope.overwrite_default_scope("mmpretrain"):
        model = MODELS.build(cfg).eval()
    assert models is not None
    return model


def load_ours_into(model, ours: torch.nn.Module) -> None:
    backbone, neck = to_mmpretrain(ours.state_dict())
    extra = {k: v for k, v in backbone.items() if k.startswith("fusion_")}
    for k in extra:
        del backbone[k]
    b = model.backbone.load_state_dict(_mff_keys(backbone, extra), strict=True)
    n = model.neck.load_state_dict(neck, strict=True)
    assert not b.missing_keys and not n.missing_keys


def _mff_keys(backbone: dict, fusion: dict) -> dict:
    """MFF's fusion (ours: fusion_proj.i / fusion_weight; mmpretrain: proj_layers.i /
    proj_weights)."""
    out = dict(backbone)
    for k, v in fusion.items():
        if k.startswith("fusion_proj."):
            out["proj_layers." + k.removeprefix("fusion_proj.")] = v
        elif k == "fusion_weight":
            out["proj_weights"] = v.view(-1, 1, 1, 1)  # theirs: [k, 1, 1, 1]
        else:
            raise KeyError(f"unmapped MFF key {k}")
    return out


def run_both(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    ours = create_model(kind, "vit_cpu_patch8_64", norm_pix_loss=True).eval()
    ref = official(kind, ours)
    load_ours_into(ref, ours)
    imgs = torch.randn(3, 3, 64, 64)
    torch.manual_seed(123)
    noise = torch.rand(3, 64)  # mmpretrain's MAEViT draws exactly this as its first rand
    with torch.no_grad():
        loss, pred, mask = ours(imgs, noise=noise)
        torch.manual_seed(123)
        latent, ref_mask, ids_restore = ref.backbone(imgs)[:3]  # MFF adds its weights
        ref_pred = ref.neck(latent, ids_restore)
        ref_loss = ref.head.loss(ref_pred, imgs, ref_mask)
    return (loss, pred, mask), (ref_loss, ref_pred, ref_mask)


@pytest.mark.parametrize("kind", ["mae", "mff"])
def test_same_weights_same_mask_same_loss_and_prediction_as_mmpretrain(kind):
    (loss, pred, mask), (ref_loss, ref_pred, ref_mask) = run_both(kind)
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(pred, ref_pred, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- mmselfsup's PixMIM target
def mmselfsup_low_freq():
    """mmselfsup 1.0.0's LowFreqTargetGenerator class, from its module file."""
    spec = importlib.util.find_spec("mmselfsup")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("mmselfsup 1.0.0 is not installed (requirements-nodeps.txt)")
    path = (f"{list(spec.submodule_search_locations)[0]}/models/target_generators/"
            "low_freq_generator.py")

    class _Registry:
        @staticmethod
        def register_module(*a, **k):
            return lambda cls: cls

    saved = sys.modules.get("mmselfsup.registry")
    sys.modules["mmselfsup.registry"] = types.SimpleNamespace(MODELS=_Registry())
    try:
        mod_spec = importlib.util.spec_from_file_location("_mmselfsup_low_freq", path)
        mod = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(mod)
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"mmselfsup's low_freq_generator.py does not load: {err}")
    finally:
        if saved is None:
            sys.modules.pop("mmselfsup.registry", None)
        else:
            sys.modules["mmselfsup.registry"] = saved
    return mod.LowFreqTargetGenerator


@pytest.mark.parametrize("size, radius", [(224, 40), (64, 40 * 64 / 224), (32, 6)])
def test_official_lowpass_equals_mmselfsups_pixmim_target(size, radius):
    from pixmim.models.targets import lowpass

    gen = mmselfsup_low_freq()(radius=radius, img_size=size)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.manual_seed(0)
    raw = torch.rand(2, 3, size, size)
    normed = (raw - mean) / std
    with torch.no_grad():
        ref = gen(normed)  # un-normalise, filter, abs, re-normalise (its own constants)
    ours = (lowpass(raw, radius, "official") - mean) / std
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- probe head, LARS, layer decay
def _stage_cfg(**train):
    """The fields of a job config the optimizer builders read."""
    from pixmim.config import FinetuneConfig, JobConfig, TrainConfig

    return JobConfig(experiment="t", stage="t", method="mae", arch="vit_cpu_patch8_64",
                     train=TrainConfig(**train), finetune=FinetuneConfig(layer_decay=0.75))


def test_probe_head_and_lars_step_equal_mmpretrains():
    """Our probe head (BatchNorm1d without affine + Linear) against mmpretrain's
    ClsBatchNormNeck + its LARS: same normalisation, and two LARS steps give the same
    weights. The bias group is excluded from the trust ratio as MAE's util/lars.py does
    (mmpretrain: ``lars_exclude``; its released MAE probe config adapts biases too)."""
    mmpretrain()
    from mmpretrain.engine.optimizers import LARS
    from mmpretrain.models.necks import ClsBatchNormNeck

    from pixmim.stages.linear_probe import build_head, lars

    torch.manual_seed(0)
    ours = build_head(64, 10)
    neck = ClsBatchNormNeck(input_features=64)
    bn, ref_bn = ours[0], neck.bn
    assert (bn.eps, bn.affine, bn.momentum) == (ref_bn.eps, ref_bn.affine, ref_bn.momentum)
    ref_fc = torch.nn.Linear(64, 10)
    ref_fc.load_state_dict(ours[1].state_dict())
    cfg = _stage_cfg(base_lr=0.1, batch_size=256, momentum=0.9, weight_decay=0.0,
                     optimizer="lars")
    opt = lars(ours, cfg)
    ref_opt = LARS([{"params": [ref_fc.weight]}, {"params": [ref_fc.bias], "lars_exclude": True}],
                   lr=opt.param_groups[0]["lr"], momentum=0.9, weight_decay=0.0)
    x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
    for _ in range(2):  # constant lr: the two momentum conventions agree
        for model, o in ((ours, opt), (None, ref_opt)):
            o.zero_grad()
            logits = model(x) if model is not None else ref_fc(neck((x,))[0])
            torch.nn.functional.cross_entropy(logits, y).backward()
            o.step()
    torch.testing.assert_close(ours[1].weight, ref_fc.weight, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ours[1].bias, ref_fc.bias, rtol=1e-5, atol=1e-7)


_FT_RENAMES = [(r"^cls_token", "backbone.cls_token"), (r"^pos_embed", "backbone.pos_embed"),
               (r"^patch_embed\.proj\.", "backbone.patch_embed.projection."),
               (r"^blocks\.", "backbone.layers."), (r"\.norm1\.", ".ln1."),
               (r"\.norm2\.", ".ln2."), (r"\.mlp\.fc1\.", ".ffn.layers.0.0."),
               (r"\.mlp\.fc2\.", ".ffn.layers.1."), (r"^fc_norm\.", "backbone.ln2."),
               (r"^head\.", "head.fc.")]


def _ft_name(name: str) -> str:
    for pat, rep in _FT_RENAMES:
        name = re.sub(pat, rep, name)
    return name


def test_layer_decay_groups_and_adamw_step_equal_mmpretrains():
    """The fine-tune's parameter groups (layer-wise lr scale, weight decay) equal those of
    mmpretrain's LearningRateDecayOptimWrapperConstructor with its MAE fine-tune paramwise
    config, parameter by parameter; AdamW steps from the same batches give the same
    weights (and a second step, which reads the betas)."""
    mmpretrain()
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

    from pixmim.models.classifier import build_classifier as vit_for
    from pixmim.stages.finetune import build_optimizer

    torch.manual_seed(0)
    ours = vit_for("mae", "vit_cpu_patch8_64", num_classes=10, global_pool="avg")
    with DefaultScope.overwrite_default_scope("mmpretrain"):  # leaves the scope as found
        ref = MODELS.build(dict(
            type="ImageClassifier",
            backbone=dict(type="VisionTransformer", arch=ARCH, img_size=64, patch_size=8,
                          out_type="avg_featmap", final_norm=False, with_cls_token=True),
            head=dict(type="LinearClsHead", num_classes=10, in_channels=64)))
    ref_state = ref.state_dict()
    mapped = {_ft_name(k): v for k, v in ours.state_dict().items()}
    assert set(mapped) == set(ref_state), sorted(set(mapped) ^ set(ref_state))
    ref.load_state_dict(mapped)
    # a fine-tune job's train section (config.yaml `finetune`: betas 0.9, 0.999)
    cfg = _stage_cfg(base_lr=1e-3, batch_size=256, weight_decay=0.05, betas=(0.9, 0.999))
    opt = build_optimizer(ours, cfg)
    with DefaultScope.overwrite_default_scope("mmpretrain"):
        wrapper = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
            type="LearningRateDecayOptimWrapperConstructor",
            optim_wrapper_cfg=dict(type="OptimWrapper", optimizer=dict(
                type="AdamW", lr=opt.defaults["lr"], weight_decay=0.05, betas=(0.9, 0.999))),
            paramwise_cfg=dict(layer_decay_rate=0.75, custom_keys={
                ".ln": dict(decay_mult=0.0), ".bias": dict(decay_mult=0.0),
                ".cls_token": dict(decay_mult=0.0), ".pos_embed": dict(decay_mult=0.0)})))(ref)
    ours_groups = {}
    names = {id(p): n for n, p in ours.named_parameters()}
    for g in opt.param_groups:
        for p in g["params"]:
            ours_groups[_ft_name(names[id(p)])] = (round(g["lr_scale"], 9), g["weight_decay"])
    ref_groups = {g["param_name"]: (round(g["lr_scale"], 9), g["weight_decay"])
                  for g in wrapper.optimizer.param_groups}
    assert ours_groups == ref_groups
    # two steps from the same batches (the second one reads the betas; no scheduler:
    # lr = base x scale)
    for g in opt.param_groups:
        g["lr"] = opt.defaults["lr"] * g["lr_scale"]
    x, y = torch.randn(4, 3, 64, 64), torch.randint(0, 10, (4,))
    for _ in range(2):
        for model, o in ((ours, opt), (ref, wrapper.optimizer)):
            o.zero_grad()
            logits = model(x) if model is ours else ref(x, mode="tensor")
            torch.nn.functional.cross_entropy(logits, y).backward()
            o.step()
    after = {_ft_name(k): v for k, v in ours.state_dict().items()}
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(after[k], v, rtol=1e-5, atol=1e-6, msg=k)


# ---------------------------------------------------------------- crops
def _ks(a, b) -> float:
    from scipy.stats import ks_2samp

    return ks_2samp(a, b).pvalue


def _rrc_boxes_ours(scale, n, h=375, w=500):
    import numpy as np
    from PIL import Image
    from torchvision import transforms as T

    img = Image.new("RGB", (w, h))
    torch.manual_seed(0)
    boxes = [T.RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3]) for _ in range(n)]
    b = np.array(boxes, dtype=float)  # i, j, h, w
    return b[:, 2] * b[:, 3] / (h * w), np.log(b[:, 3] / b[:, 2])


def test_rrc_draws_boxes_from_mmpretrains_distribution():
    """MAE's crop (ours: torchvision's RandomResizedCrop at RRC_SCALE) against mmpretrain's
    RandomResizedCrop of its MAE pretraining config (crop_ratio_range (0.2, 1.0), aspect
    3/4-4/3): the area share and log aspect ratio of 3,000 boxes each on a 500 x 375 image,
    two-sample KS. A crop at torchvision's default scale (0.08, 1) must fail the same test."""
    import numpy as np

    mmpretrain()
    from mmpretrain.datasets.transforms import RandomResizedCrop

    from pixmim.data.transforms import RRC_SCALE, rrc

    ours_rrc = rrc(224).ops.transforms[0]
    assert tuple(ours_rrc.scale) == RRC_SCALE == (0.2, 1.0)
    ref = RandomResizedCrop(scale=224, crop_ratio_range=(0.2, 1.0),
                            aspect_ratio_range=(3 / 4, 4 / 3), interpolation="bicubic")
    np.random.seed(0)
    img = np.zeros((375, 500, 3), np.uint8)
    ref_boxes = np.array([ref.rand_crop_params.__wrapped__(ref, img) if hasattr(
        ref.rand_crop_params, "__wrapped__") else ref.rand_crop_params(img)
        for _ in range(3000)], dtype=float)  # offset_h, offset_w, h, w
    ref_area = ref_boxes[:, 2] * ref_boxes[:, 3] / (375 * 500)
    ref_aspect = np.log(ref_boxes[:, 3] / ref_boxes[:, 2])
    area, aspect = _rrc_boxes_ours(ours_rrc.scale, 3000)
    assert _ks(area, ref_area) > 1e-3 and _ks(aspect, ref_aspect) > 1e-3
    wrong_area, _ = _rrc_boxes_ours((0.08, 1.0), 3000)
    assert _ks(wrong_area, ref_area) < 1e-6


def test_src_draws_offsets_from_mmpretrains_distribution():
    """PixMIM's Simple Resized Crop (ours: shorter side to 224, reflect-pad 4, random 224
    crop) against mmpretrain's ResizeEdge + RandomCrop(padding=4, reflect) of the PixMIM
    config: the crop offsets of 3,000 draws, and the padded size, agree."""
    import numpy as np
    from PIL import Image

    mmpretrain()
    from mmpretrain.datasets.transforms import RandomCrop, ResizeEdge

    from pixmim.data.transforms import src

    ops = src(224).ops.transforms
    resized = ops[0](Image.new("RGB", (500, 375)))
    assert min(resized.size) == 224
    ours_crop = ops[1]
    padded = Image.new("RGB", (resized.size[0] + 8, resized.size[1] + 8))
    torch.manual_seed(0)
    ours = np.array([ours_crop.get_params(padded, (224, 224))[:2] for _ in range(3000)], float)
    edge = ResizeEdge(scale=224, edge="short", interpolation="bilinear")
    res = edge(dict(img=np.zeros((375, 500, 3), np.uint8)))
    assert res["img"].shape[:2] == (resized.size[1], resized.size[0])
    crop = RandomCrop(crop_size=224, padding=4, padding_mode="reflect")
    np.random.seed(0)
    padded_np = np.zeros((res["img"].shape[0] + 8, res["img"].shape[1] + 8, 3), np.uint8)
    ref = np.array([crop.rand_crop_params(padded_np)[:2] for _ in range(3000)], float)
    for k in range(2):
        assert ours[:, k].min() == ref[:, k].min() and ours[:, k].max() == ref[:, k].max()
        assert _ks(ours[:, k], ref[:, k]) > 1e-3
