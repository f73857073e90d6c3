"""What a dense job imports from OpenMMLab before its first step, for the warm server
(:data:`pixmim.warm.PRELOAD`) to import once instead of every dense job: ~5 CPU-s a job
(mmseg's model package alone imports mmdet's, ~3 s; measured with cProfile on a segmentation
job forked from the server). Third-party modules only, after the mmcv stand-in that
:func:`pixmim.downstream.common.setup` installs (it must precede ``mmcv.ops``); registering
the families' backbones, which depends on the job's plugins, stays the job's own.

Without OpenMMLab the server says so in its log and the dense jobs import it themselves.
"""

from __future__ import annotations

import importlib

from pixmim.downstream import mmcv_ext

MODULES = ("mmengine.runner", "mmseg.models", "mmseg.datasets", "mmseg.evaluation",
           "mmdet.models", "mmdet.datasets", "mmdet.evaluation")

mmcv_ext.install()
for _name in MODULES:
    importlib.import_module(_name)
