"""The dense stages data-parallel: per-process batch, accumulation and lr from the effective
batch (fast, configs only), SyncBN over gloo, and (slow) the equivalence of 2 processes x
half the batch with 1 process x the whole batch, and of 2 accumulated micro-batches with one
batch, on the weights after a few optimizer steps (CPU, gloo; ``tests/downstream/dp_seg.py``
says what the driver pins for exactness and why)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from pixmim.downstream import common

common.setup()

from mmengine.config import Config  # noqa: E402

from pixmim.config import ConfigError, DenseConfig, check_world, from_dict  # noqa: E402
from pixmim.downstream import seg  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.downstream.dp_seg import job  # noqa: E402


def _dense(**keys) -> DenseConfig:
    return from_dict(DenseConfig, keys)


# ------------------------------------------------------------------ fast: configs


def test_per_process_batch_is_the_effective_batch_over_processes_and_accumulation():
    # mmseg's MAE UperNet configs: batch 16 as 8 GPUs x 2 (upernet_mae-base_fp16_8xb2-...)
    assert common.per_process_batch(_dense(batch_size=16), 8) == 2
    # ViTDet's COCO Mask R-CNN: batch 64 as 64 GPUs x 1 (ViTDet Sec. 4 / its configs)
    assert common.per_process_batch(_dense(batch_size=64), 64) == 1
    # MAE's one-node fine-tune recipe spelled for dense: 8 processes x accumulation 4 x 2
    assert common.per_process_batch(_dense(batch_size=64, accum_steps=4), 8) == 2
    assert common.per_process_batch(_dense(batch_size=16), 1) == 16
    with pytest.raises(ValueError, match=r"^dense.batch_size 16 does not divide into 3 "
                                         r"process\(es\) \(WORLD_SIZE\) x dense.accum_steps 1$"):
        common.per_process_batch(_dense(batch_size=16), 3)
    with pytest.raises(ValueError, match="dense.accum_steps 4"):
        common.per_process_batch(_dense(batch_size=16, accum_steps=4), 8)


def test_world_must_be_gpus_times_nodes():
    check_world(4, 0, 1, "detection")  # 0: as many processes as torchrun started
    check_world(16, 8, 2, "detection")
    with pytest.raises(ConfigError, match=r"^detection.gpus x detection.nodes = 8 x 2 = 16 "
                                          r"processes, but this job runs 8 \(WORLD_SIZE\)$"):
        check_world(8, 8, 2, "detection")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    """The embedded scenes, with every pixel labelled ("other" a class)."""
    from pixmim.data.generate.scenes import SceneConfig, generate

    out = tmp_path_factory.mktemp("dp") / "scenes"
    generate(SceneConfig(seed=0, train=8, val=2), out)
    root = out / "ade20k"
    meta = json.loads((root / "classes.json").read_text())
    meta = {"classes": ["other", *meta["classes"]], "palette": [[0, 0, 0], *meta["palette"]],
            "reduce_zero_label": False}
    (root / "classes.json").write_text(json.dumps(meta))
    return root


def test_seg_config_under_torchrun_reads_its_share_at_the_effective_lr(scenes, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    cfg = job(str(scenes), batch=16, accum=1, iters=10)
    c = Config.fromfile(str(seg.build_config(cfg, tmp_path, 0, None)))
    assert c.train_dataloader.batch_size == 2  # 16 over 8 processes
    assert c.val_dataloader.batch_size == c.test_dataloader.batch_size == 1
    assert c.train_dataloader.sampler.type == "InfiniteSampler"  # deals out by rank
    assert c.optim_wrapper.optimizer.lr == cfg.dense.lr  # for the effective batch, unscaled
    assert c.auto_scale_lr == dict(enable=False, base_batch_size=16)
    assert c.optim_wrapper.accumulative_counts == 1
    assert c.train_cfg.max_iters == 10 and "param_scheduler" not in c.default_hooks
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match="dense.batch_size 16 does not divide into 3"):
        seg.build_config(cfg, tmp_path, 0, None)


def test_accumulation_counts_micro_batches_and_steps_the_schedule_per_update(scenes, tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = job(str(scenes), batch=8, accum=2, iters=10)  # val_interval = iters
    c = Config.fromfile(str(seg.build_config(cfg, tmp_path, 0, None)))
    assert c.train_dataloader.batch_size == 2  # 8 over 2 processes x 2 micro-batches
    assert c.optim_wrapper.accumulative_counts == 2
    # mmengine's iterations are micro-batches: 10 optimizer steps are 20 of them
    assert c.train_cfg.max_iters == 20 and c.train_cfg.val_interval == 20
    assert c.default_hooks.checkpoint.interval == 20
    # the lr schedule counts optimizer steps, and steps once per update
    assert c.param_scheduler[-1].end == 10
    assert c.default_hooks.param_scheduler.type == "PixMIMStepScheduler"
    assert c.optim_wrapper.optimizer.lr == cfg.dense.lr


def test_gloo_sync_batchnorm_replaces_torch_syncbn_and_is_batchnorm_in_one_process():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.SyncBatchNorm(4))
    model[1].weight.data.uniform_(0.5, 1.5)
    weight = model[1].weight
    common.gloo_sync_batchnorm(model)
    assert isinstance(model[1], common.GlooSyncBatchNorm) and model[1].weight is weight
    ref = nn.BatchNorm2d(4)
    ref.load_state_dict(model[1].state_dict())
    x = torch.randn(6, 4, 5, 5)
    torch.testing.assert_close(model[1](x), ref(x))  # no process group: BatchNorm
    torch.testing.assert_close(model[1].running_var, ref.running_var)


# ------------------------------------------------- slow: processes under torchrun

ITERS = 3
# The Feature2Pyramid ConvTranspose biases that feed a BatchNorm: their exact gradient is 0
# (the BN removes any constant), so AdamW's first steps turn the rounding noise of that zero
# into steps of up to the lr; they are compared at atol = lr, everything else at float
# tolerance.
ZERO_GRAD = ("neck.upsample_4x.0.bias", "neck.upsample_2x.0.bias")
LR = 1e-3  # dp_seg.job's


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> str:
    from pixmim.models import create_model

    path = tmp_path_factory.mktemp("dp_ckpt") / "checkpoint.pth"
    torch.manual_seed(0)
    torch.save({"model": create_model("mae", "vit_cpu_patch8_64").state_dict(),
                "meta": {"method": "mae", "arch": "vit_cpu_patch8_64"}}, path)
    return str(path)


def launch(module: str, procs: int, *args: str) -> str:
    """``python -m module args`` (``procs`` > 1: under torchrun); its output."""
    start = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
              "--nproc_per_node", str(procs)] if procs > 1 else [sys.executable])
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    res = subprocess.run([*start, "-m", module, *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, env={**env, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    return res.stdout + res.stderr


def train(scenes: Path, ckpt: str, work: Path, procs: int, **args) -> dict[str, torch.Tensor]:
    """Run the driver (``procs`` > 1: under torchrun); the weights after ITERS steps."""
    out = launch("tests.downstream.dp_seg", procs, "--root", str(scenes), "--work", str(work),
                 "--ckpt", ckpt, "--iters", str(ITERS), *[f"--{k}={v}" for k, v in args.items()])
    if procs > 1:
        assert "SyncBN layers synchronise their statistics over gloo" in out
    last = Path((work / "last_checkpoint").read_text().strip())
    state = torch.load(last, map_location="cpu", weights_only=False)
    accum = int(args.get("accum", 1))
    assert state["meta"]["iter"] == ITERS * accum
    return state["state_dict"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        atol = LR if k in ZERO_GRAD else 1e-5
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=atol, msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.slow
def test_two_processes_with_half_the_batch_train_the_weights_of_one(scenes, pretrained,
                                                                    tmp_path):
    one = train(scenes, pretrained, tmp_path / "one", 1, batch=4)
    two = train(scenes, pretrained, tmp_path / "two", 2, batch=4)  # 2 per process
    moved = max((one[k] - two[k]).abs().max().item() for k in one)
    assert_same_weights(one, two)
    print(f"\nmax |1 process - 2 processes| after {ITERS} steps: {moved:.3g}")


@pytest.mark.slow
def test_two_accumulated_micro_batches_train_the_weights_of_one_batch(scenes, pretrained,
                                                                      tmp_path):
    # GroupNorm in the heads: BatchNorm over two micro-batches of 2 is not BatchNorm over 4
    one = train(scenes, pretrained, tmp_path / "one", 1, batch=4, norm="gn")
    acc = train(scenes, pretrained, tmp_path / "acc", 1, batch=4, accum=2, norm="gn")
    assert_same_weights(one, acc)


@pytest.mark.slow
def test_detection_trains_and_tests_with_two_processes(scenes, pretrained, tmp_path):
    """Mask R-CNN (no BatchNorm; its RPN / RoI samplers draw per process, so no weight
    equivalence here): one image per process, the COCO evaluation gathered over both ranks
    (each rank gets the same metrics), the checkpoint written once."""
    work = tmp_path / "det"
    launch("tests.downstream.dp_det", 2, "--root", str(scenes.parent / "coco"), "--work",
           str(work), "--ckpt", pretrained)
    c = Config.fromfile(str(work / "config.py"))
    assert c.train_dataloader.batch_size == 1  # batch 2 over 2 processes
    ranks = [json.loads((work / f"metrics_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] and "coco/bbox_mAP" in ranks[0]
    assert sorted(p.name for p in work.glob("*.pth")) == ["iter_2.pth"]


def test_preemption_under_accumulation_waits_for_the_end_of_the_optimizer_step(tmp_path):
    """The accumulated gradients are not in mmengine's checkpoint: a stop lands on an
    optimizer step's last micro-batch (here: iterations 2 and 4 of accumulation 2)."""
    from pixmim.engine.loop import Preempted

    class FakeRunner:
        work_dir = str(tmp_path)
        iter = 0

        def save_checkpoint(self, out_dir, filename, by_epoch=False):
            (Path(out_dir) / filename).write_bytes(b"state")

    hook = common.preempt_hook(lambda: "SIGTERM", "seed0", accum=2)
    runner = FakeRunner()
    hook.after_train_iter(runner, 0)  # first micro-batch of the step: goes on
    runner.iter = 1
    with pytest.raises(Preempted, match="SIGTERM at iteration 2 of seed0"):
        hook.after_train_iter(runner, 1)
    assert (tmp_path / "preempt_iter_2.pth").read_bytes() == b"state"
