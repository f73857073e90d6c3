"""mCE, the ImageNet-A/R class slices and the folder -> target mapping."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from pixmim.data.imagenet_meta import imagenet_info_dir, imagenet_wnids
from pixmim.evaluation import metrics as M
from tests.conftest import ROOT


def alexnet_like(scale=1.0):
    """Errors whose per-corruption mean is ``scale`` x AlexNet's (severities spread out)."""
    spread = np.array([-0.04, -0.02, 0.0, 0.02, 0.04])
    return {c: list(scale * e + scale * e * spread) for c, e in M.ALEXNET_ERRORS.items()}


def test_alexnet_errors_are_the_published_fifteen():
    # Hendrycks & Dietterich 2019 (their reference code's AlexNet errors)
    published = (
        "gaussian_noise .886428 shot_noise .894468 impulse_noise .922640 defocus_blur .819880 "
        "glass_blur .826268 motion_blur .785948 zoom_blur .798360 snow .866816 frost .826572 "
        "fog .819324 brightness .564592 contrast .853204 elastic_transform .646056 "
        "pixelate .717840 jpeg_compression .606500").split()
    names, values = published[::2], [float(v) for v in published[1::2]]
    assert M.ALEXNET_ERRORS == dict(zip(names, values, strict=True))
    assert M.CORRUPTIONS == tuple(names)


def test_mce_is_100_for_alexnet_and_scales_linearly():
    flat = {c: [e] * 5 for c, e in M.ALEXNET_ERRORS.items()}
    assert M.mce(flat) == pytest.approx(100.0, abs=1e-9)
    assert M.mce(alexnet_like()) == pytest.approx(100.0, abs=1e-9)
    assert M.mce(alexnet_like(0.5)) == pytest.approx(50.0, abs=1e-9)
    assert M.mce(alexnet_like(0.25)) == pytest.approx(25.0, abs=1e-9)


def test_mce_by_hand_and_the_unnormalized_mean_differs():
    errors = {c: [0.3] * 5 for c in M.CORRUPTIONS}
    errors["fog"] = [0.1, 0.2, 0.3, 0.4, 0.5]  # mean 0.3 too
    expected = 100 * np.mean([0.3 / e for e in M.ALEXNET_ERRORS.values()])
    assert M.mce(errors) == pytest.approx(expected)
    assert M.unnormalized_ce(errors) == pytest.approx(30.0)
    assert M.normalized_ce(errors)["fog"] == pytest.approx(100 * 0.3 / 0.819324)
    # extra corruptions (the 4 "extra" ImageNet-C ones) do not enter the mCE
    assert M.mce({**errors, "speckle_noise": [1.0] * 5}) == pytest.approx(expected)


def test_mce_names_the_missing_corruption():
    errors = alexnet_like()
    del errors["frost"], errors["pixelate"]
    with pytest.raises(ValueError, match=r"frost.*pixelate"):
        M.mce(errors)


@pytest.mark.parametrize("values", [[0.5] * 4, [0.5] * 6])
def test_mce_rejects_a_wrong_severity_count(values):
    errors = alexnet_like()
    errors["snow"] = values
    with pytest.raises(ValueError, match=r"'snow'.*5 severities"):
        M.mce(errors)


def test_mce_rejects_percentages():
    errors = alexnet_like()
    errors["contrast"] = [50.0] * 5
    with pytest.raises(ValueError, match=r"'contrast'.*\[0, 1\]"):
        M.mce(errors)


@pytest.mark.parametrize("name", ["imagenet_a", "imagenet_r"])
def test_subset_indices_are_timms_200(name):
    idx = M.subset_indices(name)
    short = name.removeprefix("imagenet_")
    from_file = [int(x) for x in (imagenet_info_dir() / f"imagenet_{short}_indices.txt")
                 .read_text().split()]
    assert idx == from_file and len(idx) == 200 and idx == sorted(set(idx))
    assert M.subset_wnids(name) == [imagenet_wnids()[i] for i in idx]
    idx.append(-1)  # the caller's copy: the cached list is unchanged
    assert len(M.subset_indices(name)) == 200


def test_unknown_subset():
    with pytest.raises(ValueError, match="imagenet_x"):
        M.subset_indices("imagenet_x")


def test_slicing_ignores_a_larger_logit_outside_the_subset():
    idx = M.subset_indices("imagenet_a")
    outside = next(i for i in range(1000) if i not in set(idx))
    logits = np.zeros((3, 1000), dtype=np.float32)
    logits[:, outside] = 100.0  # wins the 1000-way argmax
    logits[0, idx[7]] = 5.0
    logits[1, idx[199]] = 5.0
    logits[2, idx[3]] = 5.0
    targets = np.array([7, 199, 4])  # positions in the subset; the last one is wrong
    assert M.top1_sliced(logits, targets, idx) == pytest.approx(200 / 3)
    assert M.top1_hits(logits, np.array([outside] * 3)) == 3  # unsliced: the outsider wins
    t = torch.from_numpy(logits)
    assert M.top1_sliced(t, torch.from_numpy(targets), idx) == pytest.approx(200 / 3)


def test_top1_checks_shapes():
    with pytest.raises(ValueError, match="targets"):
        M.top1_hits(np.zeros((2, 1000)), np.zeros(3))


def test_folder_targets_are_positions_and_strangers_are_named():
    wnids = M.subset_wnids("imagenet_r")
    assert M.folder_targets([wnids[5], wnids[0]], wnids, "eval.imagenet_r") == [5, 0]
    stranger = next(w for w in imagenet_wnids() if w not in set(wnids))
    with pytest.raises(ValueError, match=rf"eval.imagenet_r.*{stranger}"):
        M.folder_targets([wnids[0], stranger], wnids, "eval.imagenet_r")


def test_evaluation_modules_import_no_torch():
    code = ("import sys, pixmim.evaluation.metrics, pixmim.evaluation.shape_bias; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_topk_hits_are_counts_of_targets_among_the_k_best():
    """timm's accuracy gives percentages of a batch; the counts sum over batches and ranks."""
    logits = torch.tensor([[0.1, 0.5, 0.2, 0.9, 0.0, 0.3],   # ranking 3 1 5 2 0 4
                           [0.8, 0.1, 0.7, 0.2, 0.3, 0.4],   # ranking 0 2 5 4 3 1
                           [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]])  # ranking 5 4 3 2 1 0
    targets = torch.tensor([3, 4, 0])  # ranks 1, 4 and 6
    assert M.topk_hits(logits, targets, (1, 3, 4, 5, 10)) == [1, 1, 2, 2, 3]
    assert M.top1_hits(logits[1:], targets[1:]) == 0
    assert M.topk_hits(logits[:0], targets[:0], (1, 5)) == [0, 0]
    n = 997  # a batch size whose percentages are not exact in binary
    big = torch.randn(n, 10, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(1))
    assert M.topk_hits(big, y, (1, 5)) == [int((big.argmax(1) == y).sum()),
                                           int((big.topk(5, 1).indices == y[:, None]).sum())]
