#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Start one Directus in the background on 127.0.0.1:$DIRECTUS_PORT with WebSockets on, wait
# until it is healthy, write its pid file and $DIRECTUS_HOME/connection-$DIRECTUS_PORT.env.
# Needs install.sh first. Idempotent when the instance already runs with the same knobs.
#
#   scripts/directus/start.sh
#   DIRECTUS_PORT=8056 DIRECTUS_HEARTBEAT_PERIOD=3 DIRECTUS_ACCESS_TOKEN_TTL=15s \
#     WEBSOCKETS_REST_AUTH_TIMEOUT=5 scripts/directus/start.sh
#   DIRECTUS_PORT=8057 DIRECTUS_WS_AUTH=strict scripts/directus/start.sh
#
# Knobs: DIRECTUS_WS_AUTH (handshake|public|strict), DIRECTUS_HEARTBEAT_PERIOD (seconds|off),
# DIRECTUS_ACCESS_TOKEN_TTL, WEBSOCKETS_REST_AUTH_TIMEOUT, LOG_LEVEL; any other Directus variable
# in the environment is passed through. DIRECTUS_DB_NAME (default port-$DIRECTUS_PORT) selects the
# SQLite database; a new one is a copy of the seeded template. DIRECTUS_FRESH_DB=1 replaces the
# database with a fresh copy first; DIRECTUS_RESEED=1 runs seed.mjs again after the start.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
. "$HERE/env.sh"

TIMEOUT="${START_TIMEOUT:-120}"
is_installed || die "Directus is not installed in $DIRECTUS_HOME; run $HERE/install.sh"
directus_env
mkdir -p "$RUN_DIR"

# Knobs of this start, saved for restart.sh and compared when the instance already runs.
# Besides the scripts' own knobs, Directus variables with these prefixes are recorded.
PASS_THROUGH_RE='^(WEBSOCKETS_|RATE_LIMITER_|PRESSURE_LIMITER_|ACCESS_TOKEN_|REFRESH_TOKEN_|SESSION_|CACHE_|CORS_|GRAPHQL_|QUERY_|MAX_|LOG_|AUTH_|USER_|EMAIL_|ASSETS_|FILES_|FLOWS_|EXTENSIONS_)'
knobs() {
  local v
  for v in DIRECTUS_DB_NAME DIRECTUS_WS_AUTH DIRECTUS_HEARTBEAT_PERIOD DIRECTUS_ACCESS_TOKEN_TTL \
           WEBSOCKETS_REST_AUTH_TIMEOUT; do
    printf 'export %s=%q\n' "$v" "${!v}"
  done
  for v in $(compgen -e | grep -E "$PASS_THROUGH_RE" | sort); do
    case "$v" in WEBSOCKETS_REST_AUTH|WEBSOCKETS_REST_AUTH_TIMEOUT|WEBSOCKETS_ENABLED|WEBSOCKETS_REST_ENABLED|\
                 WEBSOCKETS_HEARTBEAT_ENABLED|WEBSOCKETS_HEARTBEAT_PERIOD|ACCESS_TOKEN_TTL|EXTENSIONS_PATH) continue ;;
    esac
    printf 'export %s=%q\n' "$v" "${!v}"
  done
}

# health: /server/health is 403 for anonymous callers in Directus 12, so ask as the admin
# (static token; before the first seed the token may not exist yet, then log in).
health_as() {
  local out
  out="$(curl -fsS -m 5 -H "Authorization: Bearer $1" "$SERVER_URL/server/health" 2>/dev/null)" || return 1
  [[ "$out" == *'"status":"ok"'* ]]
}
health() {
  local tok
  health_as "$ADMIN_TOKEN" && return 0
  tok="$(node -e 'console.log(JSON.stringify({email: process.env.ADMIN_EMAIL, password: process.env.ADMIN_PASSWORD}))' \
         | curl -fsS -m 5 -H 'Content-Type: application/json' --data-binary @- "$SERVER_URL/auth/login" 2>/dev/null \
         | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')" || return 1
  [ -n "$tok" ] && health_as "$tok"
}

