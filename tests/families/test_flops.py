"""The budget's FLOPs (each family's count from its structure, torch-free) against
``torch.utils.flop_counter`` on the real modules, for every registered arch.

The counter's CPU attention kernel (fused SDPA) counts nothing, so the modules run the
explicit softmax(QK^T)V path here. Its convolution backward formula ignores groups and
strides (torch ``flop_counter.conv_backward_flop``: "details involving ... groups ... I
skip"), so a convolutional family is compared on forward passes and its backward is the
matmul rule (two forwards), which the plain-ViT comparison checks with the counter.
"""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pixmim import families, registry
from pixmim.models import create_model
from pixmim.models.classifier import build_classifier

ARCHS = [(m, a) for m, spec in registry.methods().items() for a in spec.archs]
TOLERANCE = 0.05  # the bound: within 5% of the counter


def _unfused(model: torch.nn.Module) -> torch.nn.Module:
    for mod in model.modules():
        if hasattr(mod, "fused_attn"):
            mod.fused_attn = False
    return model


def _count(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _is_conv(method: str) -> bool:
    """Whether the family's encoder has (non-patchify) convolutions: any conv with groups
    or a kernel unlike its stride."""
    with torch.device("meta"):
        model = build_classifier(method, next(iter(registry.method(method).archs)), 10)
    return any(isinstance(m, torch.nn.Conv2d) and (m.groups > 1 or m.kernel_size != m.stride)
               for m in model.modules())


@pytest.mark.parametrize(("method", "arch"), ARCHS, ids=[f"{m}-{a}" for m, a in ARCHS])
def test_family_flops_equal_the_counters_on_the_real_modules(method, arch):
    kw = registry.method(method).archs[arch]
    size = kw.get("img_size", 224)
    torch.set_default_device("meta")  # shapes are all the counter reads: no arithmetic
    try:
        _check(method, arch, size)
    finally:
        torch.set_default_device(None)


def _check(method: str, arch: str, size: int) -> None:
    imgs = torch.randn(1, 3, size, size)
    model = _unfused(create_model(method, arch))  # mask ratio 0.75 (MAE Sec. 4)
    assert model.mask_ratio == 0.75
    ours_fwd = families.declaration(families.of(method)).pretrain_flops(
        families.arch(method, arch), 0.75, backward=False)
    assert ours_fwd == pytest.approx(_count(lambda: model(imgs)), rel=TOLERANCE)
    if not _is_conv(method):
        assert families.pretrain_flops(method, arch, 0.75) == pytest.approx(
            _count(lambda: model(imgs)[0].backward()), rel=TOLERANCE)
    for px in sorted({size, 224}):  # its own size and the evaluation size (LSMAE: 448, 224)
        clf = _unfused(build_classifier(method, arch, num_classes=1000, img_size=px)).eval()
        x = torch.randn(1, 3, px, px)
        with torch.no_grad():
            counted = _count(lambda clf=clf, x=x: clf(x))
        assert families.forward_flops(method, arch, px, 1000) == pytest.approx(
            counted, rel=TOLERANCE), px
