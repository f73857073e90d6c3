"""Process-group helpers: the world-size check against the job's gpus x nodes; the probe's
BatchNorm and the probe's and fine-tune's validation counts over several processes (two
gloo processes against one on the whole batch)."""

import os

import pytest
import torch
import torch.multiprocessing as mp

from pixmim.config import TrainConfig
from pixmim.engine import distributed
from pixmim.engine.loop import make_loader
from pixmim.stages import finetune
from pixmim.stages.linear_probe import GlobalBatchNorm1d, accuracy


@pytest.mark.parametrize("gpus,nodes,world", [(2, 1, 3), (4, 2, 4), (1, 1, 2)])
def test_a_world_other_than_gpus_times_nodes_is_one_line_naming_the_keys(
        monkeypatch, gpus, nodes, world):
    monkeypatch.setenv("WORLD_SIZE", str(world))
    with pytest.raises(ValueError, match=rf"^linear_probe\.gpus x linear_probe\.nodes = "
                                         rf"{gpus} x {nodes} = {gpus * nodes} processes, but "
                                         rf"this job runs {world} \(WORLD_SIZE\)$"):
        distributed.setup("cpu", gpus, nodes, "linear_probe")


def test_gpus_zero_takes_whatever_torchrun_started(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.setup("cpu", 0, 1).world == 1
    assert distributed.setup("cpu", 1, 1).world == 1  # one process asked, one started


def _bn_rank(rank, world, init, x, grad_out, result):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        bn = GlobalBatchNorm1d(x.shape[1], affine=False, eps=1e-6)
        shard = x.chunk(world)[rank].clone().requires_grad_(True)
        for _ in range(3):  # running statistics over three steps
            y = bn(shard)
        y.backward(grad_out.chunk(world)[rank])
        result[rank] = {"y": y.detach(), "grad": shard.grad, "mean": bn.running_mean,
                        "var": bn.running_var, "steps": bn.num_batches_tracked}
    finally:
        torch.distributed.destroy_process_group()


def test_probe_batchnorm_over_two_processes_is_batchnorm_of_the_whole_batch(tmp_path):
    """Against torch.nn.BatchNorm1d on the whole batch (the single-process probe, MAE's
    head): the output, the gradient w.r.t. the input (the sums are all-reduced
    differentiably) and the running statistics (unbiased variance, momentum 0.1)."""
    torch.manual_seed(0)
    x, grad_out = torch.randn(12, 5) * 3 + 2, torch.randn(12, 5)
    ref = torch.nn.BatchNorm1d(5, affine=False, eps=1e-6)
    xr = x.clone().requires_grad_(True)
    for _ in range(3):
        yr = ref(xr)
    yr.backward(grad_out)
    result = mp.Manager().dict()
    mp.spawn(_bn_rank, args=(2, f"file://{tmp_path / 'store'}", x, grad_out, result),
             nprocs=2, join=True)
    torch.testing.assert_close(torch.cat([result[0]["y"], result[1]["y"]]), yr.detach(),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([result[0]["grad"], result[1]["grad"]]), xr.grad,
                               rtol=1e-4, atol=1e-5)
    for r in (0, 1):
        torch.testing.assert_close(result[r]["mean"], ref.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(result[r]["var"], ref.running_var, rtol=1e-5, atol=1e-6)
        assert int(result[r]["steps"]) == 3


def _validation_set():
    """31 samples of 8 classes whose scores are hits by construction: samples 0-9 top-1
    hits, 10-19 top-5 (second best) but not top-1, 20-30 neither (the label scores
    lowest)."""
    labels = torch.arange(31) % 8
    logits = torch.zeros(31, 8)
    for i, y in enumerate(labels.tolist()):
        if i < 10:
            logits[i, y] = 2.0
        else:
            logits[i, (y + 1) % 8] = 2.0
            logits[i, y] = 1.0 if i < 20 else -1.0
    return torch.utils.data.TensorDataset(logits, labels)


def _eval_rank(rank, world, init, result):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        info = distributed.DistInfo(rank, world)
        loader = make_loader(_validation_set(), TrainConfig(batch_size=4), train=False,
                             dist=info)
        identity = torch.nn.Identity()
        result[rank] = {"probe": accuracy(identity, identity, loader, info),
                        **finetune.evaluate(identity, loader, info)}
    finally:
        torch.distributed.destroy_process_group()


def test_validation_counts_every_image_once_over_uneven_shards(tmp_path):
    """31 images over 2 processes (16 and 15): 10 top-1 and 20 top-5 hits of 31 on every
    rank; a padded shard (as DistributedSampler pads) would count 32."""
    result = mp.Manager().dict()
    mp.spawn(_eval_rank, args=(2, f"file://{tmp_path / 'store'}", result), nprocs=2, join=True)
    for r in (0, 1):
        assert result[r]["probe"] == pytest.approx(100 * 10 / 31)
        assert result[r]["top1"] == pytest.approx(100 * 10 / 31)
        assert result[r]["top5"] == pytest.approx(100 * 20 / 31)
