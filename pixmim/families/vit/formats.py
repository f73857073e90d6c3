"""Released checkpoints of the plain-ViT family, both ways: MAE, long_seq_mae, OpenMMLab, timm.

Our two kinds of checkpoint:

``pretrained``
    The state dict of the pretraining model (``create_model(method, arch)``): encoder and
    decoder. An encoder-only checkpoint imports as the encoder keys alone, and the report
    says so (``encoder_only``, ``absent``).
``finetuned``
    The state dict of the family's classifier (:func:`pixmim.families.vit.nets.classifier`:
    timm's ``VisionTransformer``, global average pool, ``fc_norm`` and ``head``).
``linear_probe``
    A trained linear probe: the frozen encoder's keys (the pretraining model's, less its
    pretraining-only ones; features: the normed cls token) and the probe's head under
    ``head.``: ``head.0`` a BatchNorm1d without affine parameters, ``head.1`` the Linear
    (:func:`pixmim.stages.linear_probe.build_head`; MAE Sec. A.2).

The formats (:data:`FORMATS`):

``mae``
    facebookresearch/mae: ``{"model": state_dict}`` in our key names (its ``models_mae.py``
    and ``models_vit.py`` use timm's blocks); pretrained full (encoder + decoder,
    ``mae_visualize_*``) or encoder-only (``mae_pretrain_*``), fine-tuned with ``fc_norm`` /
    ``head`` (``mae_finetuned_*``).
``openmmlab``
    mmpretrain 1.2.0 MAE / MFF and mmselfsup 1.0.0 PixMIM: ``{"state_dict": ..., "meta":
    ...}``, the encoder under ``backbone.`` in mmcls block names, the decoder under
    ``neck.``; fine-tuned, their ``ImageClassifier`` (``VisionTransformer`` with
    ``out_type="avg_featmap"``, ``final_norm=False``: the pooled norm is ``backbone.ln2``)
    and ``LinearClsHead`` (``head.fc``), as their MAE / PixMIM ViT-B fine-tune configs.
``timm``
    a timm ``VisionTransformer`` state dict: the encoder (``vit_*.mae``: ``num_classes=0``)
    as pretrained, the classifier with ``global_pool="avg"`` as fine-tuned (no probe: timm
    has no BatchNorm head).
``long_seq_mae``
    facebookresearch/long_seq_mae@95993105ce28 (LSMAE): ``mae``'s layout, named apart as its
    files are its own release. Its ``models_mae.py`` (``mae_vit_base_patch16_dec384d12h8b``)
    and ``models_vit.py`` build timm's ``Block`` and ``VisionTransformer`` as MAE does, and
    ``main_pretrain.py`` saves ``{"model": ...}`` (``util/misc.py``): the released files'
    recipe (``PRETRAIN_LONG_SEQ_GPU.md`` / ``_TPU.md``) leaves ``--no_k_bias_in_vit``,
    ``--decoder_downsampling`` and ``--pred_downsampling`` at their defaults (False, 1, 1),
    so no ``decoder_downsample`` / ``decoder_upsample`` conv and one ``attn.qkv.bias``
    (built side by side at 448 px: 254 pretrained and 152 fine-tuned keys, names and
    shapes ours). A model trained with ``--no_k_bias_in_vit`` keeps ``attn.q_bias`` /
    ``attn.v_bias`` instead; their ``tools/convert_model_ckpt_k_bias.py --add_k_bias``
    writes this layout, and here such a file fails naming those keys.
``mmseg`` (pretrained only: :data:`PRETRAINED_ONLY`)
    mmsegmentation 1.2's ``VisionTransformer`` backbone, as its ``init_cfg=dict(type=
    "Pretrained", ...)`` reads it: ``{"state_dict": ...}``, the encoder alone, no prefix,
    mmcls block names but attention in ``nn.MultiheadAttention``'s (``attn.attn.in_proj_*``,
    ``attn.attn.out_proj.``), the final norm ``ln1`` (``final_norm=True``).

Linear probes (``mae``: main_linprobe.py's ``head = Sequential(BatchNorm1d(affine=False,
eps=1e-6), head)`` on models_vit's ViT with ``global_pool=False``, i.e. our keys;
``openmmlab``: the ``ImageClassifier`` of mmselfsup 1.0.0's PixMIM and mmpretrain 1.2.0's
MAE / MFF linear configs, ``VisionTransformer`` with ``out_type="cls_token"``,
``final_norm=True`` (the norm is ``backbone.ln1``), ``ClsBatchNormNeck`` (``neck.bn``) and
``VisionTransformerClsHead`` (``head.layers.head``)).

:func:`to_ours` and :func:`from_ours` are the two entry points. An import is checked
against the keys and shapes of the model it is meant for (built on the meta device): a
checkpoint of another format, arch or kind is one line naming the missing and unexpected
keys, never a state dict that would load around a random head. A method's own parameters
(MFF's fusion) are named by the method's class (``checkpoint_keys``), not here.
"""

