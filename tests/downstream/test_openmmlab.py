"""The OpenMMLab side of the dense stages: the mmcv stand-in, registries, the layer-decay
optimizer constructor, generated configs, and (slow) short mmengine Runner runs with resume."""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchvision

from pixmim.downstream import common
from pixmim.methods import VIT_ARCHS as MAE_ARCHS

common.setup()  # before anything imports mmcv.ops

import mmcv.ops  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402
from mmengine.registry import PARAM_SCHEDULERS, DefaultScope  # noqa: E402

from pixmim.config import JobConfig, from_dict  # noqa: E402
from pixmim.data.generate.scenes import SceneConfig, generate  # noqa: E402
from pixmim.downstream import det, seg  # noqa: E402
from pixmim.families.convvit.nets import ConvViTPyramid  # noqa: E402
from pixmim.families.vit.nets import SegViT, SimpleFPN, ViTDet  # noqa: E402
from pixmim.models import create_model  # noqa: E402

ARCH = {"mae": "vit_cpu_patch8_64", "convmae": "convvit_cpu_64"}
D = MAE_ARCHS[ARCH["mae"]]["embed_dim"]  # the CPU ViT's width
EXT = sys.modules["mmcv._ext"]  # the stand-in, unless a compiled mmcv is installed
STANDIN = getattr(EXT, "PIXMIM_STANDIN", False)


@pytest.fixture(autouse=True)
def fresh_mmengine():
    """Each test starts from mmengine's fresh-process state, whatever Runner ran before
    it in this worker (common.run resets it too; this covers the tests that build
    mmengine objects without it)."""
    common.fresh_state()
    yield


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dense") / "scenes"
    generate(SceneConfig(seed=0, train=8, val=2), out)
    return out


def _checkpoint(path: Path, method: str) -> str:
    torch.manual_seed(0)
    model = create_model(method, ARCH[method])
    torch.save({"model": model.state_dict(), "meta": {"method": method, "arch": ARCH[method]}},
               path)
    return str(path)


def _job(method: str, **dense) -> JobConfig:
    return from_dict(JobConfig, {"experiment": f"{method}-base_test", "stage": "dense",
                                 "method": method, "arch": ARCH[method], "dense": dense})


# ------------------------------------------------------------------ mmcv stand-in


def test_nms_matches_torchvision():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 60
    boxes = torch.cat([xy, xy + 4 + torch.rand(200, 2, generator=g) * 30], dim=1)
    scores = torch.rand(200, generator=g)
    for thr in (0.3, 0.5, 0.7):
        dets, inds = mmcv.ops.nms(boxes, scores, thr)
        want = torchvision.ops.nms(boxes, scores, thr)
        assert 0 < len(want) < 200
        assert torch.equal(inds, want)
        torch.testing.assert_close(dets, torch.cat([boxes[want], scores[want, None]], dim=1))


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_forward_and_backward_match_torchvision(sampling_ratio):
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(2, 3, 20, 24, generator=g)
    xy = torch.rand(7, 2, generator=g) * 60
    rois = torch.cat([torch.tensor([0, 1, 0, 1, 1, 0, 1.0])[:, None], xy,
                      xy + 8 + torch.rand(7, 2, generator=g) * 30], dim=1)
    weights = torch.randn(7, 3, 5, 4, generator=g)
    outs, grads = [], []
    for fn in (lambda x: mmcv.ops.roi_align(x, rois, (5, 4), 0.25, sampling_ratio, "avg", True),
               lambda x: torchvision.ops.roi_align(x, rois, (5, 4), 0.25, sampling_ratio,
                                                   aligned=True)):
        x = feats.clone().requires_grad_(True)
        out = fn(x)
        (out * weights).sum().backward()
        outs.append(out.detach())
        grads.append(x.grad)
    assert outs[0].shape == (7, 3, 5, 4)
    assert outs[0].abs().sum() > 0 and grads[0].abs().sum() > 0
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.skipif(not STANDIN, reason="a compiled mmcv._ext is installed")
def test_unsupported_ops_raise_only_when_called():
    op = EXT.deform_conv_forward  # attribute access (what mmcv does at import) is fine
    with pytest.raises(NotImplementedError, match="deform_conv_forward"):
        op(torch.zeros(1))
    with pytest.raises(NotImplementedError, match="max pooling"):
        mmcv.ops.roi_align(torch.zeros(1, 1, 4, 4), torch.tensor([[0, 0, 0, 2, 2.0]]), 2,
                           1.0, 0, "max", True)
    with pytest.raises(AttributeError):
        EXT.__wrapped__  # noqa: B018 (dunders stay AttributeErrors)


