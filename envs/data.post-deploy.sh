#!/usr/bin/env bash
# Run by Snakemake in the new env (--sdm conda) after creating it from data.yaml.
# Without their declared dependencies: imagecorruptions-imaug names the GUI build of OpenCV
# (opencv-python-headless, in data.yaml, provides cv2); timm would pull torch, and the data
# rules only read its ImageNet class list files. Versions: requirements.lock.
set -euo pipefail
python -m pip install --no-deps imagecorruptions-imaug==1.1.5 timm==1.0.31
