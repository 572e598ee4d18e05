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
# (nftables), iptables/ip6tables (iptables), ipset (ipset) and sysctl
# (procps) build and inspect the network namespaces of those tests.
apt_needed=()
for pair in kill:procps curl:curl chromium:chromium chromedriver:chromium-driver socat:socat \
  ip:iproute2 nft:nftables iptables:iptables ip6tables:iptables ipset:ipset; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || apt_needed+=("${pair#*:}")
done
if [ ${#apt_needed[@]} -gt 0 ]; then
  log "installing Debian packages: ${apt_needed[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${apt_needed[@]}"
fi

# The SSO tests run a real OpenID Connect provider (npm oidc-provider,
# pinned by its package-lock.json). `npm ci` only when the lock file is
# newer than the installed tree, so repeated runs do not reinstall.
oidc_dir=crates/ajar/tests/oidc-provider
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  log "installing Node.js for the OIDC provider the SSO tests use"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm
fi
if [ ! -f "$oidc_dir/node_modules/.package-lock.json" ] || [ "$oidc_dir/package-lock.json" -nt "$oidc_dir/node_modules/.package-lock.json" ]; then
  log "npm ci in $oidc_dir"
  (cd "$oidc_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust (https://rustup.rs) and run this again" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

# --- PostgreSQL -------------------------------------------------------------
# A throwaway cluster of our own on 127.0.0.1 (never the distro's), started
# once and reused by later runs on the same machine. PostgreSQL refuses to
# run as root, so it runs as the postgres user.
PG_PORT=${AJAR_PG_PORT:-54329}
PG_DIR=${AJAR_PG_DIR:-/tmp/ajar-pg}
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$pg_bin" ]; then
  log "installing PostgreSQL"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postgresql
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
if ! "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  install -d -o postgres -g postgres "$PG_DIR"
  if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
    runuser -u postgres -- "$pg_bin/initdb" -D "$PG_DIR/data" -A trust -U postgres --no-sync -E UTF8 >/dev/null
  fi
  runuser -u postgres -- "$pg_bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/data/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR/data -c fsync=off -c max_connections=400" start >/dev/null
fi
export AJAR_TEST_POSTGRES="postgres://postgres@127.0.0.1:$PG_PORT"

# --- AWS API emulator -------------------------------------------------------
# The AWS driver tests talk to moto server (pinned), installed into its own
# virtualenv and started once on 127.0.0.1; later runs reuse both.
MOTO_PORT=${AJAR_MOTO_PORT:-5055}
MOTO_VENV=${AJAR_MOTO_VENV:-/var/tmp/ajar-moto-venv}
MOTO_VERSION=5.2.5
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  log "installing Python 3 with venv for the AWS emulator"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3 python3-venv
fi
if ! "$MOTO_VENV/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" >/dev/null 2>&1; then
  log "installing moto[server]==$MOTO_VERSION into $MOTO_VENV"
  python3 -m venv "$MOTO_VENV"
  "$MOTO_VENV/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi
if ! curl -fsS -o /dev/null "http://127.0.0.1:$MOTO_PORT/moto-api/" 2>/dev/null; then
  log "starting moto server on 127.0.0.1:$MOTO_PORT"
  nohup "$MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >/tmp/ajar-moto.log 2>&1 &
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$MOTO_PORT/moto-api/" 2>/dev/null && break
    sleep 0.2
  done
  curl -fsS -o /dev/null "http://127.0.0.1:$MOTO_PORT/moto-api/" || { echo "moto server did not start; see /tmp/ajar-moto.log" >&2; exit 1; }
fi
export AJAR_TEST_MOTO="http://127.0.0.1:$MOTO_PORT"

# --- checks -----------------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "building"
cargo build --workspace --all-targets --locked

log "tests (SQLite; the store suite also on PostgreSQL)"
cargo nextest run --workspace --locked --profile ci "$@"

log "black-box tests again, every server on PostgreSQL"
AJAR_TEST_BACKEND=postgres cargo nextest run -p ajar --locked --profile ci -E "not binary(nftables) and not binary(iptables)" "$@"
