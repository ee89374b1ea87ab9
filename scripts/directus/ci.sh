#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# What CI runs before the conformance suite: install (a no-op when cached), then start one
# instance per server profile, each on its own port and SQLite database, and leave them running.
# Prints the path of an env file to source; stop what it started afterwards with
# `stop.sh $DIRECTUS_CI_PORTS` (the env file sets it). `stop.sh --all` would also stop the
# instances of every other checkout that shares this DIRECTUS_HOME.
#
#   scripts/directus/ci.sh                        # all profiles
#   DIRECTUS_CI_PROFILES="default strict" scripts/directus/ci.sh
#
# Profiles (port = DIRECTUS_CI_PORT_BASE, default 8055, plus the offset):
#   default  +0  handshake auth, Directus defaults (heartbeat 30 s, token TTL 15m, auth timeout 10 s)
#   short    +1  handshake auth, heartbeat 3 s, access-token TTL 15s, auth timeout 5 s
#   strict   +2  strict auth (token required at the HTTP upgrade)
#   public   +3  public auth (unauthenticated sockets act as the Public role)
#   limited  +4  handshake auth, rate limiter on: 200 messages per second per socket (and per IP for REST)
# The env file exports DIRECTUS_URL, DIRECTUS_WS_URL, the tokens and credentials for `default`,
# and DIRECTUS_URL_<PROFILE> (e.g. DIRECTUS_URL_STRICT) for every profile started.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
. "$HERE/env.sh"

PROFILES="${DIRECTUS_CI_PROFILES:-default short strict public limited}"
BASE="${DIRECTUS_CI_PORT_BASE:-8055}"

"$HERE/install.sh"

# Clear the knobs this script sets per profile, so that the caller's environment cannot leak
# one profile's settings into another.
unset DIRECTUS_WS_AUTH DIRECTUS_HEARTBEAT_PERIOD DIRECTUS_ACCESS_TOKEN_TTL WEBSOCKETS_REST_AUTH_TIMEOUT \
      WEBSOCKETS_REST_AUTH WEBSOCKETS_HEARTBEAT_PERIOD ACCESS_TOKEN_TTL DIRECTUS_DB_NAME \
      RATE_LIMITER_ENABLED RATE_LIMITER_POINTS RATE_LIMITER_DURATION

# One env file per port base: runs with different DIRECTUS_CI_PORT_BASE do not overwrite each other's.
CI_ENV="$DIRECTUS_HOME/ci-$BASE.env"
urls=()
ports=()
first_conn=""
for profile in $PROFILES; do
  case "$profile" in
    # /graphql is on by Directus's default; said here because the GraphQL scenarios need it.
    default) off=0; knobs=(DIRECTUS_WS_AUTH=handshake WEBSOCKETS_GRAPHQL_ENABLED=true) ;;
    short)   off=1; knobs=(DIRECTUS_WS_AUTH=handshake DIRECTUS_HEARTBEAT_PERIOD=3
                           DIRECTUS_ACCESS_TOKEN_TTL=15s WEBSOCKETS_REST_AUTH_TIMEOUT=5) ;;
    strict)  off=2; knobs=(DIRECTUS_WS_AUTH=strict) ;;
    public)  off=3; knobs=(DIRECTUS_WS_AUTH=public) ;;
    limited) off=4; knobs=(DIRECTUS_WS_AUTH=handshake RATE_LIMITER_ENABLED=true RATE_LIMITER_POINTS=200
                           RATE_LIMITER_DURATION=1) ;;
    *) die "unknown profile '$profile' (default, short, strict, public, limited)" ;;
  esac
  port=$(( BASE + off ))
  # The database keeps its rows between CI runs on a cached DIRECTUS_HOME: start fresh.
  "$HERE/stop.sh" "$port"
  env "${knobs[@]}" DIRECTUS_PORT="$port" DIRECTUS_FRESH_DB=1 "$HERE/start.sh" >/dev/null
  name="$(echo "$profile" | tr '[:lower:]' '[:upper:]')"
  urls+=("DIRECTUS_URL_$name" "http://127.0.0.1:$port")
  ports+=("$port")
  [ -n "$first_conn" ] || first_conn="$DIRECTUS_HOME/connection-$port.env"
done

{
  echo "# Directus test servers started by scripts/directus/ci.sh at $(date -Is). Source it."
  echo "# Variables without a profile suffix describe the first profile ($(echo "$PROFILES" | cut -d' ' -f1))."
  grep '^export ' "$first_conn"
  printf 'export %s=%q\n' "${urls[@]}"
  printf 'export DIRECTUS_CI_PORTS=%q\n' "${ports[*]}"
} > "$CI_ENV"
log "profiles up: $PROFILES"
echo "$CI_ENV"
