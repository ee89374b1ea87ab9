#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Delete every row of `posts` and `tags` through REST with the admin token (fast; the schema,
# users and tokens stay). Subscribers on those collections receive the delete events.
#
#   scripts/directus/reset.sh          # the instance on $DIRECTUS_PORT (8055)
#   scripts/directus/reset.sh 8056
#   DIRECTUS_URL=https://my-directus.example ADMIN_TOKEN=... scripts/directus/reset.sh
#
# For a completely fresh database (ids restart, no leftovers): DIRECTUS_FRESH_DB=1 restart.sh PORT.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ $# -le 1 ] || { echo "usage: $0 [PORT]" >&2; exit 2; }
if [ $# -eq 1 ]; then export DIRECTUS_PORT="$1"; unset DIRECTUS_URL; fi
# shellcheck source=env.sh
. "$HERE/env.sh"

node_bin="$NODE22_DIR/bin/node"
[ -x "$node_bin" ] || node_bin=node    # against your own server, any Node >= 18 will do
DIRECTUS_URL="${DIRECTUS_URL:-$SERVER_URL}" exec "$node_bin" "$HERE/seed.mjs" --reset
