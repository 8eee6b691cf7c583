#!/usr/bin/env bash
# The GPU tests on a software GPU: ggml's Vulkan backend over Mesa's lavapipe (a Vulkan device that
# runs on the CPU), so every offload path (-ngl, the KV cache and output head on the device, the vision
# tower on the device, buffer placement, the scheduler's copies) runs in CI on a machine with no GPU.
#
#   bash scripts/vulkan-ci.sh [pytest args...]     # default: tests/test_gpu.py, in two passes (below)
#
# What it needs, all from Debian's packages (root; .ci/run runs it after the main suite):
#   - glslc and spirv-headers (bookworm): ggml compiles its compute shaders to SPIR-V at build time;
#   - Mesa 25's lavapipe (mesa-vulkan-drivers from bookworm-backports): bookworm's Mesa 22 corrupts
#     the heap in ggml's op tests and crashes inside lavapipe on the vision graphs;
#   - Vulkan headers newer than bookworm's 1.3.239 (ggml-vulkan uses newer structs): trixie's
#     libvulkan-dev, downloaded (not installed) and unpacked into the build dir; the loader and the
#     link library stay bookworm's.
# Both extra suites go through private apt lists in the build dir; the system's sources are not changed.
#
# The extension is built into its own venv and build dir (build/vulkan, or $AUTOGLM_VULKAN_DIR), so a
# second run rebuilds nothing; Mesa's shader cache is per user (below). GGML_VK_VISIBLE_DEVICES=0 is needed:
# without it ggml's Vulkan backend skips CPU-type devices such as lavapipe and the tests would run on
# the CPU. AUTOGLM_REQUIRE_GPU=1 turns test_gpu.py's "no GPU" skips into failures, so this script
# cannot pass without having run on the device.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
work="${AUTOGLM_VULKAN_DIR:-$repo/build/vulkan}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
start=$(date +%s)
say() { echo "vulkan-ci: $*"; }

# --- system packages -------------------------------------------------------------------------------
# The Debian mirror this machine already uses (its deb822 or one-line sources); no host is named here.
debian_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '/^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ {print u; exit}' "$f"
  done | head -n1
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' "$f"
  done | head -n1
}

# apt with an extra suite in a private source list and private package lists (under $work/apt).
private_apt() {  # private_apt NAME SUITE apt-get-args...
  local name="$1" suite="$2"; shift 2
  local dir="$work/apt/$name"
  mkdir -p "$dir/lists/partial"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' "$mirror" "$suite" > "$dir/sources.list"
  apt-get -q -o Dir::Etc::SourceList="$dir/sources.list" -o Dir::Etc::SourceParts=/dev/null \
      -o Dir::State::Lists="$dir/lists" "$@"
}

lavapipe_version() {  # the installed mesa-vulkan-drivers version, or nothing
  dpkg-query -W -f='${Status} ${Version}\n' mesa-vulkan-drivers 2>/dev/null | awk '/install ok installed/ {print $4}'
}

headers="$work/vulkan-headers"
if command -v glslc >/dev/null && [ -f /usr/include/spirv/unified1/spirv.hpp ] && [ -e /usr/lib/x86_64-linux-gnu/libvulkan.so ] \
   && dpkg --compare-versions "$(lavapipe_version)" ge 25 2>/dev/null && [ -f "$headers/usr/include/vulkan/vulkan_core.h" ]; then
  say "system packages already present (Mesa $(lavapipe_version))"
