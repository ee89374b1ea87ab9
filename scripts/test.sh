#!/usr/bin/env bash
# The project's test command (the README's second command, and what CI runs):
#   1. gofmt and go vet
#   2. go test -race over every package, against the embedded server (directustest)
#   3. a short run of every fuzz target (scripts/fuzz.sh; FUZZTIME per target, default 10s)
#   4. the conformance suite against a real Directus 12.4.1, installed from the npm registry on
#      first use (cached in ~/.cache/directus-realtime, about 6 minutes cold) and started on loopback
#
#   ./scripts/test.sh                  # everything
#   SKIP_DIRECTUS=1 ./scripts/test.sh  # steps 1-3 only
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "gofmt"
unformatted="$(git ls-files -z '*.go' | xargs -0 gofmt -l)"
if [ -n "$unformatted" ]; then
  echo "not gofmt-ed:"; echo "$unformatted"; exit 1
fi

step "go vet"
go vet ./...

step "go test -race (embedded server)"
# The real server is not up yet: its conformance subtests skip here and run in the last step.
REQUIRE_DIRECTUS='' go test -race -count=1 ./...

step "fuzz"
scripts/fuzz.sh

if [ "${SKIP_DIRECTUS:-0}" = 1 ]; then
  step "real Directus: skipped (SKIP_DIRECTUS=1)"
  exit 0
fi
step "conformance against a real Directus"
env_file="$(scripts/directus/ci.sh)"
trap 'scripts/directus/stop.sh --all >/dev/null 2>&1 || true' EXIT
# shellcheck disable=SC1090
. "$env_file"
# -v shows which scenario ran against which server; the full log is kept for a failure.
log="$(mktemp)"
REQUIRE_DIRECTUS=1 go test -race -count=1 -v ./conformance/ >"$log" 2>&1 \
  || { cat "$log"; exit 1; }
grep -E '^\s*--- (PASS|SKIP)|^ok' "$log"