# ---------------------------------------------------------------------- registries


def test_mmseg_registry_builds_our_backbones():
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    # another test in the process may have left mmdet as the default scope (the fixtures'
    # CocoDataset): build under mmseg's, as the segmentation stage's runner does
    with DefaultScope.overwrite_default_scope("mmseg"):
        vit = MODELS.build(dict(type="PixMIMSegViT", method="mae", arch=ARCH["mae"],
                                img_size=64))
    assert isinstance(vit, SegViT)
    with torch.no_grad():
        assert [tuple(o.shape) for o in vit.eval()(torch.randn(1, 3, 64, 64))] \
            == [(1, D, 8, 8)] * 4
    with DefaultScope.overwrite_default_scope("mmseg"):
        conv = MODELS.build(dict(type="PixMIMConvViT", method="convmae", arch=ARCH["convmae"]))
    assert isinstance(conv, ConvViTPyramid)


def test_mmdet_registry_builds_our_modules():
    from mmcv.cnn import build_norm_layer
    from mmdet.registry import MODELS

    vit = MODELS.build(dict(type="PixMIMViTDet", method="mae", arch=ARCH["mae"], img_size=96,
                            window_size=4))
    fpn = MODELS.build(dict(type="PixMIMSimpleFPN", in_channels=D, out_channels=16,
                            patch_size=8, num_outs=5))
    assert isinstance(vit, ViTDet) and isinstance(fpn, SimpleFPN)
    with torch.no_grad():
        outs = fpn(vit.eval()(torch.randn(1, 3, 96, 128)))
    assert [tuple(o.shape) for o in outs] == [(1, 16, math.ceil(96 / s), math.ceil(128 / s))
                                              for s in (4, 8, 16, 32, 64)]
    conv = MODELS.build(dict(type="PixMIMConvViT", method="convmae", arch=ARCH["convmae"]))
    assert isinstance(conv, ConvViTPyramid)

    ln = MODELS.build(dict(type="LN2d", num_channels=16))
    y = ln(torch.randn(2, 16, 5, 7) * 3 + 1)
    assert y.shape == (2, 16, 5, 7)
    torch.testing.assert_close(y.mean(1), torch.zeros(2, 5, 7), atol=1e-5, rtol=0)
    with DefaultScope.overwrite_default_scope("mmdet"):  # as the heads' norm_cfg builds it
        _, layer = build_norm_layer(dict(type="LN2d"), 16)
    assert type(layer) is type(ln)


# ------------------------------------------------------------ layer-wise lr decay


class _Net(nn.Module):
    def __init__(self, backbone: nn.Module, channels: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Conv2d(channels, 8, 1), nn.GroupNorm(2, 8))


def _groups_by_name(model: nn.Module, wrapper) -> dict[str, dict]:
    names = {id(p): n for n, p in model.named_parameters()}
    out: dict[str, dict] = {}
    for g in wrapper.optimizer.param_groups:
        for p in g["params"]:
            assert names[id(p)] not in out, "a parameter in two groups"
            out[names[id(p)]] = g
    return out


def _build_wrapper(model: nn.Module):
    common.register()
    return build_optim_wrapper(model, dict(
        type="OptimWrapper", constructor="PixMIMLayerDecay",
        optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.05),
        paramwise_cfg=dict(layer_decay_rate=0.5)))


