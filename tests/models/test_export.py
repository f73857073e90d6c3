"""Pretrained encoders load into their downstream models with exactly the expected keys."""

import pytest
import torch

from pixmim import registry
from pixmim.models import create_model
from pixmim.models.classifier import build_classifier as vit_for
from pixmim.models.export import load_pretrained


# every registered method of MAE's (the plain ViT's) family
@pytest.mark.parametrize("method", [m for m, spec in registry.methods().items()
                                    if spec.family == registry.method("mae").family])
@pytest.mark.parametrize("pool", ["avg", "token"])
def test_vit_methods_load_into_timm_with_exact_keys(method, pool):
    torch.manual_seed(0)
    pre = create_model(method, "vit_cpu_patch8_64", target="lowpass", radius=11.0)
    vit = vit_for(method, "vit_cpu_patch8_64", num_classes=10, global_pool=pool)
    report = load_pretrained(vit, pre.state_dict(), method)
    expected = {"head.weight", "head.bias"} | (
        {"fc_norm.weight", "fc_norm.bias"} if pool == "avg" else set())
    assert set(report["missing"]) == expected and report["unexpected"] == []
    # the loaded timm encoder computes the same tokens as our encoder
    imgs = torch.randn(2, 3, 64, 64)
    vit.eval(), pre.eval()
    ours = pre.forward_features(imgs)
    theirs = vit.forward_features(imgs)
    if pool == "token":
        torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)
    else:  # timm skips the final norm when it pools with fc_norm
        torch.testing.assert_close(pre.norm(theirs), ours, atol=1e-5, rtol=1e-4)


def test_paper_size_loads_into_timm_vit_base():
    import timm

    with torch.device("meta"):
        pre = create_model("mae", "vit_base_patch16_224")
        vit = timm.create_model("vit_base_patch16_224", pretrained=False, global_pool="avg")
    result = vit.load_state_dict(
        {k: v for k, v in pre.state_dict().items()
         if not k.startswith(("decoder_", "mask_token", "norm."))}, strict=False, assign=True)
    assert set(result.missing_keys) == {"head.weight", "head.bias", "fc_norm.weight",
                                        "fc_norm.bias"}
    assert result.unexpected_keys == []


def test_wrong_size_or_method_is_a_clear_error():
    vit = vit_for("mae", "vit_cpu_patch8_64", num_classes=10)
    with torch.device("meta"):
        big = create_model("mae", "vit_small_patch16_224").state_dict()
    with pytest.raises(ValueError, match="does not fit the mae model"):
        load_pretrained(vit, {k: torch.zeros(v.shape) for k, v in big.items()}, "mae")
    state = create_model("mae", "vit_cpu_patch8_64").state_dict()
    state["stage1.0.conv.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="stage1.0.conv.weight"):
        load_pretrained(vit, state, "mae")
    del state["stage1.0.conv.weight"], state["blocks.0.attn.qkv.weight"]
    with pytest.raises(KeyError, match=r"missing \['blocks.0.attn.qkv.weight'\]"):
        load_pretrained(vit, state, "mae")
