#!/usr/bin/env bash
# Run by Snakemake in the new env (--sdm conda) after creating it from dense.yaml.
# Without their declared dependencies: both name the GUI build of OpenCV
# (opencv-python-headless, in dense.yaml, provides cv2); the others are in dense.yaml.
# Versions: requirements.lock.
set -euo pipefail
python -m pip install --no-deps mmengine==0.10.7 mmcv-lite==2.1.0
