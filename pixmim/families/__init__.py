"""Encoder families: everything a kind of encoder means, one family to a folder.

A pretraining method names its encoder family in its declaration (``family="vit"``); the
family decides how that method's encoder is classified, loaded, fed to the dense tasks and
costed. Nothing outside a family's own folder branches on the family: callers ask the
family (:func:`nets`, :func:`pretrain_flops`, :func:`forward_flops`).

A family is a package with two modules:

``<family>/__init__.py`` (torch-free, read by the budget at DAG time)
    ``pretrain_flops(arch, mask_ratio)`` and ``forward_flops(arch, size, num_classes)``:
    the FLOPs of one image's pretraining step (forward + backward) and of one evaluation
    forward of the encoder, counted from the family's structure (matrix products and
    convolutions, as ``torch.utils.flop_counter`` counts them).
``<family>/nets.py`` (torch)
    ``classifier(arch, ...)`` (fine-tune, robustness), ``load_pretrained(model, state,
    drop, who)`` (the checkpoint key map into it), ``segmentation(cfg, arch, pretrained)``
    and ``detection(cfg, arch, pretrained, channels)`` (the dense backbones as OpenMMLab
    config dicts), ``MODULES`` (the classes those dicts name; the downstream modules
    register them) and the dense backbone classes with their key conversions.

The built-in families are ``pixmim.families.<name>``; a method's ``family`` may also be
the dotted path of a family package of its own (a plugin), e.g. ``mylab.families.swin``.
The linear probe's encoder is the pretraining model itself
(``forward_probe_features``, :class:`pixmim.models.base.MIMBase`).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from pixmim import registry

_CONTRACT = {"__init__": ("pretrain_flops", "forward_flops"),
             "nets": ("classifier", "load_pretrained", "segmentation", "detection", "MODULES"),
             # optional: the released checkpoints' layouts its methods import and export
             "formats": ("FORMATS", "to_ours", "from_ours")}


def module_name(family: str) -> str:
    """The package of ``family``: ``pixmim.families.<name>``, or a dotted path as given."""
    return family if "." in family else f"{__name__}.{family}"


def _load(family: str, part: str) -> ModuleType:
    name = module_name(family) + ("" if part == "__init__" else f".{part}")
    try:
        mod = importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and name.startswith(err.name):
            raise registry.RegistryError(
                f"encoder family {family!r}: no module {name} (a family is a package "
                f"pixmim/families/<name>/ or a dotted plugin path)") from None
        raise
    missing = [a for a in _CONTRACT[part] if not hasattr(mod, a)]
    if missing:
        raise registry.RegistryError(f"encoder family {family!r}: {name} lacks {missing}")
    return mod


def of(method: str) -> str:
    """The encoder family ``method`` declares."""
    return registry.method(method).family


def declaration(family: str) -> ModuleType:
    """A family's torch-free module (its FLOPs)."""
    return _load(family, "__init__")


def nets(family: str) -> ModuleType:
    """A family's torch module (classifier, key maps, dense backbones)."""
    return _load(family, "nets")


def nets_of(method: str) -> ModuleType:
    """The torch module of ``method``'s family."""
    return nets(of(method))


def formats_of(method: str) -> ModuleType:
    """The released-checkpoint formats of ``method``'s family (its ``formats`` module:
    ``FORMATS``, ``to_ours``, ``from_ours``); a family without one is a RegistryError."""
    return _load(of(method), "formats")


def arch(method: str, arch: str) -> dict[str, Any]:
    """The arch table entry ``arch`` of ``method`` (KeyError naming the registered ones)."""
    table = registry.method(method).archs
    if arch not in table:
        raise KeyError(f"unknown arch {arch!r} for method {method!r}; registered: {sorted(table)}")
    return dict(table[arch])


def pretrain_flops(method: str, arch_name: str, mask_ratio: float = 0.75) -> float:
    """FLOPs of one image's pretraining step (forward + backward) of ``method``/``arch``."""
    return declaration(of(method)).pretrain_flops(arch(method, arch_name), mask_ratio)


def forward_flops(method: str, arch_name: str, size: int | None = None,
                  num_classes: int = 0) -> float:
    """FLOPs of one unmasked encoder forward at ``size`` px (None: the arch's own), plus a
    ``num_classes`` linear head when given."""
    return declaration(of(method)).forward_flops(arch(method, arch_name), size, num_classes)


def pretrain_only(method: str) -> tuple[str, ...]:
    """Key prefixes of ``method``'s pretraining-only parameters (its declaration's
    ``pretrain_only`` and the adaptive target's radius), which no downstream model takes."""
    return (*registry.method(method).pretrain_only, *TARGET_ONLY)


# The adaptive target's learnable radius (pixmim.models.base.MIMBase, PixMIM Table 21).
TARGET_ONLY = ("radius_logit",)