write_conn_file() {
  [ "${DIRECTUS_NO_CONN_FILE:-0}" = 1 ] && return 0
  {
    echo "# Directus $DIRECTUS_VERSION on port $DIRECTUS_PORT (scripts/directus/start.sh, $(date -Is)). Source it."
    printf 'export %s=%q\n' \
      DIRECTUS_URL "$SERVER_URL" \
      DIRECTUS_WS_URL "ws://127.0.0.1:$DIRECTUS_PORT/websocket" \
      DIRECTUS_ADMIN_TOKEN "$ADMIN_TOKEN" \
      DIRECTUS_ADMIN_EMAIL "$ADMIN_EMAIL" \
      DIRECTUS_ADMIN_PASSWORD "$ADMIN_PASSWORD" \
      DIRECTUS_READER_TOKEN "$READER_TOKEN" \
      DIRECTUS_READER_EMAIL "$READER_EMAIL" \
      DIRECTUS_READER_PASSWORD "$READER_PASSWORD" \
      DIRECTUS_SERVER_WS_AUTH "$DIRECTUS_WS_AUTH" \
      DIRECTUS_SERVER_HEARTBEAT_PERIOD "$DIRECTUS_HEARTBEAT_PERIOD" \
      DIRECTUS_SERVER_ACCESS_TOKEN_TTL "$DIRECTUS_ACCESS_TOKEN_TTL" \
      DIRECTUS_SERVER_AUTH_TIMEOUT "$WEBSOCKETS_REST_AUTH_TIMEOUT" \
      DIRECTUS_SERVER_PID "$1" \
      DIRECTUS_SERVER_LOG "$LOG_FILE"
  } > "$CONN_FILE.tmp"
  mv "$CONN_FILE.tmp" "$CONN_FILE"
}

# Already running? -------------------------------------------------------------------------------
if [ -f "$PID_FILE" ] && pid_alive "$(cat "$PID_FILE")"; then
  PID="$(cat "$PID_FILE")"
  if ! cmp -s <(knobs) "$KNOBS_FILE"; then
    die "port $DIRECTUS_PORT already runs Directus (pid $PID) with other settings; use restart.sh or stop.sh first"
  fi
  health || die "pid $PID runs but is not healthy; see $LOG_FILE"
  write_conn_file "$PID"
  log "already running (pid $PID) at $SERVER_URL"
  echo "$SERVER_URL"
  exit 0
fi
rm -f "$PID_FILE"
port_open "$DIRECTUS_PORT" && die "127.0.0.1:$DIRECTUS_PORT is already in use by another process;" \
  "choose other ports: DIRECTUS_PORT for start.sh, DIRECTUS_CI_PORT_BASE for ci.sh and scripts/test.sh" \
  "(five consecutive ports from it, default 8055)"

# Database -----------------------------------------------------------------------------------------
mkdir -p "$DB_DIR/uploads" "$DATA_DIR/extensions"
exec 8> "$DB_DIR/.lock"
flock -w 120 8 || die "database $DIRECTUS_DB_NAME is locked by another start.sh"
if [ "${DIRECTUS_FRESH_DB:-0}" = 1 ]; then
  for f in "$RUN_DIR"/directus-*.pid; do   # don't pull the database from under another instance
    if [ -f "$f" ] && pid_alive "$(cat "$f")" \
       && grep -qxF "DB_FILENAME=$DB_FILE" < <(tr '\0' '\n' < "/proc/$(cat "$f")/environ"); then
      die "DIRECTUS_FRESH_DB=1, but pid $(cat "$f") uses $DB_FILE"
    fi
  done
  rm -f "$DB_FILE" "$DB_FILE-wal" "$DB_FILE-shm" "$DB_DIR/.seeded"
