#!/usr/bin/env bash
# Installs the Debian 12 packages tessera builds and tests with, skipping what is already there.
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config ccache git unzip
      libopenmpi-dev openmpi-bin libhdf5-dev libboost-program-options-dev
      libgtest-dev libgmock-dev nlohmann-json3-dev libcpp-httplib-dev libopenblas-dev
      python3 python3-venv python3-pip procps slurm-wlm munge curl iproute2 ethtool)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "tessera: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