def test_layer_decay_groups_for_segvit():
    model = _Net(SegViT("mae", ARCH["mae"], img_size=64), D)  # 4 blocks: num_layers 4
    model.backbone.blocks[3].norm2.bias.requires_grad_(False)
    wrapper = _build_wrapper(model)
    assert isinstance(wrapper.optimizer, torch.optim.AdamW)
    groups = _groups_by_name(model, wrapper)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(groups) == trainable  # every trainable parameter once, the frozen one nowhere

    def layer(name: str) -> int:
        parts = name.split(".")
        if parts[0] != "backbone":
            return 5
        if parts[1] in ("cls_token", "pos_embed", "patch_embed"):
            return 0
        return int(parts[2]) + 1 if parts[1] == "blocks" else 5

    no_decay_names = ("pos_embed", "cls_token", "relative_position_bias_table")
    for name, g in groups.items():
        p = dict(model.named_parameters())[name]
        assert g["lr"] == pytest.approx(1e-3 * 0.5 ** (4 + 1 - layer(name))), name
        no_decay = p.ndim == 1 or name.endswith(no_decay_names)
        assert g["weight_decay"] == (0.0 if no_decay else 0.05), name
    # Spot checks, spelled out.
    assert groups["head.0.weight"]["lr"] == pytest.approx(1e-3)
    assert groups["head.0.weight"]["weight_decay"] == 0.05
    assert groups["head.1.weight"]["weight_decay"] == 0.0
    assert groups["backbone.patch_embed.proj.weight"]["lr"] == pytest.approx(1e-3 / 32)
    assert groups["backbone.pos_embed"]["weight_decay"] == 0.0
    assert groups["backbone.cls_token"]["weight_decay"] == 0.0
    table = groups["backbone.blocks.0.attn.relative_position_bias_table"]
    assert table["lr"] == pytest.approx(1e-3 / 16) and table["weight_decay"] == 0.0
    assert groups["backbone.blocks.3.attn.qkv.weight"]["lr"] == pytest.approx(1e-3 / 2)


def test_layer_decay_groups_for_the_convvit_pyramid():
    model = _Net(ConvViTPyramid("convmae", ARCH["convmae"]), 96)  # num_layers 6
    groups = _groups_by_name(model, _build_wrapper(model))
    assert groups["backbone.patch_embed1.proj.weight"]["lr"] == pytest.approx(1e-3 * 0.5**7)
    assert groups["backbone.blocks3.1.attn.qkv.weight"]["lr"] == pytest.approx(1e-3 * 0.5)
    assert groups["backbone.out_norms.3.weight"]["lr"] == pytest.approx(1e-3)
    assert groups["backbone.pos_embed"]["weight_decay"] == 0.0
    assert groups["head.0.weight"]["lr"] == pytest.approx(1e-3)


# ----------------------------------------------------------------------- schedules


def _lrs(schedule: list[dict], iters: int, base: float = 2e-4) -> list[float]:
    """The lr of each iteration as mmengine's Runner steps the schedulers (after each iter)."""
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    schedulers = [PARAM_SCHEDULERS.build(dict(s, optimizer=opt)) for s in schedule]
    out = []
    for _ in range(iters):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        for s in schedulers:
            s.step()
    return out


@pytest.mark.parametrize("schedule", ["cosine", "poly", "step"])
@pytest.mark.parametrize("warmup", [0, 1, 2, 5])
def test_lr_schedule_warms_up_to_the_base_lr_then_decays(schedule, warmup):
    base, iters = 2e-4, 20
    lrs = _lrs(common.lr_schedule(schedule, iters, warmup), iters, base)
    assert max(lrs[:max(warmup, 1)]) == pytest.approx(base)  # full lr once warmed up
    assert max(lrs) == pytest.approx(base)
    if warmup >= 2:
        assert lrs[0] == pytest.approx(base * 1e-3)
    assert lrs[-1] < base


def test_lr_schedule_rejects_an_unknown_name():
    with pytest.raises(ValueError, match="unknown lr schedule 'linear'"):
        common.lr_schedule("linear", 10, 2)


# -------------------------------------------------------------- generated configs


