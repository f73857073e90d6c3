"""Behaviour is chosen by a method's declared encoder family, never by its name.

The registry is patched so that a method with a new name declares ConvMAE's family, the
name ``convmae`` declares the plain-ViT family, and another declares a family that does not
exist: the classifier, the loader and the dense backbones follow the declarations. Outside
``pixmim/families/`` no module of the package names a family.
"""

import ast
from pathlib import Path

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from pixmim import families, registry
from pixmim.families.convvit.nets import ConvViT, ConvViTPyramid, pyramid_channels
from pixmim.families.vit.nets import SegViT
from pixmim.models import archs, create_model
from pixmim.models.classifier import build_classifier
from pixmim.models.export import load_pretrained

CONV = dict(archs("convmae")["convvit_cpu_64"])
VIT = dict(archs("mae")["vit_cpu_patch8_64"])
PACKAGE = Path(families.__file__).resolve().parents[1]


@pytest.fixture
def declared(monkeypatch):
    """Registry with extra/overridden declarations (names deliberately misleading)."""
    table = dict(registry.methods())
    conv, vit = registry.method("convmae").family, registry.method("mae").family
    table["hybrid"] = registry.Method(  # a new name, ConvMAE's family and class
        name="hybrid", model="pixmim.models.convmae:ConvMAE", family=conv,
        archs={"tiny": CONV}, pretrain_only=("decoder_", "mask_token"))
    table["convmae"] = registry.Method(  # the old name, now a plain ViT
        name="convmae", model="pixmim.models.mae:MAE", family=vit,
        archs={"tiny": VIT}, pretrain_only=("decoder_", "mask_token"))
    table["odd"] = registry.Method(
        name="odd", model="pixmim.models.mae:MAE", family="nosuch",
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


def test_a_method_of_any_name_in_convmaes_family_builds_and_loads_a_convvit(declared):
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
    with pytest.raises(ValueError, match=r"hybrid has no plain ViT \(encoder family convvit"):
        SegViT("hybrid", "tiny", img_size=64)


def test_the_name_convmae_means_nothing_when_it_declares_the_vit_family(declared):
    model = build_classifier("convmae", "tiny", num_classes=5)
    assert isinstance(model, VisionTransformer)
    pre = _perturbed("convmae")
    report = load_pretrained(model, pre.state_dict(), "convmae")
    assert report["unexpected"] == []
    assert isinstance(SegViT("convmae", "tiny", img_size=64), SegViT)
    with pytest.raises(ValueError, match=r"convmae has no ConvViT \(encoder family vit\)"):
        ConvViTPyramid("convmae", "tiny")


def test_an_unknown_family_is_a_clear_error(declared):
    msg = r"encoder family 'nosuch': no module pixmim\.families\.nosuch"
    with pytest.raises(registry.RegistryError, match=msg):
        build_classifier("odd", "tiny", num_classes=5)
    vit = build_classifier("mae", "vit_cpu_patch8_64", num_classes=5)
    with pytest.raises(registry.RegistryError, match=msg):
        load_pretrained(vit, _perturbed("odd").state_dict(), "odd")
    with pytest.raises(registry.RegistryError, match=msg):
        families.pretrain_flops("odd", "tiny")


def test_a_family_missing_part_of_the_contract_is_named(monkeypatch, tmp_path):
    pkg = tmp_path / "mylab" / "halffam"  # a plugin family: a dotted path
    pkg.mkdir(parents=True)
    (pkg.parent / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("def pretrain_flops(arch, mask_ratio=0.75):\n    return 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(registry.RegistryError, match=r"mylab.halffam.*lacks \['forward_flops'\]"):
        families.declaration("mylab.halffam")
    with pytest.raises(registry.RegistryError, match=r"no module mylab\.nosuch"):
        families.declaration("mylab.nosuch")


def _family_literals(path: Path) -> list[str]:
    """String constants in ``path`` equal to a registered family's name, outside a
    ``Method(..., family=...)`` declaration (where a method names its family)."""
    names = set(registry.families())
    tree = ast.parse(path.read_text(encoding="utf-8"))
    allowed = {id(kw.value) for node in ast.walk(tree) if isinstance(node, ast.Call)
               for kw in node.keywords if kw.arg == "family"}
    return [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.value!r}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in allowed]


def test_no_module_outside_the_family_packages_names_a_family():
    found = [hit for path in sorted(PACKAGE.rglob("*.py"))
             if "families" not in path.relative_to(PACKAGE).parts
             for hit in _family_literals(path)]
    assert found == []
