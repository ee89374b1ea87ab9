#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Stop the instance on $DIRECTUS_PORT (or the port given as argument) and start it again with the
# knobs of its last start (saved by start.sh in $DIRECTUS_HOME/run/knobs-<port>.env). Variables set
# in the caller's environment override the saved ones. SIGNAL=KILL kills -9 instead of SIGTERM.
#
#   scripts/directus/restart.sh 8056
#   SIGNAL=KILL scripts/directus/restart.sh 8056     # crash + restart
#   DIRECTUS_FRESH_DB=1 scripts/directus/restart.sh  # restart on a fresh copy of the seeded database
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ $# -le 1 ] || { echo "usage: $0 [PORT]" >&2; exit 2; }
DIRECTUS_PORT="${1:-${DIRECTUS_PORT:-8055}}"
export DIRECTUS_PORT
# shellcheck source=env.sh
KNOBS_FILE="$(. "$HERE/env.sh" && echo "$KNOBS_FILE")"

if [ -f "$KNOBS_FILE" ]; then
  while IFS= read -r line; do
    name="${line#export }"; name="${name%%=*}"
    [[ "$name" =~ ^[A-Z_][A-Z0-9_]*$ ]] || continue
    # The caller's environment wins over the saved value.
    if [ -z "${!name+set}" ]; then eval "$line"; fi
  done < "$KNOBS_FILE"
fi
# shellcheck disable=SC2031  # env.sh ran in a subshell above only to read KNOBS_FILE
"$HERE/stop.sh" "$DIRECTUS_PORT"
exec "$HERE/start.sh"
