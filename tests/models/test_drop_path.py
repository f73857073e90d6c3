"""Stochastic depth from the samples' seeds: a sample's drop decisions do not depend on
the batch it shares, and the law is stochastic depth's (keep 1 - p, kept paths scaled by
1 / (1 - p): Huang et al. 2016, timm's drop_path with scale_by_keep)."""

import pytest
import torch
from timm.layers import DropPath

from pixmim.data.datasets import sample_seed
from pixmim.models.classifier import build_classifier
from pixmim.models.drop_path import SampleDropPath, seed_drop_path


@pytest.mark.parametrize("method,arch", [("mae", "vit_cpu_patch8_64"),
                                         ("convmae", "convvit_cpu_64")])
def test_a_sample_drops_the_same_paths_in_any_batch(method, arch):
    torch.manual_seed(0)
    model = build_classifier(method, arch, 10, drop_path_rate=0.5, img_size=64).train()
    draws = seed_drop_path(model)
    assert not any(isinstance(m, DropPath) for m in model.modules())
    assert any(isinstance(m, SampleDropPath) for m in model.modules())
    x = torch.randn(4, 3, 64, 64)
    seeds = [sample_seed(1, 0, i) for i in range(4)]

    def forward(idx):
        draws.fill([seeds[i] for i in idx], torch.device("cpu"))
        torch.manual_seed(len(idx))  # the process RNG plays no part
        return model(x[idx])

    whole = forward([0, 1, 2, 3])
    halves = torch.cat([forward([0, 2]), forward([1, 3])])[[0, 2, 1, 3]]
    torch.testing.assert_close(halves, whole, rtol=1e-5, atol=1e-6)
    # and the drops are real: another epoch's seeds drop other paths
    draws.fill([sample_seed(1, 1, i) for i in range(4)], torch.device("cpu"))
    assert not torch.allclose(model(x), whole, atol=1e-3)
    model.eval()  # evaluation: no drop, no draws needed
    assert model(x).shape == (4, 10)


def test_drop_law_is_stochastic_depth():
    draws_owner = torch.nn.Sequential(DropPath(0.3))
    draws = seed_drop_path(draws_owner)
    n = 20000
    draws.fill(range(n), torch.device("cpu"))
    out = draws_owner.train()(torch.ones(n, 2))
    kept = out[:, 0] != 0
    assert kept.float().mean().item() == pytest.approx(0.7, abs=0.015)  # 4.6 sigma at n
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.7))


def test_a_forward_without_the_batch_seeds_is_an_error():
    model = torch.nn.Sequential(DropPath(0.1)).train()
    draws = seed_drop_path(model)
    with pytest.raises(RuntimeError, match="sample seeds"):
        model(torch.ones(2, 3))
    draws.fill([1, 2, 3], torch.device("cpu"))
    with pytest.raises(RuntimeError, match="sample seeds"):  # seeds of another batch
        model(torch.ones(2, 3))
