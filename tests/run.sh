#!/usr/bin/env bash
# run.sh: runs every test binary given on the command line, echoes their
# PASS/FAIL/SKIP lines, and ends with one line "N passed, N failed".
# Skips are listed by name and counted on the line before.
set -u
# Every server the tests talk to is on loopback: no proxy, whatever the
# machine's environment says (libcurl, curl and urllib all honour these).
export NO_PROXY=127.0.0.1,localhost,::1 no_proxy=127.0.0.1,localhost,::1
pass=0 fail=0 skip=0
skipped=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "$@"; do
    : >"$log"
    "$t" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    p=$(grep -c '^PASS ' "$log")
    f=$(grep -c '^FAIL ' "$log")
    s=$(grep -c '^SKIP ' "$log")
    while IFS= read -r line; do skipped+=("${line#SKIP }"); done < <(grep '^SKIP ' "$log")
    pass=$((pass + p)) fail=$((fail + f)) skip=$((skip + s))
    # A binary that crashed or exited non-zero without naming a failed case
    # still counts as one failure.
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $(basename "$t"): exited with status $rc"
        fail=$((fail + 1))
    fi
    if [ $((p + f + s)) -eq 0 ] && [ "$rc" -eq 0 ]; then
        echo "FAIL $(basename "$t"): ran no test case"
        fail=$((fail + 1))
    fi
done
if [ "$skip" -gt 0 ]; then
    echo "$skip skipped:"
    for s in "${skipped[@]}"; do echo "  $s"; done
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