from __future__ import annotations

from typing import Any

import torch

from pixmim import families, registry
from pixmim.families.vit.nets import classifier
from pixmim.models import create_model

FORMATS = ("mae", "openmmlab", "timm", "long_seq_mae")
KINDS = ("pretrained", "finetuned", "linear_probe")
# Layouts of an encoder alone: the pretrained kind only, never a decoder.
PRETRAINED_ONLY = ("mmseg",)
# Formats whose pretrained kind is the encoder alone (their libraries have no decoder).
_NO_DECODER = ("timm", *PRETRAINED_ONLY)

# A rule (ours, theirs[, our_shape, their_shape]): a key starting with ``ours`` starts with
# ``theirs`` in the format (the longest matching rule wins), the value viewed to the shape of
# that side when shapes are given; then the format's block names (_INFIX) are renamed inside
# the key. Keys no rule matches are unexpected.
_SAME = (("", ""),)

# mmcls block names (mmpretrain 1.2.0 TransformerEncoderLayer, mmselfsup 1.0.0 the same) for
# timm's Block, inside encoder and decoder blocks: checked by building their MAEViT,
# MAEPretrainDecoder and VisionTransformer (tests/families/test_formats.py).
_MM_BLOCK = ((".norm1.", ".ln1."), (".norm2.", ".ln2."),
             (".mlp.fc1.", ".ffn.layers.0.0."), (".mlp.fc2.", ".ffn.layers.1."))
_MM_VIT = (("cls_token", "cls_token"), ("pos_embed", "pos_embed"),
           ("patch_embed.proj.", "patch_embed.projection."), ("blocks.", "layers."))
_MM_ENCODER = tuple((ours, f"backbone.{theirs}") for ours, theirs in _MM_VIT)
# mmseg 1.2's TransformerEncoderLayer: mmcv's MultiheadAttention wraps nn.MultiheadAttention
# (attn.attn), whose in_proj holds q, k, v stacked in timm's qkv order ([3 D, D]) and whose
# out_proj is timm's proj: checked by loading into mmseg's VisionTransformer
# (tests/test_export.py).
_MMSEG_BLOCK = (*_MM_BLOCK, (".attn.qkv.", ".attn.attn.in_proj_"),
                (".attn.proj.", ".attn.attn.out_proj."))
_RULES = {
    ("mae", "pretrained"): _SAME,
    ("mae", "finetuned"): _SAME,
    ("timm", "pretrained"): _SAME,
    ("timm", "finetuned"): _SAME,
    ("mae", "linear_probe"): _SAME,
    # MAEViT's final norm is ln1; MAEPretrainDecoder keeps our decoder names but its norm.
    ("openmmlab", "pretrained"): (*_MM_ENCODER, ("norm.", "backbone.ln1."),
                                  ("mask_token", "neck.mask_token"),
                                  ("decoder_norm.", "neck.ln1."), ("decoder_", "neck.decoder_")),
    # VisionTransformer(out_type="avg_featmap", final_norm=False) pools into ln2;
    # LinearClsHead holds its Linear as fc.
    ("openmmlab", "finetuned"): (*_MM_ENCODER, ("fc_norm.", "backbone.ln2."),
                                 ("head.", "head.fc.")),
    # VisionTransformer(final_norm=True) names its final norm ln1.
    ("mmseg", "pretrained"): (*_MM_VIT, ("norm.", "ln1.")),
    # vit-base-p16_linear-8xb2048-coslr-torchvision-transform-90e_in1k.py (mmselfsup PixMIM),
    # vit-base-p16_8xb2048-linear-coslr-90e_in1k.py (mmpretrain MAE, MFF): out_type
    # cls_token with final_norm (ln1), ClsBatchNormNeck (bn), VisionTransformerClsHead.
    ("openmmlab", "linear_probe"): (*_MM_ENCODER, ("norm.", "backbone.ln1."),
                                    ("head.0.", "neck.bn."), ("head.1.", "head.layers.head.")),
}
_INFIX = {"openmmlab": _MM_BLOCK, "mmseg": _MMSEG_BLOCK}
# Where the state dict sits in the checkpoint object (None: the object is the state dict).
_CONTAINER = {"mae": "model", "openmmlab": "state_dict", "timm": None, "mmseg": "state_dict"}
# Their keys that are no weights of ours, dropped on import and reported: mmselfsup's PixMIM
# keeps its low-pass mask as a buffer (LowFreqTargetGenerator.low_pass_filter, derived from
# radius and image size; ours filters from the radius alone).
_DERIVED = {"openmmlab": ("target_generator.",)}
# long_seq_mae is mae's layout under its own name (module docstring): its rules and container.
_RULES |= {("long_seq_mae", kind): _RULES["mae", kind] for kind in KINDS}
_CONTAINER["long_seq_mae"] = _CONTAINER["mae"]


