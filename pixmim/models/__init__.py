"""Model registry: ``create_model(method, arch, **kwargs)``.

Each method is one module of this package (or a plugin's) holding its class, declared as
plain data in :mod:`pixmim.methods` (or the plugin's declaring module): name, class, encoder
family (:mod:`pixmim.families`), arch table and pretraining-only parameters. PixMIM is not a
method: it is the target/crop variant of any method, passed as keyword arguments
(``target="lowpass", radius=40``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pixmim import families, registry

if TYPE_CHECKING:  # the registry itself imports no torch (the workflow reads the archs)
    import torch.nn as nn

def method_class(method: str) -> type[nn.Module]:
    return registry.model_class(method)


def archs(method: str) -> dict[str, dict[str, Any]]:
    """The architectures registered for ``method``."""
    return registry.method(method).archs


def create_model(method: str, arch: str, **kwargs: Any) -> nn.Module:
    """Build a pretraining model.

    Args:
        method: a registered method (``mae``, ``mff``, ``convmae``, ``lsmae``, plugins).
        arch: an architecture of that method (``archs(method)``), e.g.
            ``vit_cpu_patch8_64`` or ``vit_base_patch16_224``.
        **kwargs: model options overriding the arch defaults (``mask_ratio``,
            ``target``, ``radius``, ``lowpass_mode``, ``norm_pix_loss``, ...).

    Returns:
        A module whose ``forward(imgs, noise=None)`` returns ``(loss, pred, mask)``.
    """
    return method_class(method)(**{**families.arch(method, arch), **kwargs})
