"""Dense downstream tasks through OpenMMLab: ADE20K segmentation and COCO detection.

* :mod:`.backbones`: what every family's dense backbones share (checkpoint loading with
  exact key checks; torch + timm only, no OpenMMLab); the backbones live with their
  encoder family (``pixmim/families/<family>/nets.py``).
* :mod:`.mmcv_ext`: a torchvision stand-in for mmcv's compiled ops (NMS, RoIAlign).
* :mod:`.common`: mmengine glue (layer-decay optimizer constructor, configs, Runner).
* :mod:`.seg`, :mod:`.det`: register each family's backbones in mmseg's / mmdet's registries and
  write the jobs' configs on top of the toolboxes' base configs.

Only :mod:`.common`, :mod:`.seg` and :mod:`.det` import OpenMMLab, and nothing else in the
package imports them, so the rest of PixMIM Bench works without OpenMMLab installed.
"""
