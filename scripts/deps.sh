#!/bin/sh
# Installs the Debian packages spirt needs, only those that are missing.
#
#   scripts/deps.sh           build, test and run dependencies
#   scripts/deps.sh --bench   also the benchmark baselines (PyTorch, NumPy)
#
# Idempotent: when everything is present it prints nothing and needs no root.
# When something is missing it must run as root (it calls apt-get, with one
# `apt-get update` first).
set -eu

# librust-blake3-dev: BLAKE3's reference C sources (built into spirt);
# b3sum: an independent (Rust) BLAKE3 the tests check ours against.
packages="build-essential cmake pkg-config redis-server libhiredis-dev
libopenblas-dev libsodium-dev libjansson-dev zlib1g-dev libssl-dev openssl
dataset-fashion-mnist gnuplot-nox librust-blake3-dev
b3sum"

bench_packages="python3 python3-numpy python3-torch"

for arg in "$@"; do
    case "$arg" in
        --bench) packages="$packages $bench_packages" ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "deps.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

missing=""
for package in $packages; do
    status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
    case "$status" in
        *"install ok installed"*) ;;
        *) missing="$missing $package" ;;
    esac
done

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: missing Debian packages:$missing" >&2
    echo "deps.sh: run as root (or: sudo apt-get install$missing)" >&2
    exit 1
fi

echo "deps.sh: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "deps.sh: apt-get failed (output above)" >&2
    exit 1
fi
