#!/usr/bin/env bash
# The project's test command: the README's, and exactly what CI runs (.ci/run only calls this).
#   1. gofmt and go vet
#   2. Debian's chromium for the browser tests of examples/scoped and ops (installed with apt when missing),
#      which then must run: REQUIRE_CHROMIUM=1
#   3. go test -race over every package against the embedded server (directustest), with the full
#      soak; the real-Directus subtests of conformance/ run in step 5 instead
#   4. the conformance suite against a real Directus 12.4.1, installed from the npm registry on
#      first use (cached in ~/.cache/directus-realtime, about 6 minutes cold) and started on
#      loopback on five ports from DIRECTUS_CI_PORT_BASE (default 8055)
#   5. a short run of every fuzz target (scripts/fuzz.sh; FUZZTIME per target, default 10s)
# Steps 3 and 4 run go test -json, and internal/skipcheck fails the run on any skipped test that
# scripts/skips.txt does not allow, with its reason.
#
#   ./scripts/test.sh                  # everything
#   SKIP_DIRECTUS=1 ./scripts/test.sh  # everything but step 4
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null 2>&1 || PATH="$PATH:/usr/local/go/bin"

step() { printf '\n== %s\n' "$*"; }

# check_run: print the go test -json run on stdin as it goes, and fail on a failed test or
# package, or on a skip that scripts/skips.txt does not allow.
check_run() { go run ./internal/skipcheck -allow scripts/skips.txt -; }

step "go $(go env GOVERSION), $(nproc) cores"
go mod download

step "gofmt"
unformatted="$(git ls-files -z '*.go' | xargs -0 gofmt -l)"
if [ -n "$unformatted" ]; then
  echo "not gofmt-ed:"; echo "$unformatted"; exit 1
fi

step "go vet"
go vet ./...

step "chromium"
if ! command -v chromium >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing Debian's chromium with apt"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
command -v chromium
export REQUIRE_CHROMIUM=1 # the browser test fails instead of skipping

step "go test -race (embedded server, full soak)"
# The subtests named "directus" need the real server: they run in the next step.
# pipefail: the step fails if go test or the check does.
go test -race -count=1 -json -skip '/^directus$' ./... | check_run

if [ "${SKIP_DIRECTUS:-0}" = 1 ]; then
  step "real Directus: left out (SKIP_DIRECTUS=1)"
else
  step "conformance against a real Directus"
  base="${DIRECTUS_CI_PORT_BASE:-8055}"
  ports=("$base" "$((base + 1))" "$((base + 2))" "$((base + 3))" "$((base + 4))") # ci.sh's five profiles
  # Only the instances this run started are stopped: others may share the machine.
  trap 'scripts/directus/stop.sh "${ports[@]}" >/dev/null 2>&1 || true' EXIT
  env_file="$(scripts/directus/ci.sh)"
  # shellcheck disable=SC1090
  . "$env_file"
  # -timeout: against a real server the suite takes longer than go test's default 10 minutes (the
  # rate-limited restore alone makes and restores 10,000 subscriptions at 170 frames per second).
  REQUIRE_DIRECTUS=1 go test -race -count=1 -timeout 30m -json ./conformance/ | check_run
  scripts/directus/stop.sh "${ports[@]}" >/dev/null 2>&1 || true
fi

step "fuzz"
scripts/fuzz.sh
