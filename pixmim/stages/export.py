"""Export one of our checkpoints in another library's layout: ``python -m pixmim export``.

``export CHECKPOINT --format F --out FILE`` reads a pretraining's ``checkpoint.pth`` or a
fine-tune's ``model.pth`` (their ``meta`` names the method and arch; a fine-tune's also its
``num_classes``), converts its state dict through the method's encoder family
(``formats.from_ours``: the key maps live there) and writes ``FILE`` atomically. Bad input
(not a checkpoint of ours, a format the family does not have, a family with no formats, a
``--kind`` the checkpoint is not) is one line, exit status 2, and nothing written.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch

from pixmim import families
from pixmim.io import WriteError, atomic_write
from pixmim.registry import RegistryError
from pixmim.stages.common import load_model_file

KINDS = ("pretrained", "finetuned")
# what of a checkpoint's meta goes along into the formats that keep one (OpenMMLab's)
_META = ("method", "arch", "img_size", "experiment", "num_classes", "global_pool")


def kind_of(meta: dict[str, Any]) -> str:
    """``finetuned`` for a fine-tune's classifier (its meta names ``num_classes``,
    :func:`pixmim.stages.finetune.run`), else ``pretrained``."""
    return "finetuned" if "num_classes" in meta else "pretrained"


def _ours(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, meta) of a checkpoint of ours; ValueError naming ``path`` otherwise."""
    ckpt = load_model_file(path)
    meta = ckpt.get("meta") if isinstance(ckpt, dict) else None
    if not (isinstance(meta, dict) and isinstance(ckpt.get("model"), dict)
            and {"method", "arch"} <= set(meta)):
        raise ValueError(f"{path}: not a pixmim checkpoint (a pretraining's checkpoint.pth or a "
                         "fine-tune's model.pth: 'model' and a 'meta' naming method and arch)")
    return ckpt["model"], meta


def _formats(method: str):
    """The formats module of ``method``'s encoder family; a family without one says so."""
    family = families.of(method)
    name = f"{families.module_name(family)}.formats"
    if importlib.util.find_spec(name) is None:
        raise RegistryError(f"{method}'s encoder family {family!r} has no checkpoint formats "
                            f"(no module {name}): its checkpoints export to none")
    return families.formats_of(method)


def _tensors(obj: Any) -> dict[str, torch.Tensor]:
    """The state dict inside a converted checkpoint (itself, or its one dict of tensors)."""
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    return next(v for v in obj.values() if isinstance(v, dict) and v
                and all(isinstance(t, torch.Tensor) for t in v.values()))


def export(checkpoint: str | Path, fmt: str, out: str | Path, kind: str | None = None,
           encoder_only: bool = False) -> str:
    """Write ``checkpoint`` (ours) to ``out`` in ``fmt``; returns the line that says what.

    Args:
        kind: ``pretrained`` / ``finetuned``; None: the checkpoint's own. Another kind than
            the checkpoint's is an error (a pretraining has no classifier head).
        encoder_only: pretrained only: leave the pretraining-only keys (the decoder) out.

    Raises:
        ValueError: not a checkpoint of ours, or ``kind`` is not its kind; FormatError (a
            ValueError) from the family: a format it does not have, a key with no name there.
        RegistryError: the method's family has no formats module.
    """
    path = Path(checkpoint)
    state, meta = _ours(path)
    own = kind_of(meta)
    if kind is not None and kind != own:
        raise ValueError(f"{path}: a {own} checkpoint of {meta['method']}/{meta['arch']}, "
                         f"not {kind} (--kind)")
    if encoder_only and own != "pretrained":
        raise ValueError(f"{path}: --encoder-only is for a pretraining, not a {own} checkpoint")
    method = meta["method"]
    converted = _formats(method).from_ours(
        state, fmt, own, method, encoder_only=encoder_only or bool(meta.get("encoder_only")),
        meta={k: meta[k] for k in _META if k in meta})
    atomic_write(out, lambda tmp: torch.save(converted, tmp))
    keys = len(_tensors(converted))
    if own == "finetuned":
        what = f"{meta['num_classes']} classes, global_pool {meta.get('global_pool', 'avg')}"
    else:  # the decoder went along unless only the encoder's keys did
        encoder = sum(not k.startswith(families.pretrain_only(method)) for k in state)
        what = "encoder only" if keys == encoder else "encoder and decoder"
    size = f"{meta['img_size']} px, " if "img_size" in meta else ""
    return f"exported {method}/{meta['arch']} {own} ({size}{what}) as {fmt}: {keys} keys -> {out}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pixmim export",
        description="Write a checkpoint of ours (a pretraining's checkpoint.pth, a "
                    "fine-tune's model.pth) in another library's layout.")
    p.add_argument("checkpoint", help="our checkpoint: <run>/pretrain/checkpoint.pth or "
                                      "<run>/finetune/model.pth")
    p.add_argument("--format", required=True, dest="fmt",
                   help="mae, openmmlab, timm (pretrained or finetuned) or mmseg (pretrained: "
                        "the encoder); a family's formats module says which it has")
    p.add_argument("--kind", choices=KINDS,
                   help="default: the checkpoint's own (a pretraining or a fine-tune)")
    p.add_argument("--encoder-only", action="store_true",
                   help="pretrained: leave the decoder out (timm and mmseg always do)")
    p.add_argument("--out", required=True, help="the file to write (atomically)")
    args = p.parse_args(argv)
    try:
        print(export(args.checkpoint, args.fmt, args.out, args.kind, args.encoder_only))
    except (ValueError, FileNotFoundError, RegistryError, WriteError) as err:
        print(f"pixmim export: error: {err}", file=sys.stderr)
        return 2
    return 0
