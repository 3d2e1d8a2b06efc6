#!/usr/bin/env bash
# Run the locust profiles of loadtests/locustfile.py, headless, against a syncd of their own:
#
#   loadtests/locust_profiles.sh [push] [pull] [stream] [mixed]      (default: all four)
#
# It starts `syncd serve` on 127.0.0.1:$PORT over an embedded PostgreSQL in a new temporary
# directory, registers the collections from loadtests/bench_schema.json (benchdocs: seeded with
# $SEED documents, pulled by the pull and mixed profiles; benchpush; benchstream), runs each
# profile for $RUN_TIME, and stops syncd by its PID and removes the directory on the way out.
# Per profile: locust's CSVs in $OUT/<profile>_*.csv, its log in $OUT/<profile>.log, and a table
# with the CPU seconds the load generator, syncd and PostgreSQL used (the machine's 2 cores are
# shared by all three: a generator near 1 core is the bottleneck, try PROCESSES=2).
#
# Environment: PORT (18089), RUN_TIME (60s), OUT (/tmp/syncd-locust-results), SEED (100000),
# PROCESSES (unset: one locust process; N: `--processes N`), WORKERS (1: syncd --workers).
set -euo pipefail

cd "$(dirname "$0")/.."
PORT=${PORT:-18089}
RUN_TIME=${RUN_TIME:-60s}
OUT=${OUT:-${TMPDIR:-/tmp}/syncd-locust-results}
SEED=${SEED:-100000}
WORKERS=${WORKERS:-1}
BIN=.venv/bin
PROFILES=("${@:-push pull stream mixed}")
read -r -a PROFILES <<<"${PROFILES[*]}"
TICK=$(getconf CLK_TCK)

mkdir -p "$OUT"
DATA=$(mktemp -d /tmp/syncd-locust-XXXXXX)
SYNCD_PID=""
LOCUST_PID=""

