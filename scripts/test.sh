#!/usr/bin/env bash
# Runs ajar's whole test suite on a fresh Debian machine: installs whatever
# the tests need that is missing, then checks formatting, lints, and runs
# every test (unit, property and black-box integration) with nextest.
#
#   ./scripts/test.sh            # everything
#   ./scripts/test.sh -E 'test(expiry)'   # extra arguments go to nextest
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# --- what the tests need ----------------------------------------------------
# Debian packages the tests use, as "command:package" pairs. procps gives
# `kill` (signals to the server under test); chromium and chromium-driver
# run the portal's browser tests; socat is ajar-bench's forwarder baseline
# and the kernel-driver tests' TCP client and server; ip (iproute2), nft
# (nftables) and sysctl (procps) build and inspect the network
# namespaces of those tests.
apt_needed=()
for pair in kill:procps curl:curl chromium:chromium chromedriver:chromium-driver socat:socat \
  ip:iproute2 nft:nftables; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || apt_needed+=("${pair#*:}")
done
if [ ${#apt_needed[@]} -gt 0 ]; then
  log "installing Debian packages: ${apt_needed[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${apt_needed[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust (https://rustup.rs) and run this again" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

# --- checks -----------------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "building"
cargo build --workspace --all-targets --locked

log "tests"
cargo nextest run --workspace --locked --profile ci "$@"
