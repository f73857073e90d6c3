"""The real datasets' on-disk layouts: folder and file names the project's loaders read.

Declared once, for the root check at DAG build (:mod:`pixmim.workflow.roots`) and the
fixture generator (:mod:`pixmim.data.generate.fixtures`); imports nothing.
"""

from __future__ import annotations

# the image files torchvision's ImageFolder lists (torchvision.datasets.folder.IMG_EXTENSIONS)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IMAGENET_SPLITS = ("train", "val")  # ImageFolder layout: <split>/<wnid>/*.JPEG
ADE20K_SPLITS = ("training", "validation")  # ADEChallengeData2016/{images,annotations}/<split>
COCO_SPLITS = ("train2017", "val2017")
COCO_ANN = "annotations/instances_{}.json"  # {} = train2017 | val2017

