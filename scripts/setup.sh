#!/usr/bin/env bash
# Sets owlet up on a fresh Debian/Ubuntu machine: the system libraries the native addon links (OpenBLAS, gloo) when
# they are missing, then `npm ci`, which builds the addon(s) with cmake-js.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
dpkg -s libopenblas-dev >/dev/null 2>&1 || need+=(libopenblas-dev)
dpkg -s libgloo-dev >/dev/null 2>&1 || need+=(libgloo-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
npm ci --no-audit --no-fund
