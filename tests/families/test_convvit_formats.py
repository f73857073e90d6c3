"""Released checkpoints of the ConvViT family (pixmim.families.convvit.formats), both ways.

Alpha-VL/ConvMAE is not installable (no package; its files need an old timm), so its layout
is written here from its source, Alpha-VL/ConvMAE@4c97b4c9ec9c: ``models_convmae.py``
(``MaskedAutoencoderConvViT``, the pretrained checkpoint: encoder + decoder) and
``models_convvit.py`` / ``vision_transformer.py`` (``ConvViT(global_pool=True)``, the
fine-tuned one), both saved by ``util/misc.py`` ``save_model`` under ``"model"``. Our
models must have exactly those keys and shapes; a checkpoint in that layout imports and
loads with strict keys; ours -> theirs -> ours is exact; a checkpoint of another arch,
format or kind is one line naming the keys.
"""

from __future__ import annotations

import pytest
import torch

from pixmim import families
from pixmim.families.convvit import formats
from pixmim.families.convvit.formats import FormatError, expected, from_ours, to_ours
from pixmim.families.convvit.nets import classifier, load_pretrained
from pixmim.families.vit import formats as vit_formats
from pixmim.models import create_model

TINY = "convvit_cpu_64"  # pixmim.methods: 64 px, dims (32, 48, 96), depths (1, 1, 2)
# The arch of ConvMAE's released files and of the tiny test size, as their builders take it:
# (img_size, patch_size, embed_dim, depth, decoder_embed_dim, decoder_depth);
# convmae_convvit_base_patch16_dec512d8b in models_convmae.py for ConvMAE-B.
THEIR_ARCHS = {
    "convvit_base_224": (224, (4, 2, 2), (256, 384, 768), (2, 2, 11), 512, 8),
    TINY: (64, (4, 2, 2), (32, 48, 96), (1, 1, 2), 64, 2),
}
CLASSES = 10


def _cblock(prefix: str, d: int, mlp: int = 4) -> dict[str, tuple[int, ...]]:
    """vision_transformer.py CBlock(dim=d): LayerNorms, 1x1 convs, the 5x5 depthwise
    ``attn`` (groups=dim) and CMlp's 1x1 convs (hidden d * mlp_ratio, 4 in both builders)."""
    return {f"{prefix}.norm1.weight": (d,), f"{prefix}.norm1.bias": (d,),
            f"{prefix}.conv1.weight": (d, d, 1, 1), f"{prefix}.conv1.bias": (d,),
            f"{prefix}.conv2.weight": (d, d, 1, 1), f"{prefix}.conv2.bias": (d,),
            f"{prefix}.attn.weight": (d, 1, 5, 5), f"{prefix}.attn.bias": (d,),
            f"{prefix}.norm2.weight": (d,), f"{prefix}.norm2.bias": (d,),
            f"{prefix}.mlp.fc1.weight": (mlp * d, d, 1, 1), f"{prefix}.mlp.fc1.bias": (mlp * d,),
            f"{prefix}.mlp.fc2.weight": (d, mlp * d, 1, 1), f"{prefix}.mlp.fc2.bias": (d,)}


def _block(prefix: str, d: int, mlp: int = 4) -> dict[str, tuple[int, ...]]:
    """vision_transformer.py Block(dim=d, qkv_bias=True): Attention's qkv / proj, Mlp."""
    return {f"{prefix}.norm1.weight": (d,), f"{prefix}.norm1.bias": (d,),
            f"{prefix}.attn.qkv.weight": (3 * d, d), f"{prefix}.attn.qkv.bias": (3 * d,),
            f"{prefix}.attn.proj.weight": (d, d), f"{prefix}.attn.proj.bias": (d,),
            f"{prefix}.norm2.weight": (d,), f"{prefix}.norm2.bias": (d,),
            f"{prefix}.mlp.fc1.weight": (mlp * d, d), f"{prefix}.mlp.fc1.bias": (mlp * d,),
            f"{prefix}.mlp.fc2.weight": (d, mlp * d), f"{prefix}.mlp.fc2.bias": (d,)}


