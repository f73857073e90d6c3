"""Released checkpoints of the ConvViT family (ConvMAE), both ways: Alpha-VL/ConvMAE.

Our two kinds of checkpoint, as in :mod:`pixmim.families.vit.formats`:

``pretrained``
    The state dict of the pretraining model (``create_model(method, arch)``,
    :class:`pixmim.models.convmae.ConvMAE`): the encoder with its multi-scale fusion convs and
    final norm, and the decoder. An encoder-only checkpoint imports as the encoder keys alone,
    and the report says so (``encoder_only``, ``absent``).
``finetuned``
    The state dict of the family's classifier (:func:`pixmim.families.convvit.nets.classifier`:
    no fusion, no final norm, tokens averaged, ``fc_norm`` and ``head``).

The format (:data:`FORMATS`):

``convmae``
    Alpha-VL/ConvMAE@4c97b4c9ec9c: ``{"model": state_dict}`` (``util/misc.py`` ``save_model``,
    beside ``optimizer``, ``epoch``, ``scaler`` and ``args``, which an import ignores).
    Pretrained: ``models_convmae.py``'s ``MaskedAutoencoderConvViT`` whole (encoder + decoder:
    ``patch_embed1..4``, ``blocks1..3``, ``stage1/2_output_decode``, ``norm``, ``pos_embed``,
    ``decoder_*``, ``mask_token``); fine-tuned: ``models_convvit.py``'s ``ConvViT`` with
    ``global_pool=True`` (``vision_transformer.py``'s ``ConvViT`` without the fusion convs, its
    ``norm`` deleted, ``fc_norm`` and ``head`` added: ``main_finetune.py``'s default). Our
    modules are named as theirs (:mod:`pixmim.models.convmae`), so both maps are the identity
    plus the container (tests/families/test_convvit_formats.py checks their key list and
    shapes, written from those files). An encoder-only file (the pretraining-only keys all
    absent) imports as the encoder, as the plain-ViT family's do. The released ConvMAE-B
    pretrained file is reported (Alpha-VL/ConvMAE issue #12) to lack the decoder and the
    fusion convs ``stage1/2_output_decode`` too (their ``main_finetune.py`` loads it into
    ``models_convvit.py``'s model, which has none): our pretraining model's probe features
    need those convs, so such a file stops here naming them, never loads random ones.

:func:`to_ours` and :func:`from_ours` are the two entry points, with the plain-ViT family's
signatures, report and :class:`FormatError`: an import is checked against the keys and shapes
of the model it is meant for (built on the meta device), and a checkpoint of another format,
arch or kind is one line naming the missing and unexpected keys.
"""

from __future__ import annotations

from typing import Any

import torch

from pixmim import families
from pixmim.families.convvit.nets import classifier
from pixmim.families.vit.formats import FormatError, _shown, fit_report
from pixmim.models import create_model

__all__ = ["FORMATS", "KINDS", "FormatError", "expected", "from_ours", "to_ours"]

FORMATS = ("convmae",)
KINDS = ("pretrained", "finetuned")
# Where the state dict sits in the checkpoint object (util/misc.py save_model: "model").
_CONTAINER = {"convmae": "model"}


def _check_names(fmt: str, kind: str) -> None:
    if fmt not in FORMATS or kind not in KINDS:
        raise FormatError(f"unknown checkpoint format/kind {fmt!r}/{kind!r}: formats "
                          f"{list(FORMATS)}, kinds {list(KINDS)}")


def _unwrap(obj: Any, fmt: str) -> dict[str, torch.Tensor]:
    box = _CONTAINER[fmt]
    state = obj.get(box) if isinstance(obj, dict) else obj
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        shown = sorted(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
        raise FormatError(f"a {fmt} checkpoint is a dict with {box!r} holding state dict of "
                          f"tensors; got {shown}")
    return state


def expected(method: str, arch: str, kind: str, num_classes: int = 1000,
             img_size: int | None = None) -> dict[str, torch.Size]:
    """Keys and shapes of our ``kind`` of ``method``/``arch`` (the model built on the meta
    device: no memory, no initialisation cost)."""
    _check_names(FORMATS[0], kind)
    with torch.device("meta"):
        model = (create_model(method, arch) if kind == "pretrained" else
                 classifier(families.arch(method, arch), num_classes=num_classes,
                            img_size=img_size))
    return {k: v.shape for k, v in model.state_dict().items()}


def to_ours(checkpoint: Any, fmt: str, kind: str, method: str, arch: str,
            num_classes: int | None = None, img_size: int | None = None
            ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A released checkpoint object (as ``torch.load`` gives it) -> our state dict, report.

    Args:
        checkpoint: the loaded checkpoint in ``fmt``; kind: ``pretrained`` / ``finetuned``.
        method, arch: the model it must fit (keys and shapes checked).
        num_classes: fine-tuned only; None: the checkpoint's head decides.
        img_size: fine-tuned only; the classifier's input (None: the arch's own).

    Returns:
        (state dict, report): the report names the format, ``encoder_only`` and the
        pretraining-only keys ``absent`` from it (``dropped``: always empty here).

    Raises:
        FormatError: one line naming the missing and unexpected keys (a few, then a
            count) and the shapes that differ.
    """
    _check_names(fmt, kind)
    out = dict(_unwrap(checkpoint, fmt))  # the identity map: their names are ours
    if kind == "finetuned" and num_classes is None:
        num_classes = out["head.weight"].shape[0] if "head.weight" in out else 1000
    want = expected(method, arch, kind, num_classes or 1000, img_size)
    return out, fit_report(out, want, fmt, kind, method, arch)


def from_ours(state_dict: dict[str, torch.Tensor], fmt: str, kind: str, method: str,
              encoder_only: bool = False, meta: dict[str, Any] | None = None) -> Any:
    """Our ``kind`` of state dict -> a checkpoint object in ``fmt`` (what ``torch.save``
    writes and ConvMAE's ``main_finetune.py`` / ``--resume`` read: ``{"model": ...}``).

    ``encoder_only`` drops the pretraining-only keys; ``meta`` is accepted for the plain-ViT
    family's signature and not written (the format has no place for it).

    Raises:
        FormatError: a key the format has no name for (the adaptive target's radius: their
            model has none), one line naming them.
    """
    _check_names(fmt, kind)
    if kind == "pretrained" and encoder_only:
        state_dict = {k: v for k, v in state_dict.items()
                      if not k.startswith(families.pretrain_only(method))}
    unnamed = [k for k in state_dict if k.startswith(families.TARGET_ONLY)]
    if unnamed:
        raise FormatError(f"{fmt} {kind} checkpoints have no name for {method}'s keys "
                          f"{_shown(unnamed)}")
    return {_CONTAINER[fmt]: dict(state_dict)}
