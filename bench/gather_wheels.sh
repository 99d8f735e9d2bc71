#!/usr/bin/env bash
# Before a GPU session, on this machine: the wheels bench/gpu_session.sh installs on the lent machine.
#   bash bench/gather_wheels.sh          # fills .whl/ (git ignores it); then run with carry [".whl"]
# The lent image has its own CUDA torch (2.11.0+cu130 so far) but other versions, or none, of these: the
# versions of this checkout's .venv, and xformers (a 3.3 MB wheel for torch >= 2.10, which the speed
# bench sets against SDPA). --no-deps: the image's torch must stay.
set -eu
cd "$(dirname "$0")/.."
versions=$(.venv/bin/python -c "import app, diffusers, transformers, peft; print(f'diffusers=={diffusers.__version__} transformers=={transformers.__version__} peft=={peft.__version__}')" 2>/dev/null | tail -1)
[ -n "$versions" ] || { echo "gather_wheels: .venv cannot import diffusers, transformers and peft" >&2; exit 1; }
rm -rf .whl && mkdir .whl
# shellcheck disable=SC2086  # the versions are separate words
.venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 \
  -d .whl $versions "xformers==${XFORMERS_VERSION:-0.0.35}" 2>&1 | grep -v "^WARNING: Location" || true
ls -s --block-size=K .whl
