#!/usr/bin/env bash
# Installs what moe-dist needs on a fresh Debian machine and builds it. Safe to run twice:
# it installs only what is missing.
#   scripts/setup.sh            system packages, Python packages for tests/notebooks, release build
#   SETUP_BUILD=debug scripts/setup.sh   debug build instead
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(libopenmpi-dev openmpi-bin libopenblas-dev libhdf5-dev hdf5-tools pkg-config)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Python packages used by the tests (h5py, tokenizers) and the notebooks.
if ! python3 -c "import h5py, tokenizers, pandas, matplotlib, nbconvert, pytest" >/dev/null 2>&1; then
  echo "setup: installing Python packages (notebooks/requirements.txt)"
  python3 -m pip install -q --disable-pip-version-check -r notebooks/requirements.txt
fi

config="${SETUP_BUILD:-release}"
echo "setup: swift build -c $config"
swift build -c "$config" --product moe-dist 2>&1 | grep -Ev '^\[[0-9]+/[0-9]+\]' || true
test -x ".build/$config/moe-dist" || { echo "setup: build failed" >&2; exit 1; }
echo "setup: ready: .build/$config/moe-dist"