class FormatError(ValueError):
    """A checkpoint that does not fit the format, kind or arch it was declared as."""


def _check_names(fmt: str, kind: str) -> None:
    if (fmt, kind) not in _RULES:
        raise FormatError(f"unknown checkpoint format/kind {fmt!r}/{kind!r}: formats "
                          f"{list(FORMATS)}, kinds {list(KINDS)} (timm: no linear_probe); "
                          f"pretrained only: {list(PRETRAINED_ONLY)}")


def rules(fmt: str, kind: str, method: str) -> tuple[tuple, ...]:
    """The key rules of ``fmt``/``kind`` for ``method``: the family's and the method's own
    (its class's ``checkpoint_keys[fmt]``; pretrained only, as they are pretraining
    parameters)."""
    _check_names(fmt, kind)
    own = getattr(registry.model_class(method), "checkpoint_keys", {}).get(fmt, ())
    return (*(own if kind == "pretrained" else ()), *_RULES[fmt, kind])


def _rename(key: str, rule_set: tuple[tuple, ...], infix: tuple[tuple[str, str], ...],
            value: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    """``key`` and ``value`` through the first, longest matching rule (None: no rule)."""
    for rule in sorted(rule_set, key=lambda r: -len(r[0])):
        src, dst = rule[:2]
        if key.startswith(src):
            key = dst + key[len(src):]
            for a, b in infix:
                key = key.replace(a, b)
            return key, (value.reshape(rule[3]) if len(rule) > 2 else value)
    return None


def _flip(rule_set: tuple[tuple, ...]) -> tuple[tuple, ...]:
    return tuple((r[1], r[0], *(r[2:][::-1])) for r in rule_set)


def _unwrap(obj: Any, fmt: str) -> dict[str, torch.Tensor]:
    box = _CONTAINER[fmt]
    state = obj.get(box) if box and isinstance(obj, dict) else obj
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        shown = sorted(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
        where = f"a dict with {box!r} holding" if box else "a bare"
        raise FormatError(f"a {fmt} checkpoint is {where} state dict of tensors; got {shown}")
    return state


def _shown(keys: list[str] | set[str], few: int = 4) -> str:
    keys = sorted(keys)
    if not keys:
        return "none"
    more = f" and {len(keys) - few} more" if len(keys) > few else ""
    return f"{len(keys)} ({', '.join(keys[:few])}{more})"


def expected(method: str, arch: str, kind: str, num_classes: int = 1000,
             img_size: int | None = None) -> dict[str, torch.Size]:
    """Keys and shapes of our ``kind`` of ``method``/``arch`` (the model built on the meta
    device: no memory, no initialisation cost)."""
    with torch.device("meta"):
        model = (classifier(families.arch(method, arch), num_classes=num_classes,
                            img_size=img_size) if kind == "finetuned" else
                 create_model(method, arch))
        if kind == "linear_probe":  # the encoder and the probe's BatchNorm1d + Linear
            dim = model.embed_dim
            head = torch.nn.Sequential(torch.nn.BatchNorm1d(dim, affine=False),
                                       torch.nn.Linear(dim, num_classes))
    keys = {k: v.shape for k, v in model.state_dict().items()}
    if kind != "linear_probe":
        return keys
    return {**{k: v for k, v in keys.items() if not k.startswith(families.pretrain_only(method))},
            **{f"head.{k}": v.shape for k, v in head.state_dict().items()}}


def to_ours(checkpoint: Any, fmt: str, kind: str, method: str, arch: str,
            num_classes: int | None = None, img_size: int | None = None
            ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A released checkpoint object (as ``torch.load`` gives it) -> our state dict, report.

    Args:
        checkpoint: the loaded checkpoint in ``fmt``; kind: one of :data:`KINDS`.
        method, arch: the model it must fit (keys and shapes checked).
        num_classes: fine-tuned and probe only; None: the checkpoint's head decides.
        img_size: fine-tuned only; the classifier's input (None: the arch's own).

    Returns:
        (state dict, report): the report names the format, ``encoder_only`` and the
        pretraining-only keys ``absent`` from it, and the derived keys ``dropped``.

    Raises:
        FormatError: one line naming the missing and unexpected keys (a few, then a
            count) and the shapes that differ.
    """
    state = _unwrap(checkpoint, fmt)
    rule_set, infix = _flip(rules(fmt, kind, method)), tuple(
        (b, a) for a, b in _INFIX.get(fmt, ()))
    out, unmapped, dropped = {}, [], []
    for key, value in state.items():
        if key.startswith(_DERIVED.get(fmt, ())):
            dropped.append(key)
            continue
        renamed = _rename(key, rule_set, infix, value)
        if renamed is None or renamed[0] in out:
            unmapped.append(key)
        else:
            out[renamed[0]] = renamed[1]
    head = {"finetuned": "head.weight", "linear_probe": "head.1.weight"}.get(kind)
    if head and num_classes is None:
        num_classes = out[head].shape[0] if head in out else 1000
    want = expected(method, arch, kind, num_classes or 1000, img_size)
    return out, fit_report(out, want, fmt, kind, method, arch, unmapped, dropped)


def fit_report(out: dict[str, torch.Tensor], want: dict[str, tuple[int, ...]], fmt: str,
               kind: str, method: str, arch: str, unmapped: list[str] | tuple = (),
               dropped: list[str] | tuple = ()) -> dict[str, Any]:
    """The report of a converted state dict ``out`` against the shapes ``want`` of the
    model it is meant for (any family's ``to_ours``): an encoder when every pretraining-only
    key is absent; else a FormatError of one line naming the missing and unexpected keys
    (``unmapped``: the file's keys that have no name of ours) and the shapes that differ."""
    missing = set(want) - set(out)
    only = {k for k in want if k.startswith(families.pretrain_only(method))}
    encoder_only = kind == "pretrained" and bool(only) and only <= missing
    if encoder_only:  # all the pretraining-only keys absent: an encoder; some: an error
        missing -= only
    unexpected = set(out) - set(want) | set(unmapped)
    shapes = [f"{k} {list(out[k].shape)} != {list(want[k])}" for k in sorted(set(out) & set(want))
              if out[k].shape != want[k]]
    if missing or unexpected or shapes:
        differ = f", shapes {_shown(shapes, 2)}" if shapes else ""
        raise FormatError(
            f"{fmt} {kind} checkpoint does not fit {method} {arch}: missing {_shown(missing)}, "
            f"unexpected {_shown(unexpected)}{differ}")
    return {"format": fmt, "kind": kind, "method": method, "arch": arch,
            "encoder_only": encoder_only, "absent": sorted(only) if encoder_only else [],
            "dropped": sorted(dropped)}


def from_ours(state_dict: dict[str, torch.Tensor], fmt: str, kind: str, method: str,
              encoder_only: bool = False, meta: dict[str, Any] | None = None) -> Any:
    """Our ``kind`` of state dict -> a checkpoint object in ``fmt`` (what ``torch.save``
    writes and the format's own loader reads).

    ``timm`` and ``mmseg`` pretrained are the encoder alone (no decoder there);
    ``encoder_only`` drops the pretraining-only keys in the other formats too (MAE's
    ``mae_pretrain_*`` layout).
    ``meta`` goes into OpenMMLab's and mmseg's ``meta``.

    Raises:
        FormatError: a key the format has no name for (one line naming them).
    """
    rule_set, infix = rules(fmt, kind, method), _INFIX.get(fmt, ())
    if kind == "pretrained" and (encoder_only or fmt in _NO_DECODER):
        state_dict = {k: v for k, v in state_dict.items()
                      if not k.startswith(families.pretrain_only(method))}
    out, unmapped = {}, []
    for key, value in state_dict.items():
        renamed = _rename(key, rule_set, infix, value)
        if renamed is None:
            unmapped.append(key)
        else:
            out[renamed[0]] = renamed[1]
    if unmapped:
        raise FormatError(f"{fmt} {kind} checkpoints have no name for {method}'s keys "
                          f"{_shown(unmapped)}")
    box = _CONTAINER[fmt]
    if box is None:
        return out
    return {box: out, "meta": dict(meta or {})} if box == "state_dict" else {box: out}
