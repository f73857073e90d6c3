#!/usr/bin/env bash
# Build and install the compiled mmcv 2.1.0 (all CPU ops; CUDA ops with FORCE_CUDA=1) into
# the project's venv, replacing the torchvision stand-in of mmcv._ext. Optional: the default
# environment (mmcv-lite + pixmim.downstream.mmcv_ext) runs UperNet and Mask R-CNN as is.
#   make mmcv-full            (about 25 CPU-minutes on 2 cores; needs g++)
# torch 2.14's headers need C++20 while mmcv's setup.py asks for -std=c++17: patched in a
# scratch copy of the sdist (its pkg_resources import works: requirements pin setuptools<81).
# The build runs without isolation (with isolation it "succeeds" without mmcv._ext).
set -euo pipefail
VENV=${VENV:-.venv}
PY="$(cd "$VENV" && pwd)/bin/python"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PY" -m pip download --no-deps --no-binary :all: --no-build-isolation -d "$WORK" mmcv==2.1.0
tar -xzf "$WORK"/mmcv-2.1.0.tar.gz -C "$WORK"
SRC="$WORK/mmcv-2.1.0"
sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
grep -q "c++20" "$SRC/setup.py" || { echo "build_mmcv: could not patch the C++ standard" >&2; exit 1; }
cd "$SRC"
MMCV_WITH_OPS=1 FORCE_CUDA=${FORCE_CUDA:-0} MAX_JOBS=${MAX_JOBS:-2} \
    "$PY" -m pip wheel --no-deps --no-build-isolation -w "$WORK/wheel" .
cd "$OLDPWD"
"$PY" -m pip uninstall -y mmcv-lite
"$PY" -m pip install --no-deps "$WORK"/wheel/mmcv-*.whl
"$PY" -c "import importlib.util as u; assert u.find_spec('mmcv._ext'), 'no mmcv._ext'; print('mmcv._ext: compiled')"
