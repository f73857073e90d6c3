"""A stand-in for mmcv's compiled ``mmcv._ext`` on top of torchvision's kernels.

mmsegmentation 1.2.2 and mmdet 3.3.0 import ``mmcv.ops`` at model-import time, and
``mmcv.ops`` loads the compiled extension ``mmcv._ext``, which ``mmcv-lite`` (the
compiler-free wheel) does not ship. The two ops that UperNet and Mask R-CNN actually call
are NMS and RoIAlign; torchvision ships both, on CPU and CUDA, with the same semantics
(``aligned``, ``sampling_ratio``; IoU threshold with offset 0). Every other op of the
extension raises ``NotImplementedError`` when called (never at import), naming the op and
the way out (``make mmcv-full`` builds the compiled mmcv).

:func:`install` registers the stand-in as ``mmcv._ext`` unless a compiled extension is
importable, in which case it does nothing. It must run before anything imports
``mmcv.ops``; :func:`pixmim.downstream.common.setup` calls it.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision.*)

_NAME = "mmcv._ext"
_NO_MAX = "mmcv._ext stand-in: RoIAlign max pooling needs the compiled mmcv (make mmcv-full)"


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, offset: int = 0):
    """mmcv's ``nms`` kernel: indices kept, by decreasing score (torchvision semantics)."""
    if offset != 0:
        raise NotImplementedError("mmcv._ext stand-in: nms with offset=1 needs the compiled mmcv")
    return torch.ops.torchvision.nms(boxes, scores, float(iou_threshold))


def roi_align_forward(input, rois, output, argmax_y, argmax_x, aligned_height, aligned_width,
                      spatial_scale, sampling_ratio, pool_mode, aligned):
    """mmcv's in-place RoIAlign forward (average mode) through torchvision's kernel."""
    if pool_mode != 1:
        raise NotImplementedError(_NO_MAX)
    output.copy_(torch.ops.torchvision.roi_align(
        input, rois, float(spatial_scale), int(aligned_height), int(aligned_width),
        int(sampling_ratio), bool(aligned)))


def roi_align_backward(grad_output, rois, argmax_y, argmax_x, grad_input, aligned_height,
                       aligned_width, spatial_scale, sampling_ratio, pool_mode, aligned):
    """mmcv's in-place RoIAlign backward (average mode) through torchvision's kernel."""
    if pool_mode != 1:
        raise NotImplementedError(_NO_MAX)
    b, c, h, w = grad_input.shape
    grad_input.copy_(torch.ops.torchvision._roi_align_backward(
        grad_output, rois, float(spatial_scale), int(aligned_height), int(aligned_width),
        b, c, h, w, int(sampling_ratio), bool(aligned)))


def _missing(name: str):
    def op(*args, **kwargs):
        raise NotImplementedError(
            f"mmcv op {name!r} is not available: mmcv-lite ships no compiled ops and the "
            "torchvision stand-in covers nms and roi_align only; build the compiled mmcv "
            "with `make mmcv-full`")
    op.__name__ = name
    return op


def _module() -> types.ModuleType:
    mod = types.ModuleType(_NAME, __doc__)
    # A real spec: mmengine's revert_sync_batchnorm inspects module specs.
    mod.__spec__ = importlib.machinery.ModuleSpec(_NAME, None)
    mod.__file__ = __file__
    mod.nms = nms
    mod.roi_align_forward = roi_align_forward
    mod.roi_align_backward = roi_align_backward
    def missing_op(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _missing(name)

    mod.__getattr__ = missing_op
    mod.PIXMIM_STANDIN = True
    return mod


def compiled_available() -> bool:
    """True when a compiled ``mmcv._ext`` is importable (then the stand-in is not used)."""
    if isinstance(sys.modules.get(_NAME), types.ModuleType) and not getattr(
            sys.modules[_NAME], "PIXMIM_STANDIN", False):
        return True
    try:
        return importlib.util.find_spec(_NAME) is not None
    except (ImportError, ValueError):
        return False


def install() -> bool:
    """Register the stand-in as ``mmcv._ext`` unless a compiled one exists; True if installed."""
    if _NAME in sys.modules:
        return getattr(sys.modules[_NAME], "PIXMIM_STANDIN", False)
    if compiled_available():
        return False
    sys.modules[_NAME] = _module()
    return True
