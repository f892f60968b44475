#!/usr/bin/env bash
# Installs the Debian packages corokv needs to build, test and benchmark.
# Idempotent: packages already present are skipped, and `apt-get update` runs
# at most once per invocation (only when something is missing).
set -euo pipefail

packages=(
  g++ cmake ninja-build pkg-config ccache
  libboost1.81-dev libfmt-dev nlohmann-json3-dev doctest-dev
  meson
  liburing-dev libibverbs-dev
  clang libclang-rt-14-dev
  redis-server libhiredis-dev
  pybind11-dev python3-dev python3-numpy python3-pytest python3-venv python3-mesonpy
  etcd-server iproute2
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if ((${#missing[@]})); then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -q
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
