#!/usr/bin/env bash
# The adversarial suite's figures as medians of several runs: for each
# misbehaving case, how long until the call was stopped, and the stat
# latency (p50, p99) of a healthy tenant of the same plugin meanwhile, with
# its ratio to the same tenant's latency with nothing misbehaving, measured
# in the same run (tests/tests/adversarial.rs prints one line per case).
#
#   bash bench/adversarial.sh            # 5 runs
#   RUNS=9 bash bench/adversarial.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasftp-target}"
RUNS="${RUNS:-5}"
# The cases that time the other tenant (one test at a time: a run of the
# whole suite in parallel would measure the suite, not the case).
FILTERS=(a_loop_in_every_contract_function traps_of_every_kind hoarded_resources)

cargo test -q -p wasftp-tests --test adversarial --no-run
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
for run in $(seq "$RUNS"); do
  for filter in "${FILTERS[@]}"; do
    cargo test -q -p wasftp-tests --test adversarial "$filter" -- --nocapture --test-threads 1 2>&1 \
      | sed "s/^/run=$run /" >>"$out"
  done
done

python3 - "$out" "$RUNS" <<'EOF'
import re, statistics, sys
from collections import defaultdict

def ms(text):
    value, unit = re.fullmatch(r"([0-9.]+)(ns|µs|us|ms|s)", text).groups()
    return float(value) * {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1000.0}[unit]

DUR = r"([0-9.]+(?:ns|µs|us|ms|s))"
case_line = re.compile(rf"^run=(\d+) adversarial (.+?): failed after {DUR}; other tenant's stat p50 {DUR} p99 {DUR}")
quiet_line = re.compile(rf"^run=(\d+) adversarial quiet: other tenant's stat p50 {DUR} p99 {DUR}")
quiet = defaultdict(list)            # run -> quiet p99s
cases = defaultdict(list)            # case -> (run, stopped, p50, p99)
for line in open(sys.argv[1], encoding="utf-8"):
    if m := quiet_line.match(line):
        quiet[m[1]].append(ms(m[3]))
    elif m := case_line.match(line):
        cases[m[2]].append((m[1], ms(m[3]), ms(m[4]), ms(m[5])))
if not cases:
    sys.exit("no figures found: did the adversarial suite run?")
quiet_p99 = {run: statistics.median(v) for run, v in quiet.items()}
print(f"adversarial cases, medians of {sys.argv[2]} runs (ms); ratio: the other tenant's p99 over its quiet p99 in the same run")
print(f"{'case':<40} {'stopped':>9} {'p50':>8} {'p99':>8} {'ratio':>6}")
print(f"{'quiet (nothing misbehaving)':<40} {'':>9} {'':>8} {statistics.median(quiet_p99.values()) if quiet_p99 else float('nan'):>8.2f}")
for case, rows in cases.items():
    ratios = [p99 / quiet_p99[run] for run, _, _, p99 in rows if quiet_p99.get(run)]
    print(
        f"{case:<40} {statistics.median(r[1] for r in rows):>9.1f} {statistics.median(r[2] for r in rows):>8.2f} "
        f"{statistics.median(r[3] for r in rows):>8.2f} {statistics.median(ratios) if ratios else float('nan'):>6.1f}"
    )
EOF
