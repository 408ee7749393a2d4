#!/usr/bin/env bash
# Wheels for the lent GPU machine (one H200, Python 3.12, no network there) into wheels/ (git-ignored: never
# commit them). See BENCHMARKS.md, section "GPU", for the command that uses them.
#
#   bash scripts/fetch_gpu_wheels.sh              # flax==0.12.8 (0.5 MB): the machine's image already has jax
#                                                 # 0.11.2 with its CUDA 13 plugin, inside our jax>=0.10,<0.13
#   bash scripts/fetch_gpu_wheels.sh --jax-cuda12 # also jax, jaxlib, jax-cuda12-plugin, jax-cuda12-pjrt ==0.10.2
#                                                 # (about 270 MB, over the 64 MiB a device call carries, and they
#                                                 # need the CUDA 12 library wheels, which the image lacks)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
pkgs=("flax==0.12.8")
case "${1:-}" in
  "") ;;
  --jax-cuda12) pkgs+=("jax==0.10.2" "jaxlib==0.10.2" "jax-cuda12-plugin==0.10.2" "jax-cuda12-pjrt==0.10.2") ;;
  *) echo "usage: $0 [--jax-cuda12]; got '$1'" >&2; exit 2 ;;
esac
mkdir -p wheels
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d wheels "${pkgs[@]}"
du -ch wheels/*.whl | tail -1