def test_seg_config_inherits_mmseg_and_reads_the_scenes(scenes, tmp_path):
    ckpt = _checkpoint(tmp_path / "checkpoint.pth", "mae")
    root = str(scenes / "ade20k")
    path = seg.build_config(_job("mae", root=root, crop_size=64, head_channels=16),
                            tmp_path / "work", 3, ckpt)
    c = Config.fromfile(str(path))
    assert c.default_scope == "mmseg"  # from mmseg's default_runtime.py
    assert c.custom_imports.imports == ["pixmim.downstream.seg"]
    assert c.model.type == "EncoderDecoder" and c.model.decode_head.type == "UPerHead"
    # _delete_ replaced the base backbone: nothing of mmseg's MAE backbone is left.
    assert c.model.backbone.to_dict() == dict(
        type="PixMIMSegViT", method="mae", arch=ARCH["mae"], img_size=64, drop_path_rate=0.1,
        use_rel_pos_bias=True, pretrained=ckpt)
    assert c.model.neck.type == "Feature2Pyramid"
    assert c.model.neck.rescales == [2.0, 1.0, 0.5, 0.25]  # patch 8 -> strides 4..32
    assert c.model.decode_head.num_classes == c.model.auxiliary_head.num_classes == 16
    assert c.model.decode_head.in_channels == [D] * 4
    for split in ("train", "val", "test"):
        ds = c[f"{split}_dataloader"].dataset
        assert ds.type == "PixMIMScenes" and ds.data_root == root
        # serialised for dataloader workers to share (the dense section's default: 2)
        assert c[f"{split}_dataloader"].num_workers == 2 and ds.serialize_data is True
    # without workers it stays a list (mmengine's serialisation costs a full collection)
    path = seg.build_config(_job("mae", root=root, num_workers=0), tmp_path / "w0", 3, ckpt)
    c0 = Config.fromfile(str(path))
    assert all(c0[f"{s}_dataloader"].dataset.serialize_data is False
               for s in ("train", "val", "test"))
    assert c.optim_wrapper.constructor == "PixMIMLayerDecay"
    assert c.randomness.seed == 3 and c.work_dir == str(tmp_path / "work")


def no_yapf(monkeypatch):
    """Make mmengine's yapf formatting of a config fail (it costs ~2 s a call)."""
    import mmengine.config.config as mm_config

    def fail(*args, **kwargs):
        raise AssertionError("mmengine formatted a config with yapf")

    monkeypatch.setattr(mm_config, "FormatCode", fail)


@pytest.mark.parametrize("task, root, size", [(seg, "ade20k", 64), (det, "coco", 96)])
def test_load_config_reads_the_whole_config_and_never_formats_it(scenes, tmp_path,
                                                                 monkeypatch, task, root, size):
    path = task.build_config(_job("mae", root=str(scenes / root), crop_size=size),
                             tmp_path / "work", 0, None)
    full = Config.fromfile(str(path)).to_dict()  # with its _base_ configs merged
    no_yapf(monkeypatch)
    import mmengine.config.utils as mm_utils

    def fail(*args, **kwargs):
        raise AssertionError("mmengine read the package's metafiles for a _base_ config")

    monkeypatch.setattr(mm_utils, "_get_cfg_metainfo", fail)
    c = common.load_config(path)
    assert c.to_dict() == full and c.filename == str(path)
    # what the Runner does with it: a deep copy, dumped into every checkpoint and log
    text = copy.deepcopy(c).pretty_text
    assert Config.fromstring(text, ".py").to_dict() == full


def test_det_config_inherits_mmdet_and_reads_the_classes(scenes, tmp_path):
    root = scenes / "coco"
    path = det.build_config(_job("mae", root=str(root), crop_size=96, window_size=4,
                                 head_channels=16), tmp_path / "work", 0, None)
    c = Config.fromfile(str(path))
    assert c.default_scope == "mmdet"
    assert c.custom_imports.imports == ["pixmim.downstream.det"]
    assert c.model.type == "MaskRCNN" and c.model.roi_head.type == "StandardRoIHead"
    assert c.model.backbone.type == "PixMIMViTDet" and c.model.backbone.window_size == 4
    assert c.model.neck.type == "PixMIMSimpleFPN" and c.model.neck.patch_size == 8
    cats = json.loads((root / "annotations" / "instances_val2017.json").read_text())["categories"]
    names = tuple(x["name"] for x in sorted(cats, key=lambda x: x["id"]))
    assert len(names) == 16
    for split in ("train", "val", "test"):
        ds = c[f"{split}_dataloader"].dataset
        assert ds.type == "CocoDataset" and tuple(ds.metainfo.classes) == names
    assert c.model.roi_head.bbox_head.num_classes == c.model.roi_head.mask_head.num_classes == 16
    assert Path(c.val_evaluator.ann_file).is_file()


@pytest.mark.parametrize("task, method, size", [(seg, "mae", 64), (seg, "convmae", 64),
                                                (det, "mae", 96), (det, "convmae", 96)])
