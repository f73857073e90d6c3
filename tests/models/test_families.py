"""Behaviour is chosen by a method's declared encoder family, never by its name.

The registry is patched so that a method with a new name declares family ``convvit``, the
name ``convmae`` declares family ``vit``, and another declares a family nothing handles:
the classifier, the loader and the dense backbones follow the declarations.
"""

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from pixmim import registry
from pixmim.downstream.backbones import ConvViTPyramid, SegViT, pyramid_channels
from pixmim.models import archs, create_model, family
from pixmim.models.classifier import build_classifier
from pixmim.models.convmae import ConvViT
from pixmim.models.export import load_pretrained, vit_for

CONV = dict(archs("convmae")["convvit_cpu_64"])
VIT = dict(archs("mae")["vit_cpu_patch8_64"])


@pytest.fixture
def declared(monkeypatch):
    """Registry with extra/overridden declarations (names deliberately misleading)."""
    table = dict(registry.methods())
    table["hybrid"] = registry.MethodSpec(  # a new name, ConvMAE's family and class
        name="hybrid", module="pixmim.models.convmae", model="ConvMAE", family="convvit",
        archs={"tiny": CONV})
    table["convmae"] = registry.MethodSpec(  # the old name, now a plain ViT
        name="convmae", module="pixmim.models.mae", model="MAE", family="vit",
        archs={"tiny": VIT})
    table["odd"] = registry.MethodSpec(
        name="odd", module="pixmim.models.mae", model="MAE", family="nosuch",
        archs={"tiny": VIT})
    monkeypatch.setattr(registry, "methods", lambda plugins=None: table)
    return table


def _perturbed(method: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(method, "tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_a_convvit_family_method_of_any_name_builds_and_loads_a_convvit(declared):
    assert family("hybrid") == "convvit"
    model = build_classifier("hybrid", "tiny", num_classes=5)
    assert isinstance(model, ConvViT) and model.head.out_features == 5
    pre = _perturbed("hybrid")
    report = load_pretrained(model, pre.state_dict(), "hybrid")
    assert report["unexpected"] == [] and set(report["missing"]) == {
        "head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"}
    torch.testing.assert_close(model.blocks3[0].attn.qkv.weight, pre.blocks3[0].attn.qkv.weight)
    # the dense side follows the family too
    assert pyramid_channels("hybrid", "tiny") == (32, 48, 96, 96)
    assert ConvViTPyramid("hybrid", "tiny").out_channels == (32, 48, 96, 96)
    with pytest.raises(ValueError, match="'hybrid' .*family 'convvit'.* no timm ViT"):
        vit_for("hybrid", "tiny")
    with pytest.raises(ValueError, match=r"hybrid has no plain ViT \(encoder family convvit"):
        SegViT("hybrid", "tiny", img_size=64)


def test_the_name_convmae_means_nothing_when_it_declares_family_vit(declared):
    model = build_classifier("convmae", "tiny", num_classes=5)
    assert isinstance(model, VisionTransformer)
    pre = _perturbed("convmae")
    report = load_pretrained(model, pre.state_dict(), "convmae")
    assert report["unexpected"] == []
    assert isinstance(SegViT("convmae", "tiny", img_size=64), SegViT)
    with pytest.raises(ValueError, match=r"convvit-family checkpoints, not convmae \(family vit\)"):
        ConvViTPyramid("convmae", "tiny")


def test_an_unknown_family_is_a_clear_error(declared):
    msg = r"method 'odd' declares encoder family 'nosuch'.*handles \['convvit', 'vit'\]"
    with pytest.raises(ValueError, match="build_classifier: " + msg):
        build_classifier("odd", "tiny", num_classes=5)
    vit = build_classifier("mae", "vit_cpu_patch8_64", num_classes=5)
    with pytest.raises(ValueError, match="load_pretrained: " + msg):
        load_pretrained(vit, _perturbed("odd").state_dict(), "odd")
    with pytest.raises(ValueError, match="ConvViTPyramid takes convvit-family checkpoints, "
                                         r"not odd \(family nosuch\)"):
        ConvViTPyramid("odd", "tiny")
