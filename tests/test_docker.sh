#!/usr/bin/env bash
# test_docker.sh (`make test-docker`): builds docker/Dockerfile and tests the
# image with a real container engine: docker when a Docker engine answers,
# otherwise podman as root (installed with apt-get, configured through its own
# containers.conf, Debian base image made with debootstrap from the apt mirror
# because no image registry may be reachable). Runs the image with random
# weights, waits for /readyz, classifies a JPEG over HTTP, runs the health
# check, checks the user, the CPU quota and the drain on SIGTERM; then bakes
# weights into an image from a local Hugging Face stand-in and serves them.
# Prints PASS/FAIL/SKIP lines for tests/run.sh.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${IMGCLASSD_DOCKER_WORK:-$ROOT/build/docker}
IMAGE=localhost/imgclassd:test
BAKED=localhost/imgclassd:test-baked
NAME=imgclassd-test-$$
PY=/usr/bin/python3
mkdir -p "$WORK"
failed=0
containers=()
mirror_pid=

pass() { echo "PASS docker.$1"; }
fail() {
    echo "FAIL docker.$1: $2"
    failed=1
}
skip() { echo "SKIP docker.$1: $2"; }
info() { echo "docker: $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

cleanup() {
    for c in "${containers[@]}"; do $ENGINE rm -f "$c" >/dev/null 2>&1; done
    [ -n "$mirror_pid" ] && kill "$mirror_pid" 2>/dev/null
    return 0
}
trap cleanup EXIT

# ---------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------
BUILD_ARGS=()
if command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; then
    ENGINE=docker
    info "using the Docker engine ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
else
    ENGINE=podman
    if [ "$(id -u)" != 0 ]; then
        fail setup "no Docker engine answers and podman needs root here; run as root"
        exit 1
    fi
    missing=
    for p in podman runc debootstrap; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        info "installing$missing"
        (apt-get -o Acquire::Retries=5 update -qq || true) >/dev/null 2>&1
        if ! DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Retries=5 install -y -qq $missing >"$WORK/apt.log" 2>&1; then
            fail setup "apt-get install$missing failed: $(tail -3 "$WORK/apt.log")"
            exit 1
        fi
    fi
    # Settings that work in this kind of machine (no systemd, no crun, small
    # default limits), in a file of our own rather than /etc.
    cat >"$WORK/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    export CONTAINERS_CONF=$WORK/containers.conf
    info "using $(podman --version) with $CONTAINERS_CONF"
    BUILD_ARGS=(--format docker)

    # The base image, made from the apt mirror unless it already exists.
    BASE=localhost/debian:bookworm-slim
    if ! podman image exists "$BASE"; then
        mirror=$(awk '/^URIs:/ { u = $2 } /^Suites:/ && / bookworm( |$)/ { print u; exit }' \
            /etc/apt/sources.list.d/debian.sources 2>/dev/null)
        [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' \
            /etc/apt/sources.list 2>/dev/null)
        [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
        t0=$(now)
        rm -rf "$WORK/rootfs"
        if ! debootstrap --variant=minbase bookworm "$WORK/rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1; then
            fail base_image "debootstrap from $mirror failed: $(tail -3 "$WORK/debootstrap.log")"
            exit 1
        fi
        rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/lib/apt/lists/*
        if ! tar -C "$WORK/rootfs" -c . | podman import - "$BASE" >"$WORK/import.log" 2>&1; then
            fail base_image "podman import failed"
            exit 1
        fi
        rm -rf "$WORK/rootfs"
        info "made $BASE with debootstrap from $mirror in $(since "$t0") s"
    fi
    BUILD_ARGS+=(--build-arg "BASE=$BASE")
fi

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
free_port() {
    $PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_ready PORT CONTAINER: polls /readyz for up to 180 s.
wait_ready() {
    local i
    for i in $(seq 1 360); do
        curl -sf -o /dev/null "http://127.0.0.1:$1/readyz" && return 0
        [ "$($ENGINE inspect --format '{{.State.Running}}' "$2" 2>/dev/null)" = true ] || return 1
        sleep 0.5
    done
    return 1
}

# classify PORT JPEG: prints "model top1-label" from POST /classify, or fails.
classify() {
    curl -sf -H 'Content-Type: image/jpeg' --data-binary @"$2" "http://127.0.0.1:$1/classify?topk=5" |
        $PY -c 'import json, sys
r = json.load(sys.stdin)
p = r["predictions"]
assert len(p) == 5 and all(0 <= x["score"] <= 1 for x in p), r
print(r["model"], p[0]["label"])'
}

# A JPEG to classify: a smooth synthetic picture from PIL.
JPEG=$WORK/test.jpg
$PY -c 'from PIL import Image
im = Image.new("RGB", (320, 240))
im.putdata([(x % 256, y % 256, (x * y) % 256) for y in range(240) for x in range(320)])
im.save("'"$JPEG"'", quality=90)' || fail setup "cannot write a test JPEG with PIL (python3-pil)"

# ---------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------
t0=$(now)
if $ENGINE build "${BUILD_ARGS[@]}" -f docker/Dockerfile -t "$IMAGE" . >"$WORK/build.log" 2>&1; then
    pass build
    info "image built in $(since "$t0") s; $($ENGINE image inspect --format '{{.Size}}' "$IMAGE" |
        awk '{ printf "%.0f MB", $1 / 1e6 }')"
else
    fail build "$ENGINE build failed (log: $WORK/build.log): $(tail -5 "$WORK/build.log" | tr '\n' ' ')"
    exit 1
fi

# The image's configuration, as the Dockerfile promises it.
cfg=$($ENGINE image inspect --format '{{json .}}' "$IMAGE")
if why=$(echo "$cfg" | $PY -c 'import json, sys
d = json.load(sys.stdin)
d = d[0] if isinstance(d, list) else d
c = d["Config"]
u = (c.get("User") or "").split(":")[0]
assert u not in ("", "0", "root"), "runs as root: %r" % c.get("User")
assert "8080/tcp" in (c.get("ExposedPorts") or {}), "EXPOSE: %r" % c.get("ExposedPorts")
assert c.get("Entrypoint") == ["/usr/local/bin/imgclassd"], "ENTRYPOINT: %r" % c.get("Entrypoint")
h = c.get("Healthcheck") or d.get("Healthcheck") or {}  # docker | podman
assert h.get("Test") == ["CMD", "/usr/local/bin/imgclassd", "--healthcheck"], "HEALTHCHECK: %r" % h
' 2>&1); then pass image_config; else fail image_config "$(echo "$why" | tail -1)"; fi

# Only the libraries the binary needs: every one resolves, no compiler.
libs=$($ENGINE run --rm --entrypoint /bin/sh "$IMAGE" -c \
    'ldd /usr/local/bin/imgclassd; command -v cc gcc curl || true' 2>&1)
if echo "$libs" | grep -q 'not found'; then
    fail runtime_libs "$(echo "$libs" | grep 'not found' | tr '\n' ' ')"
elif echo "$libs" | grep -qE '/(cc|gcc|curl)$'; then
    fail runtime_libs "build tools in the runtime image: $(echo "$libs" | grep -E '/(cc|gcc|curl)$' | tr '\n' ' ')"
else
    pass runtime_libs
fi

# ---------------------------------------------------------------------------
# Run with random weights, read-only, one CPU
# ---------------------------------------------------------------------------
PORT=$(free_port)
containers+=("$NAME")
t0=$(now)
if ! $ENGINE run -d --name "$NAME" -p "127.0.0.1:$PORT:8080" --read-only --cap-drop ALL \
    --cpus 1 "$IMAGE" --model random:resnet50 --drain-seconds 2 >"$WORK/run.log" 2>&1; then
    fail run "$ENGINE run failed: $(tail -3 "$WORK/run.log" | tr '\n' ' ')"
    exit 1
fi
if wait_ready "$PORT" "$NAME"; then
    pass ready
    info "/readyz 200 after $(since "$t0") s (random:resnet50, --cpus 1)"
else
    fail ready "no 200 from /readyz: $($ENGINE logs "$NAME" 2>&1 | tail -5 | tr '\n' ' ')"
    exit 1
fi

if out=$(classify "$PORT" "$JPEG"); then
    pass classify
    info "POST /classify: $out"
else
    fail classify "POST /classify failed: $(curl -s -H 'Content-Type: image/jpeg' \
        --data-binary @"$JPEG" "http://127.0.0.1:$PORT/classify" | head -c 300)"
fi

# The static page is in the image.
code=$(curl -s -o /dev/null -w '%{http_code} %{content_type}' "http://127.0.0.1:$PORT/")
case "$code" in
200\ text/html*) pass static ;;
*) fail static "GET / answered '$code'" ;;
esac

if curl -sf "http://127.0.0.1:$PORT/metrics" | grep -q '^imgclassd_requests_total{'; then
    pass metrics
else
    fail metrics "GET /metrics has no imgclassd_requests_total"
fi

# The image's HEALTHCHECK, run by the engine (podman) or by hand (docker).
if [ "$ENGINE" = podman ]; then
    hc=$(podman healthcheck run "$NAME" 2>&1)
else
    hc=$(docker exec "$NAME" /usr/local/bin/imgclassd --healthcheck 2>&1)
fi
rc=$?
if [ $rc -eq 0 ]; then pass healthcheck; else fail healthcheck "exit $rc: $hc"; fi

uid=$($ENGINE exec "$NAME" sh -c 'id -u' 2>&1)
if [ "$uid" = 10001 ]; then pass non_root; else fail non_root "uid '$uid'"; fi

# Threads sized for the container: --cpus 1 must give 1 CPU, whatever the host has.
models=$(curl -sf "http://127.0.0.1:$PORT/v1/models/resnet50")
threads=$(echo "$models" | $PY -c 'import json, sys
t = json.load(sys.stdin)["threads"]
print(t["cpus"], t["workers"])' 2>/dev/null)
if [ "$threads" = "1 1" ]; then
    pass cpu_quota
else
    fail cpu_quota "with --cpus 1 (host: $(nproc) CPUs) /v1/models/resnet50 reports cpus, workers = '$threads': $(echo "$models" | head -c 300)"
fi

# SIGTERM: drains (2 s), exits 0.
t0=$(now)
$ENGINE stop -t 30 "$NAME" >/dev/null 2>&1
code=$($ENGINE inspect --format '{{.State.ExitCode}}' "$NAME" 2>&1)
logs=$($ENGINE logs "$NAME" 2>&1)
if [ "$code" = 0 ] && echo "$logs" | grep -q 'SIGTERM'; then
    pass sigterm
    info "stopped in $(since "$t0") s, exit 0"
else
    fail sigterm "exit code '$code' after stop; log: $(echo "$logs" | tail -3 | tr '\n' ' ')"
fi

# ---------------------------------------------------------------------------
# Weights baked in at build time from a Hugging Face stand-in on loopback,
# serving the torchvision-format ResNet-50 the reference step generated as
# timm/resnet50.tv2_in1k: the build runs fetch-model, the image's default
# command loads /models/resnet50.safetensors with its sidecar (resize 232).
# ---------------------------------------------------------------------------
W=${IMGCLASS_REF:-build/ref}/resnet50.safetensors
if [ ! -f "$W" ]; then
    skip bake "no $W to serve (made by make test's reference step)"
else
    $PY tests/hf_mirror.py --file "timm/resnet50.tv2_in1k=$W" >"$WORK/mirror.out" 2>&1 &
    mirror_pid=$!
    for i in $(seq 1 50); do grep -q '^port' "$WORK/mirror.out" && break; sleep 0.1; done
    mport=$(awk '/^port/ { print $2 }' "$WORK/mirror.out")
    # The mirror's port changes every run, so this build's stages are never
    # reused: remove the untagged images it leaves (and only those).
    before=$($ENGINE images -q --filter dangling=true | sort)
    t0=$(now)
    if $ENGINE build "${BUILD_ARGS[@]}" --network host -f docker/Dockerfile -t "$BAKED" \
        --build-arg MODEL=resnet50 --build-arg "HF_BASE=http://127.0.0.1:$mport" . \
        >"$WORK/build-baked.log" 2>&1; then
        info "baked image built in $(since "$t0") s"
        BNAME=$NAME-baked
        containers+=("$BNAME")
        PORT=$(free_port)
        # The image's default command: --model /models/resnet50.safetensors.
        $ENGINE run -d --name "$BNAME" -p "127.0.0.1:$PORT:8080" --read-only \
            -e IMGCLASSD_DRAIN_SECONDS=0 "$BAKED" >/dev/null 2>&1
        if ! wait_ready "$PORT" "$BNAME"; then
            fail bake "no 200 from /readyz: $($ENGINE logs "$BNAME" 2>&1 | tail -3 | tr '\n' ' ')"
        elif ! out=$(classify "$PORT" "$JPEG"); then
            fail bake "POST /classify failed"
        elif ! why=$(curl -sf "http://127.0.0.1:$PORT/v1/models/resnet50" | $PY -c 'import json, sys
m = json.load(sys.stdin)
assert m["architecture"] == "resnet50" and not m["random"], m
assert m["preprocessing"]["resize"] == 232, m["preprocessing"]
print(m["weights"])' 2>&1); then
            fail bake "/v1/models/resnet50 does not show the baked resnet50 with its sidecar resize 232: $(echo "$why" | tail -1)"
        else
            pass bake
            info "baked resnet50 (fetched in the build, verified, sidecar resize 232) served by default: $out"
        fi
        $ENGINE rm -f "$BNAME" >/dev/null 2>&1
    else
        fail bake "build with --build-arg MODEL failed: $(tail -5 "$WORK/build-baked.log" | tr '\n' ' ')"
    fi
    $ENGINE rmi "$BAKED" >/dev/null 2>&1
    after=$($ENGINE images -q --filter dangling=true | sort)
    stale=$(comm -13 <(echo "$before") <(echo "$after"))
    [ -n "$stale" ] && $ENGINE rmi $stale >/dev/null 2>&1
fi

exit $failed