def test_the_config_builds_a_model(scenes, tmp_path, task, method, size):
    """The written config's model builds in the toolbox's registry and runs its backbone+neck."""
    root = scenes / ("ade20k" if task is seg else "coco")
    dense = dict(root=str(root), crop_size=size, head_channels=16, window_size=4)
    c = Config.fromfile(str(task.build_config(_job(method, **dense), tmp_path, 0, None)))
    scope = "mmseg" if task is seg else "mmdet"
    registry = sys.modules[f"{scope}.registry"].MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(c.model).eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, size, size))
    if task is seg:  # UperNet's inputs: four levels at strides 4..32
        assert [tuple(f.shape[2:]) for f in feats] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    else:  # five FPN levels of head_channels
        assert [tuple(f.shape) for f in feats] == [(1, 16, math.ceil(96 / s), math.ceil(96 / s))
                                                   for s in (4, 8, 16, 32, 64)]


def test_seg_reads_a_real_ade20k_layout(tmp_path):
    (tmp_path / "images" / "training").mkdir(parents=True)
    assert seg.dataset_type(str(tmp_path)) == ("ADE20KDataset", 150)


@pytest.mark.parametrize("task", [seg, det])
def test_a_missing_root_names_dense_root(tmp_path, task):
    cfg = _job("mae", root=str(tmp_path / "missing"), crop_size=64)
    with pytest.raises(FileNotFoundError, match="dense.root"):
        task.build_config(cfg, tmp_path / "work", 0, None)
    with pytest.raises(ValueError, match="dense.root"):
        task.build_config(_job("mae", crop_size=64), tmp_path / "work", 0, None)


# ------------------------------------------------------- Runner (train/val/test + resume)


def _run_twice(task, cfg: JobConfig, work: Path, ckpt: str) -> tuple[dict, dict]:
    # An earlier Runner of this process (a job's previous seed) left its visualizer, named
    # as every config names it: this run's scalars still go to this run's log folder.
    from mmdet.visualization import DetLocalVisualizer
    from mmseg.visualization import SegLocalVisualizer

    for stale in (SegLocalVisualizer, DetLocalVisualizer):
        stale.get_instance("visualizer", vis_backends=[dict(type="LocalVisBackend")],
                           save_dir=str(work.parent / "earlier_seed"))
    first = task.run_seed(cfg, work, 0, ckpt)
    assert (work / "iter_4.pth").is_file()
    assert Path((work / "last_checkpoint").read_text().strip()).name == "iter_4.pth"
    curve = common.training_curve(first["log_dir"])
    assert [row["iter"] for row in curve] == [1, 2, 3, 4]
    assert all(math.isfinite(row["loss"]) for row in curve)
    # Again on the same work dir: resumes from iter_4.pth, trains nothing, tests the same model.
    second = task.run_seed(cfg, work, 0, ckpt)
    assert second["log_dir"] != first["log_dir"]
    assert common.training_curve(second["log_dir"]) == []
    assert second["metrics"] == first["metrics"]
    return first, second


@pytest.mark.slow
def test_seg_runner_trains_tests_and_resumes(scenes, tmp_path, monkeypatch):
    no_yapf(monkeypatch)  # the Runner's config is load_config's
    cfg = _job("mae", root=str(scenes / "ade20k"), iters=4, val_interval=2, batch_size=2,
               crop_size=64, scale=[192, 64], head_channels=16, num_workers=0,
               warmup_iters=1, runs=1)
    first, _ = _run_twice(seg, cfg, tmp_path / "work",
                          _checkpoint(tmp_path / "checkpoint.pth", "mae"))
    assert {"mIoU", "aAcc"} <= set(first["metrics"])
    assert all(0.0 <= first["metrics"][k] <= 100.0 for k in ("mIoU", "aAcc"))
    assert Path(first["config"]) == tmp_path / "work" / "config.py"


@pytest.mark.slow
def test_det_runner_trains_tests_and_resumes(scenes, tmp_path):
    cfg = _job("mae", root=str(scenes / "coco"), iters=4, val_interval=2, batch_size=2,
               crop_size=96, window_size=4, head_channels=16, num_workers=0, warmup_iters=1,
               runs=1)
    first, _ = _run_twice(det, cfg, tmp_path / "work",
                          _checkpoint(tmp_path / "checkpoint.pth", "mae"))
    assert {"coco/bbox_mAP", "coco/segm_mAP"} <= set(first["metrics"])
    assert all(math.isfinite(v) for v in first["metrics"].values())
