#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Stop Directus instances started by start.sh, by the pid in their pid file: SIGTERM, then SIGKILL
# after STOP_TIMEOUT (10) seconds. Idempotent: a missing or stale pid file is not an error.
#
#   scripts/directus/stop.sh                 # the instance on $DIRECTUS_PORT (8055)
#   scripts/directus/stop.sh 8056 8057       # these ports
#   scripts/directus/stop.sh --all           # every instance of this install, other checkouts' too
#   SIGNAL=KILL scripts/directus/stop.sh 8056   # kill -9 at once (crash tests)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
. "$HERE/env.sh"

SIGNAL="${SIGNAL:-TERM}"
SIGNAL="${SIGNAL#SIG}"
case "$SIGNAL" in TERM|15) SIGNAL=TERM ;; KILL|9) SIGNAL=KILL ;; *) die "SIGNAL=$SIGNAL (want TERM or KILL)" ;; esac
STOP_TIMEOUT="${STOP_TIMEOUT:-10}"

ports=()
if [ "${1:-}" = "--all" ]; then
  rm -f "$DIRECTUS_HOME"/ci*.env
  for f in "$RUN_DIR"/directus-*.pid; do
    [ -f "$f" ] || continue
    p="${f##*/directus-}"; ports+=("${p%.pid}")
  done
elif [ $# -gt 0 ]; then
  ports=("$@")
else
  ports=("$DIRECTUS_PORT")
fi

# signal_instance PID SIG: the server runs in its own process group (setsid in start.sh);
# signal the whole group when it is ours, else just the pid.
signal_instance() {
  if [ "$(ps -o pgid= -p "$1" 2>/dev/null | tr -d ' ')" = "$1" ]; then
    kill -s "$2" -- "-$1" 2>/dev/null || true
  else
    kill -s "$2" "$1" 2>/dev/null || true
  fi
}

for port in "${ports[@]}"; do
  [[ "$port" =~ ^[0-9]+$ ]] || die "not a port: $port"
  pid_file="$RUN_DIR/directus-$port.pid"
  rm -f "$DIRECTUS_HOME/connection-$port.env"
  if [ ! -f "$pid_file" ]; then
    log "port $port: not running (no pid file)"
    continue
  fi
  pid="$(cat "$pid_file")"
  if ! pid_alive "$pid"; then
    log "port $port: not running (stale pid file)"
    rm -f "$pid_file"
    continue
  fi
  # pid_alive, not kill -0: a zombie (exited, not yet reaped) counts as stopped.
  signal_instance "$pid" "$SIGNAL"
  if [ "$SIGNAL" = TERM ]; then
    for _ in $(seq 1 $(( STOP_TIMEOUT * 10 ))); do pid_alive "$pid" || break; sleep 0.1; done
    if pid_alive "$pid"; then
      log "port $port: pid $pid ignored SIGTERM for ${STOP_TIMEOUT}s; sending SIGKILL"
      signal_instance "$pid" KILL
    fi
  fi
  for _ in $(seq 1 50); do pid_alive "$pid" || break; sleep 0.1; done
  pid_alive "$pid" && die "port $port: pid $pid is still alive"
  # The pid looks gone once its main thread has released its memory, but the other threads
  # of a killed Node process can hold the listening socket a little longer (seen under load:
  # a start right after SIGKILL found the port in use). Wait for the port to close.
  for _ in $(seq 1 100); do port_open "$port" || break; sleep 0.1; done
  rm -f "$pid_file"
  log "port $port: stopped pid $pid (SIG$SIGNAL)"
done
