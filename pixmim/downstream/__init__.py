"""Dense downstream tasks through OpenMMLab: ADE20K segmentation and COCO detection.

* :mod:`.backbones`: our encoders as dense backbones (torch + timm only; no OpenMMLab).
* :mod:`.mmcv_ext`: a torchvision stand-in for mmcv's compiled ops (NMS, RoIAlign).
* :mod:`.common`: mmengine glue (layer-decay optimizer constructor, configs, Runner).
* :mod:`.seg`, :mod:`.det`: register the backbones in mmseg's / mmdet's registries and
  write the jobs' configs on top of the toolboxes' base configs.

Only :mod:`.common`, :mod:`.seg` and :mod:`.det` import OpenMMLab, and nothing else in the
package imports them, so the rest of PixMIM Bench works without OpenMMLab installed.
"""