fi
TEMPLATE_DB="$DATA_DIR/$TEMPLATE_NAME/directus.db"
if [ ! -f "$DB_FILE" ]; then
  if [ "$DIRECTUS_DB_NAME" != "$TEMPLATE_NAME" ] && [ -f "$DATA_DIR/$TEMPLATE_NAME/.seeded" ]; then
    cp "$TEMPLATE_DB" "$DB_FILE.tmp" && mv "$DB_FILE.tmp" "$DB_FILE"
    cp "$DATA_DIR/$TEMPLATE_NAME/.seeded" "$DB_DIR/.seeded"
    log "database $DIRECTUS_DB_NAME: copied from the seeded template"
  else
    log "database $DIRECTUS_DB_NAME: directus bootstrap"
    rm -f "$DB_DIR/.seeded"
    (cd "$APP_DIR" && LOG_LEVEL=warn node "$DIRECTUS_CLI" bootstrap) >> "$LOG_FILE" 2>&1 \
      || { tail -30 "$LOG_FILE" >&2; die "bootstrap of $DB_FILE failed"; }
  fi
fi
flock -u 8

# Start ----------------------------------------------------------------------------------------------
T0=$(date +%s%N)
echo "=== start $(date -Is) port=$DIRECTUS_PORT db=$DIRECTUS_DB_NAME auth=$DIRECTUS_WS_AUTH heartbeat=$DIRECTUS_HEARTBEAT_PERIOD ttl=$DIRECTUS_ACCESS_TOKEN_TTL auth_timeout=$WEBSOCKETS_REST_AUTH_TIMEOUT" >> "$LOG_FILE"
# setsid: own session and process group, so the caller's terminal signals don't reach it and
# stop.sh can signal the whole group. Through run.js, not the `directus` bin (npm update check).
(cd "$APP_DIR" && exec setsid node "$DIRECTUS_CLI" start >> "$LOG_FILE" 2>&1 < /dev/null 8>&- 9>&-) &
PID=$!
echo "$PID" > "$PID_FILE"

deadline=$(( $(date +%s) + TIMEOUT ))
until [ "$(curl -s -m 2 "$SERVER_URL/server/ping" 2>/dev/null)" = "pong" ]; do
  if ! kill -0 "$PID" 2>/dev/null; then
    tail -20 "$LOG_FILE" >&2; rm -f "$PID_FILE"; die "directus exited during startup (log: $LOG_FILE)"
  fi
  [ "$(date +%s)" -lt "$deadline" ] || die "timeout waiting for $SERVER_URL/server/ping (log: $LOG_FILE)"
  sleep 0.1
done
T1=$(date +%s%N)
until health; do
  [ "$(date +%s)" -lt "$deadline" ] || die "timeout waiting for /server/health (log: $LOG_FILE)"
  sleep 0.2
done
T2=$(date +%s%N)

if [ ! -f "$DB_DIR/.seeded" ] || [ "${DIRECTUS_RESEED:-0}" = 1 ]; then
  DIRECTUS_URL="$SERVER_URL" node "$HERE/seed.mjs" >&2 || die "seed failed"
  echo "directus $DIRECTUS_VERSION seeded $(date -Is)" > "$DB_DIR/.seeded"
fi

knobs > "$KNOBS_FILE"
write_conn_file "$PID"
log "$(printf 'pid %s at %s (ws auth=%s, heartbeat=%s, ttl=%s, db=%s): ping after %d ms, healthy after %d ms' \
  "$PID" "$SERVER_URL" "$DIRECTUS_WS_AUTH" "$DIRECTUS_HEARTBEAT_PERIOD" "$DIRECTUS_ACCESS_TOKEN_TTL" \
  "$DIRECTUS_DB_NAME" $(( (T1-T0)/1000000 )) $(( (T2-T0)/1000000 )))"
[ "${DIRECTUS_NO_CONN_FILE:-0}" = 1 ] || log "connection env: $CONN_FILE"
echo "$SERVER_URL"
