#!/usr/bin/env bash
# bench/gpu.sh: the GPU benchmark in one command: build tempo with the Vulkan
# backend, write 1B- and 3B-shaped random-weight GGUF files (F16, Q4_0), and
# print decode tokens/s and TEMPO steps/s at widths 1, 2, 4, 8, 16 against the
# device's memory-bandwidth roofline, with issue 13's targets (H100/H200).
# About 2 minutes on an H200 (123 s measured; most of it writing the files).
#
#   bench/gpu.sh                       # the best hardware GPU
#   bench/gpu.sh --device gpu:1        # a given Vulkan device (see build/tempo devices)
#   bench/gpu.sh --tiny --device gpu:0 # a 2-layer model in seconds, e.g. on lavapipe
# Other options: --shapes 1b,3b  --types f16,q4_0  --steps N  --dir DIR  --keep
#   --profile (GPU timestamps after every dispatch: where a step's time goes, per width)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! pkg-config --exists vulkan 2>/dev/null || ! command -v glslc >/dev/null 2>&1; then
  echo "bench/gpu.sh needs the Vulkan headers and glslc: apt-get install libvulkan-dev glslc" >&2
  exit 1
fi
make -j"$(nproc)" VULKAN=1 build/tempo build/gpu_bench >/dev/null
build/tempo devices
echo
exec build/gpu_bench "$@"