cleanup() {
    if [[ -n $LOCUST_PID ]] && kill -0 "$LOCUST_PID" 2>/dev/null; then
        kill -TERM "$LOCUST_PID"; wait "$LOCUST_PID" || true
    fi
    if [[ -n $SYNCD_PID ]] && kill -0 "$SYNCD_PID" 2>/dev/null; then
        kill -TERM "$SYNCD_PID"   # syncd stops its embedded PostgreSQL on the way out
        for _ in $(seq 1 100); do kill -0 "$SYNCD_PID" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -rf "$DATA"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# Only the embedded database: nothing of the caller's is loaded or written.
unset SYNCD_DATABASE_URL
export SYNCD_DATA_DIR=$DATA SYNCD_AUTH_MODE=none

for collection in benchdocs benchpush benchstream; do
    $BIN/syncd collections add "$collection" --schema loadtests/bench_schema.json
done
$BIN/syncd serve --host 127.0.0.1 --port "$PORT" --workers "$WORKERS" >"$OUT/syncd.log" 2>&1 &
SYNCD_PID=$!
for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break
    kill -0 "$SYNCD_PID" 2>/dev/null || { echo "syncd did not start: see $OUT/syncd.log"; exit 1; }
    sleep 0.2
done
POSTMASTER=$(head -1 "$DATA/pgdata/postmaster.pid")

# CPU ticks (user + system) of the given processes and their children, as far as they are alive.
ticks() {
    local total=0 pid fields
    for pid in "$@"; do
        [[ -r /proc/$pid/stat ]] || continue
        read -r -a fields <<<"$(sed 's/^.*) //' "/proc/$pid/stat")"
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}
# Busy ticks of the whole machine (all cores): other work on it shows up here, not above.
machine_busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
syncd_pids() { echo "$SYNCD_PID" $(pgrep -P "$SYNCD_PID" || true); }
postgres_pids() { echo "$POSTMASTER" $(pgrep -P "$POSTMASTER" || true); }

run_profile() {
    local name=$1
    shift
    local s0 p0 m0 t0 s1 p1 m1 t1 lpid pid now extra=()
    local -A generator=()  # pid -> its latest CPU ticks: locust and its --processes workers
    [[ -n ${PROCESSES:-} ]] && extra=(--processes "$PROCESSES")
    s0=$(ticks $(syncd_pids)); p0=$(ticks $(postgres_pids)); m0=$(machine_busy); t0=$(date +%s.%N)
    $BIN/locust -f loadtests/locustfile.py --headless --host "http://127.0.0.1:$PORT" \
        --run-time "$RUN_TIME" --csv "$OUT/$name" --only-summary "${extra[@]}" "$@" \
        >"$OUT/$name.log" 2>&1 &
    lpid=$!
    LOCUST_PID=$lpid
    # Sampled while it runs (the last half second before each process exits is missed).
    while kill -0 "$lpid" 2>/dev/null; do
        for pid in $lpid $(pgrep -P "$lpid" || true); do
            now=$(ticks "$pid")
            ((now > ${generator[$pid]:-0})) && generator[$pid]=$now
        done
        sleep 0.5
    done
    wait "$lpid" || echo "locust $name exited with $?"
    s1=$(ticks $(syncd_pids)); p1=$(ticks $(postgres_pids)); m1=$(machine_busy); t1=$(date +%s.%N)
    now=0
    for pid in "${!generator[@]}"; do now=$((now + generator[$pid])); done
    printf '%s\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\n' "$name" "$(echo "$now / $TICK" | bc -l)" \
        "$(echo "($s1 - $s0) / $TICK" | bc -l)" "$(echo "($p1 - $p0) / $TICK" | bc -l)" \
        "$(echo "($m1 - $m0) / $TICK" | bc -l)" "$(echo "$t1 - $t0" | bc -l)" >>"$OUT/cpu.tsv"
    grep -h "delivery check\|seeded\|CPU usage" "$OUT/$name.log" || true
}

: >"$OUT/cpu.tsv"
for profile in "${PROFILES[@]}"; do
    case $profile in
        push) run_profile push -u 4 -r 4 --collection benchpush PushUser ;;
        pull) run_profile pull -u 2 -r 2 --collection benchdocs --seed-docs "$SEED" PullUser ;;
        # 50 subscribers + 4 pushers, each pushing 2 batches of 100 a second.
        stream) run_profile stream -u 54 -r 27 --collection benchstream --push-rate 2 \
            StreamUser PushUser ;;
        # Weights 25:2:1: 50 subscribers, 4 pushers (2 batches/s each), 2 pullers.
        mixed) run_profile mixed -u 56 -r 28 --collection benchdocs --seed-docs "$SEED" \
            --push-rate 2 ;;
        *) echo "unknown profile $profile (push, pull, stream, mixed)"; exit 2 ;;
    esac
done

$BIN/python - "$OUT" "${PROFILES[@]}" <<'EOF'
import csv, sys
out, profiles = sys.argv[1], sys.argv[2:]
cpu = {row[0]: row[1:] for row in csv.reader(open(f"{out}/cpu.tsv"), delimiter="\t")}
print(f"{'profile':8} {'request':22} {'count':>7} {'fails':>5} {'req/s':>8} {'p50':>6} "
      f"{'p95':>6} {'p99':>6} {'max':>6}  (ms)")
for name in profiles:
    for row in csv.DictReader(open(f"{out}/{name}_stats.csv")):
        if row["Name"] == "Aggregated":
            continue
        print(f"{name:8} {row['Name']:22} {row['Request Count']:>7} {row['Failure Count']:>5} "
              f"{float(row['Requests/s']):8.1f} {row['50%']:>6} {row['95%']:>6} {row['99%']:>6} "
              f"{float(row['Max Response Time']):6.0f}")
print("\nCPU seconds during each profile (generator = locust with its worker processes; "
      "machine = all processes on all cores, other users' included):")
print(f"{'profile':8} {'wall':>6} {'generator':>9} {'syncd':>7} {'postgres':>8} {'machine':>8}")
for name in profiles:
    gen, syncd, pg, machine, wall = cpu.get(name, ["?"] * 5)
    print(f"{name:8} {wall:>6} {gen:>9} {syncd:>7} {pg:>8} {machine:>8}")
EOF