def _their_encoder(arch: str) -> dict[str, tuple[int, ...]]:
    """The encoder keys both their models share: PatchEmbed 1-3 (proj conv + LayerNorm),
    patch_embed4 (Linear), pos_embed [1, num_patches, D], blocks1/2 (CBlock), blocks3 (Block)."""
    img, patch, dims, depth = THEIR_ARCHS[arch][:4]
    keys, c_in = {}, 3
    for i, (p, d) in enumerate(zip(patch, dims, strict=True), start=1):
        keys |= {f"patch_embed{i}.proj.weight": (d, c_in, p, p), f"patch_embed{i}.proj.bias": (d,),
                 f"patch_embed{i}.norm.weight": (d,), f"patch_embed{i}.norm.bias": (d,)}
        c_in = d
    e = dims[2]
    keys |= {"patch_embed4.weight": (e, e), "patch_embed4.bias": (e,),
             "pos_embed": (1, (img // 16) ** 2, e)}
    for j in range(depth[0]):
        keys |= _cblock(f"blocks1.{j}", dims[0])
    for j in range(depth[1]):
        keys |= _cblock(f"blocks2.{j}", dims[1])
    for j in range(depth[2]):
        keys |= _block(f"blocks3.{j}", e)
    return keys


def their_pretrained(arch: str) -> dict[str, tuple[int, ...]]:
    """models_convmae.py MaskedAutoencoderConvViT's state dict: the encoder, the fusion convs
    (stage1: Conv2d(e0, e2, 4, stride=4), stage2: Conv2d(e1, e2, 2, stride=2)), the final
    norm, and the decoder (mask token, fixed pos embed, Blocks, norm, pred to 16*16*3)."""
    img, _, dims, _, dd, ddepth = THEIR_ARCHS[arch]
    e = dims[2]
    keys = _their_encoder(arch) | {
        "stage1_output_decode.weight": (e, dims[0], 4, 4), "stage1_output_decode.bias": (e,),
        "stage2_output_decode.weight": (e, dims[1], 2, 2), "stage2_output_decode.bias": (e,),
        "norm.weight": (e,), "norm.bias": (e,),
        "decoder_embed.weight": (dd, e), "decoder_embed.bias": (dd,),
        "mask_token": (1, 1, dd), "decoder_pos_embed": (1, (img // 16) ** 2, dd),
        "decoder_norm.weight": (dd,), "decoder_norm.bias": (dd,),
        "decoder_pred.weight": (16 * 16 * 3, dd), "decoder_pred.bias": (16 * 16 * 3,)}
    for j in range(ddepth):
        keys |= _block(f"decoder_blocks.{j}", dd)
    return keys


def their_finetuned(arch: str, classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """models_convvit.py ConvViT(global_pool=True): the encoder (no fusion convs), its
    ``norm`` deleted, ``fc_norm`` and the ``head`` Linear."""
    e = THEIR_ARCHS[arch][2][2]
    return _their_encoder(arch) | {"fc_norm.weight": (e,), "fc_norm.bias": (e,),
                                   "head.weight": (classes, e), "head.bias": (classes,)}


def _their_checkpoint(keys: dict[str, tuple[int, ...]], seed: int = 0) -> dict:
    """A checkpoint in their layout with random tensors, as save_model writes it (less the
    optimizer, scaler and args)."""
    g = torch.Generator().manual_seed(seed)
    return {"model": {k: torch.randn(s, generator=g) for k, s in keys.items()}, "epoch": 1599}


def _saved(obj, tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    return torch.load(path, map_location="cpu", weights_only=True)


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _our_states() -> dict[str, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    return {"pretrained": create_model("convmae", TINY).state_dict(),
            "finetuned": classifier(families.arch("convmae", TINY),
                                    num_classes=CLASSES).state_dict()}


# ---------------------------------------------------------------- their layout
def test_the_family_offers_its_formats():
    assert families.formats_of("convmae") is formats
    assert formats.FORMATS == ("convmae",)


@pytest.mark.parametrize("arch", sorted(THEIR_ARCHS))
def test_our_models_have_convmaes_keys_and_shapes(arch):
    ours = {k: tuple(s) for k, s in expected("convmae", arch, "pretrained").items()}
    assert ours == their_pretrained(arch), sorted(set(ours) ^ set(their_pretrained(arch)))
    ours = {k: tuple(s) for k, s in expected("convmae", arch, "finetuned", CLASSES).items()}
    assert ours == their_finetuned(arch, CLASSES), sorted(
        set(ours) ^ set(their_finetuned(arch, CLASSES)))


def test_their_pretrained_checkpoint_imports_and_loads_strictly(tmp_path):
    ckpt = _their_checkpoint(their_pretrained(TINY))
    state, report = to_ours(_saved(ckpt, tmp_path), "convmae", "pretrained", "convmae", TINY)
    assert report["encoder_only"] is False and report["absent"] == []
    model = create_model("convmae", TINY)
    model.load_state_dict(state, strict=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ckpt["model"].items())
    # and it fine-tunes: the family's loader takes it, exactly the head and fc_norm missing
    vit = classifier(families.arch("convmae", TINY), num_classes=CLASSES)
    load_pretrained(vit, state, families.pretrain_only("convmae"), "convmae")
    assert torch.equal(vit.blocks3[1].mlp.fc2.weight, ckpt["model"]["blocks3.1.mlp.fc2.weight"])


def test_their_encoder_alone_imports_as_the_encoder_and_says_so(tmp_path):
    keys = their_pretrained(TINY)
    decoder = {k for k in keys if k.startswith(("decoder_", "mask_token"))}
    ckpt = _their_checkpoint({k: s for k, s in keys.items() if k not in decoder})
    state, report = to_ours(_saved(ckpt, tmp_path), "convmae", "pretrained", "convmae", TINY)
    assert report["encoder_only"] is True and report["absent"] == sorted(decoder)
    result = create_model("convmae", TINY).load_state_dict(state, strict=False)
    assert sorted(result.missing_keys) == sorted(decoder) and not result.unexpected_keys


def test_their_finetuned_checkpoint_imports_with_its_head(tmp_path):
    ckpt = _their_checkpoint(their_finetuned(TINY, CLASSES), seed=1)
    state, report = to_ours(_saved(ckpt, tmp_path), "convmae", "finetuned", "convmae", TINY)
    assert report["kind"] == "finetuned"
    vit = classifier(families.arch("convmae", TINY), num_classes=CLASSES)  # the head's size
    vit.load_state_dict(state, strict=True)
    assert torch.equal(vit.head.weight, ckpt["model"]["head.weight"])


# ---------------------------------------------------------------- ours -> theirs -> ours
def test_round_trip_is_exact(tmp_path):
    for kind, state in _our_states().items():
        for encoder_only in (False, True) if kind == "pretrained" else (False,):
            theirs = _saved(from_ours(state, "convmae", kind, "convmae",
                                      encoder_only=encoder_only), tmp_path)
            want_keys = their_pretrained(TINY) if kind == "pretrained" else their_finetuned(
                TINY, CLASSES)
            if encoder_only:
                want_keys = {k: s for k, s in want_keys.items()
                             if not k.startswith(("decoder_", "mask_token"))}
            assert list(theirs) == ["model"] and _shapes(theirs["model"]) == want_keys
            back, report = to_ours(theirs, "convmae", kind, "convmae", TINY)
            assert report["encoder_only"] is encoder_only
            want = {k: v for k, v in state.items() if k not in report["absent"]}
            assert set(back) == set(want)
            assert all(torch.equal(back[k], v) for k, v in want.items()), kind


# ---------------------------------------------------------------- checkpoints that do not fit
def _fails(ckpt, kind="pretrained", arch=TINY, fmt="convmae", match=None) -> str:
    with pytest.raises(FormatError, match=match) as err:
        to_ours(ckpt, fmt, kind, "convmae", arch)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_another_arch_fails_naming_keys_and_shapes():
    msg = _fails(_their_checkpoint(their_pretrained("convvit_base_224")),
                 match=r"^convmae pretrained checkpoint does not fit convmae convvit_cpu_64")
    # ConvMAE-B's 313 keys: the tiny arch's 105 (fewer blocks), all but decoder_pred.bias
    # ([768] at both sizes) of another shape, and 208 deeper blocks it has none of
    assert "missing none, unexpected 208 (blocks1.1.attn.bias" in msg
    assert "shapes 104 (blocks1.0.attn.bias [256] != [32]" in msg


def test_another_kind_fails_naming_the_keys():
    ft = _their_checkpoint(their_finetuned(TINY))
    msg = _fails(ft, "pretrained")
    assert "missing 6 (norm.bias, norm.weight, stage1_output_decode.bias" in msg
    assert "unexpected 4 (fc_norm.bias, fc_norm.weight, head.bias, head.weight)" in msg
    encoder = {k: s for k, s in their_pretrained(TINY).items()
               if not k.startswith(("decoder_", "mask_token"))}
    msg = _fails(_their_checkpoint(encoder), "finetuned")
    assert "missing 4 (fc_norm.bias, fc_norm.weight, head.bias, head.weight)" in msg
    assert "unexpected 6 (norm.bias, norm.weight, stage1_output_decode.bias" in msg


def test_an_encoder_without_its_fusion_convs_fails_naming_them():
    """What Alpha-VL/ConvMAE issue #12 reports the released pretrained file to hold: the
    encoder and its final norm, no decoder, no fusion convs (models_convvit.py's model has
    none). Our probe features need the fusion convs: never loaded at random."""
    keys = {k: s for k, s in their_pretrained(TINY).items() if not k.startswith(
        ("decoder_", "mask_token", "stage1_output_decode.", "stage2_output_decode."))}
    _fails(_their_checkpoint(keys), match=r"missing 4 \(stage1_output_decode\.bias, "
           r"stage1_output_decode\.weight, stage2_output_decode\.bias, "
           r"stage2_output_decode\.weight\), unexpected none$")


def test_another_format_or_method_fails_naming_what_it_found():
    torch.manual_seed(0)
    mae = create_model("mae", "vit_cpu_patch8_64").state_dict()
    msg = _fails(vit_formats.from_ours(mae, "mae", "pretrained", "mae"))  # same container
    # MAE's ViT: its blocks and tokens unexpected, ConvMAE's stages missing, the shared
    # decoder names of another width and length (a cls token in MAE's decoder)
    assert "missing 70 (blocks1.0.attn.bias" in msg
    assert "unexpected 51 (blocks.0.attn.proj.bias" in msg
    assert "decoder_pos_embed [1, 65, 64] != [1, 16, 64]" in msg
    mm = vit_formats.from_ours(mae, "openmmlab", "pretrained", "mae")
    _fails(mm, match=r"a convmae checkpoint is a dict with 'model'.*got \['meta', 'state_dict'\]")
    _fails(_our_states()["pretrained"], match=r"got \['blocks1\.0\.attn\.bias'")  # no container
    partial = _their_checkpoint(their_pretrained(TINY))
    del partial["model"]["decoder_pred.bias"]
    _fails(partial, match=r"missing 1 \(decoder_pred\.bias\), unexpected none$")


def test_an_unknown_format_or_a_key_with_no_name_there_is_one_line():
    with pytest.raises(FormatError, match=r"unknown checkpoint format/kind 'mae'/'pretrained'"):
        to_ours({}, "mae", "pretrained", "convmae", TINY)
    adaptive = create_model("convmae", TINY, target="adaptive").state_dict()
    with pytest.raises(FormatError, match=r"no name for convmae's keys 1 \(radius_logit\)"):
        from_ours(adaptive, "convmae", "pretrained", "convmae")
