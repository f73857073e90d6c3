"""The package works, and imports fast, without OpenMMLab; the dense stages say what is missing."""

from __future__ import annotations

import subprocess
import sys

# Block OpenMMLab imports in a child interpreter, as on a machine without it.
BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("mmengine", "mmcv", "mmseg", "mmdet"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Block())
"""


def child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True,
                          timeout=120)


def test_package_without_openmmlab():
    res = child("""
import pixmim, pixmim.workflow, pixmim.config, pixmim.downstream.backbones
import pixmim.stages.segment_ade20k, pixmim.stages.detect_coco, pixmim.stages.pretrain
from pixmim.families.vit.nets import SegViT
SegViT("mae", "vit_cpu_patch8_64", img_size=64)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("mmengine", "mmcv", "mmseg", "mmdet")))
""")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]"


def test_dense_stage_names_the_missing_package():
    res = child("""
from pixmim.stages.dense import import_task
try:
    import_task("pixmim.downstream.seg")
except ValueError as e:
    print(e)
""")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "need OpenMMLab, and 'mm" in res.stdout and "make env" in res.stdout


def test_workflow_helpers_import_no_torch():
    res = subprocess.run([sys.executable, "-c", "import sys, pixmim.workflow, pixmim.config; "
                          "print('torch' in sys.modules, 'mmengine' in sys.modules)"],
                         capture_output=True, text=True, timeout=60)
    assert res.stdout.split() == ["False", "False"], res.stderr[-2000:]