else
  if [ "$(id -u)" -ne 0 ]; then
    echo "vulkan-ci: installing glslc, spirv-headers and Mesa's lavapipe needs root (apt-get)" >&2
    exit 1
  fi
  mirror="$(debian_mirror)"
  if [ -z "$mirror" ]; then
    echo "vulkan-ci: no Debian bookworm source in /etc/apt; this script expects a Debian 12 machine" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  say "installing glslc, spirv-headers, the Vulkan loader (bookworm) and Mesa 25 (bookworm-backports)"
  apt-get -q update >/dev/null
  apt-get -q install -y --no-install-recommends glslc spirv-headers libvulkan1 libvulkan-dev >/dev/null
  private_apt backports bookworm-backports update >/dev/null
  private_apt backports bookworm-backports install -y --no-install-recommends -t bookworm-backports \
      mesa-vulkan-drivers >/dev/null
  say "Mesa $(lavapipe_version) installed; unpacking trixie's Vulkan headers into $headers"
  private_apt trixie trixie update >/dev/null
  rm -rf "$work/apt/debs" "$headers"
  mkdir -p "$work/apt/debs"
  (cd "$work/apt/debs" && private_apt trixie trixie -o APT::Sandbox::User=root download libvulkan-dev >/dev/null)
  dpkg -x "$work/apt/debs"/libvulkan-dev_*.deb "$headers"
fi

# --- the Vulkan build of the extension -----------------------------------------------------------------
if [ ! -x "$work/venv/bin/python" ]; then
  python3 -m venv "$work/venv"
fi
# shellcheck disable=SC1091
source "$work/venv/bin/activate"
export PIP_CACHE_DIR="$work/pip-cache"
export AUTOGLM_GGML_CACHE="$work/ggml-cache"
export SKBUILD_BUILD_DIR="$work/build"
# Lavapipe JIT-compiles each of ggml's shader variants on first use (seconds to minutes each with LLVM
# 15; ~25 min for these tests with an empty cache on 2 cores). Mesa caches the result by shader and
# driver build, so one per-user cache serves every build dir, as the pinned ggml sdist's cache does.
export MESA_SHADER_CACHE_DIR="${MESA_SHADER_CACHE_DIR:-$HOME/.cache/autoglm-gguf/mesa-shader-cache}"
mkdir -p "$MESA_SHADER_CACHE_DIR"
export GGML_VK_VISIBLE_DEVICES="${GGML_VK_VISIBLE_DEVICES:-0}"
export AUTOGLM_REQUIRE_GPU=1
pip install -q --upgrade pip
pip install -q scikit-build-core pybind11 "pip>=23" pytest
# One statically linked CPU backend here (AUTOGLM_CPU_VARIANTS=OFF): the main suite tests the per-ISA
# modules, this build keeps the static configuration (the C library's) tested, and it builds 10 minutes faster.
say "building the extension with -DGGML_VULKAN=ON into $SKBUILD_BUILD_DIR"
build_start=$(date +%s)
CMAKE_ARGS="-DGGML_VULKAN=ON -DGGML_NATIVE=OFF -DAUTOGLM_CPU_VARIANTS=OFF -DVulkan_INCLUDE_DIR=$headers/usr/include" \
    pip install -q --no-build-isolation .
say "build: $(( $(date +%s) - build_start )) s"
python -c "from autoglm_gguf import _core; print('vulkan-ci: backends', _core.backends()); [print('vulkan-ci: device', d) for d in _core.devices()]"

# Two passes: ggml's default precision (what users run: F16 matmul tiles on devices with F16), then
# the F32 files again with GGML_VK_DISABLE_F16=1, where the GPU must match the CPU to F32 rounding and
# give identical greedy tokens (tests/test_gpu.py states both sets of bounds).
if [ $# -gt 0 ]; then
  python -m pytest -p no:cacheprovider "$@"
else
  export AUTOGLM_GPU_REPORT="$work/gpu-parity.jsonl"
  rm -f "$AUTOGLM_GPU_REPORT"
  python -m pytest -p no:cacheprovider tests/test_gpu.py -q
  python scripts/gpu_parity_table.py "$AUTOGLM_GPU_REPORT"
  export AUTOGLM_GPU_REPORT="$work/gpu-parity-strict.jsonl"
  rm -f "$AUTOGLM_GPU_REPORT"
  GGML_VK_DISABLE_F16=1 python -m pytest -p no:cacheprovider tests/test_gpu.py -q \
      -k "(text_logits and f32) or decode or (image_embeddings and f32) or image_prompt"
  python scripts/gpu_parity_table.py "$AUTOGLM_GPU_REPORT"
fi
say "done in $(( $(date +%s) - start )) s"
