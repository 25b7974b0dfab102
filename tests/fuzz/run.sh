#!/usr/bin/env bash
# run.sh: builds the libFuzzer targets (clang -fsanitize=fuzzer,address,
# undefined) into build/fuzz and runs each for FUZZ_SECONDS (default 60),
# starting from tests/fuzz/corpus/<target>/ and the kept regressions.
#
#   FUZZ_SECONDS=600 bash tests/fuzz/run.sh            # every target
#   FUZZ_SECONDS=60 bash tests/fuzz/run.sh jpeg http   # some of them
#
# New interesting inputs go to build/fuzz/corpus/<target>/ (the checked-in
# seed corpus stays small). A crash or hang stops with the input saved in
# build/fuzz/artifacts/<target>/; fix the bug, then keep the input as
# tests/fuzz/regressions/<target>/<name> so `make test` replays it
# (build/tests/test_fuzz_regressions). Exit status: 0 when every target
# ran its budget without a finding.
set -euo pipefail
cd "$(dirname "$0")/../.."
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
CLANG=${CLANG:-clang}
OUT=${FUZZ_OUT:-build/fuzz}
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(jpeg multipart safetensors http v2 kserve_v1)

if ! command -v "$CLANG" >/dev/null; then
    echo "fuzz: $CLANG not found; install clang and libclang-rt-14-dev (make deps)" >&2
    exit 1
fi
mkdir -p "$OUT/obj" "$OUT/gen"

# The engine and server sources, instrumented for coverage and sanitizers
# (no main). The class names are generated as the Makefile does.
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CFLAGS="-O1 -g $SAN -std=c11 -D_GNU_SOURCE -pthread -Iengine -Iserver \
    $(pkg-config --cflags openblas 2>/dev/null || true) -Wall -Wno-unused-parameter"
LIBS="-lmicrohttpd $(pkg-config --libs openblas 2>/dev/null || echo -lopenblas) -ljpeg -ljansson -lm -pthread"
{ echo 'const char eng_builtin_labels[] ='
  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/    "/' -e 's/$/\\n"/' engine/imagenet_labels.txt
  echo ';'; } > "$OUT/gen/labels_data.c"
SRCS=("$OUT/gen/labels_data.c")
for f in engine/*.c server/*.c; do
    case "$f" in engine/imgclass.c | server/main.c) continue ;; esac
    SRCS+=("$f")
done
OBJS=()
pids=()
for f in "${SRCS[@]}"; do
    o="$OUT/obj/$(echo "$f" | tr / _).o"
    OBJS+=("$o")
    # as in the Makefile: only the AVX-512 kernel files are built for AVX-512
    extra=""
    [ "$f" = engine/conv_avx512.c ] && extra="-mavx512f -mfma"
    [ "$f" = engine/conv_int8.c ] && extra="-mavx512f -mavx512bw -mavx512vnni -mavx512vl -mfma"
    [ "$f" = engine/conv_amx.c ] && extra="-mavx512f -mavx512bw -mamx-tile -mamx-int8"
    if [ ! -f "$o" ] || [ "$f" -nt "$o" ] || [ "$0" -nt "$o" ]; then
        # shellcheck disable=SC2086
        $CLANG $CFLAGS $extra -fsanitize=fuzzer-no-link -c "$f" -o "$o" &
        pids+=($!)
    fi
done
for p in "${pids[@]}"; do wait "$p"; done
for t in "${TARGETS[@]}"; do
    # shellcheck disable=SC2086
    $CLANG $CFLAGS -fsanitize=fuzzer -o "$OUT/fuzz_$t" "tests/fuzz/fuzz_$t.c" "${OBJS[@]}" $LIBS
done
echo "fuzz: built ${TARGETS[*]} in $OUT"

# Leaks are checked at exit by the regression replay under `make asan`;
# here a long run would report allocator caches as leaks.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for t in "${TARGETS[@]}"; do
    corpus="$OUT/corpus/$t"
    art="$OUT/artifacts/$t"
    mkdir -p "$corpus" "$art"
    maxlen=65536
    [ "$t" = http ] && maxlen=4096
    # The kept regressions first: each must run clean.
    regs=(tests/fuzz/regressions/"$t"/*)
    if [ -e "${regs[0]}" ]; then
        "$OUT/fuzz_$t" -runs=1 "${regs[@]}" >"$OUT/$t.replay.log" 2>&1 ||
            { echo "FAIL fuzz.$t: a kept regression input fails again; see $OUT/$t.replay.log"; status=1; continue; }
    fi
    echo "fuzz: $t for ${FUZZ_SECONDS}s"
    # A fixed seed (FUZZ_SEED) so a run can be repeated; -timeout is far above
    # any input's real cost (milliseconds), so only a true hang trips it.
    if "$OUT/fuzz_$t" -max_total_time="$FUZZ_SECONDS" -seed="${FUZZ_SEED:-1}" -timeout=30 -rss_limit_mb=2048 \
        -max_len=$maxlen -print_final_stats=1 -artifact_prefix="$art/" \
        "$corpus" "tests/fuzz/corpus/$t" >"$OUT/$t.log" 2>&1; then
        execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$OUT/$t.log" | grep -o '[0-9]*$' || echo '?')
        cov=$(grep -o 'cov: [0-9]*' "$OUT/$t.log" | tail -1 | grep -o '[0-9]*' || echo '?')
        echo "PASS fuzz.$t: $execs inputs in ${FUZZ_SECONDS}s, coverage $cov, corpus $(ls "$corpus" | wc -l) files"
    else
        echo "FAIL fuzz.$t: finding saved in $art/ (log $OUT/$t.log):"
        grep -m3 -E 'ERROR|SUMMARY|runtime error|Test unit written' "$OUT/$t.log" | sed 's/^/    /'
        status=1
    fi
done
exit $status
