#!/usr/bin/python3
"""test_fetch.py: build/fetch-model (`make model`) against a Hugging Face
stand-in on loopback (tests/hf_mirror.py) serving a generated weights file:
success, sidecars, checksum mismatches, truncated transfers, server errors,
resume of a partial file, offline. After any failure there must be no
models/ARCH.safetensors. Prints PASS/FAIL/SKIP lines for tests/run.sh.

The binary comes from $IMGCLASS_FETCH (default build/fetch-model)."""
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no tests/__pycache__ in the work tree
from hf_mirror import Mirror  # noqa: E402

ROOT = os.path.dirname(HERE)
BIN = os.environ.get("IMGCLASS_FETCH", os.path.join(ROOT, "build", "fetch-model"))
PINNED_TV50 = "5d061a3c593d795bfe682d9b152bafbcf550579873492def3515b46db1189888"

failed = 0


class Fail(Exception):
    pass


def check(cond, why):
    if not cond:
        raise Fail(why)


def run_case(name, fn):
    global failed
    tmp = tempfile.mkdtemp(prefix="fetch_")
    try:
        fn(tmp)
        print("PASS fetch.%s" % name, flush=True)
    except Fail as e:
        failed += 1
        print("FAIL fetch.%s: %s" % (name, e), flush=True)
    except Exception:
        failed += 1
        print("FAIL fetch.%s: %s" % (name, traceback.format_exc().strip().splitlines()[-1]),
              flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# One mirror for every case; each case picks its repositories' fault modes.
mirror = None
DATA = os.urandom(3 << 20) + b"end"  # 3 MB, not a multiple of any buffer size
SHA = hashlib.sha256(DATA).hexdigest()
REPOS = ["timm/resnet18.tv_in1k", "timm/resnet50.tv2_in1k", "timm/resnet50.tv_in1k",
         "timm/resnet34.tv_in1k", "timm/resnet101.tv2_in1k", "timm/resnet152.tv2_in1k"]


def fetch(tmp, *args, base=None, timeout=60):
    env = dict(os.environ)
    env["IMGCLASSD_HF_BASE"] = base or mirror.base
    t0 = time.monotonic()
    p = subprocess.run([BIN, "--dir", os.path.join(tmp, "models")] + list(args), env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout.decode() + p.stderr.decode(), time.monotonic() - t0


def path(tmp, name):
    return os.path.join(tmp, "models", name)


def reset(mode="ok", repos=REPOS):
    mirror.log.clear()
    mirror.served.clear()
    for r in REPOS:
        mirror.modes[r] = "ok"
    for r in repos:
        mirror.modes[r] = mode


def no_weights(tmp, arch, out):
    """A failed run leaves nothing that looks like valid weights."""
    check(not os.path.exists(path(tmp, arch + ".safetensors")),
          "%s.safetensors exists after a failed download; output: %s" % (arch, out))


def ranges_seen():
    return [r for (_, p, r) in mirror.log if p.startswith("/cdn/") and r]


# ---------------------------------------------------------------------------


def test_success(tmp):
    reset()
    rc, out, dt = fetch(tmp, "resnet50")
    check(rc == 0, "exit %d: %s" % (rc, out))
    with open(path(tmp, "resnet50.safetensors"), "rb") as f:
        check(f.read() == DATA, "downloaded bytes differ from the served file")
    check(not os.path.exists(path(tmp, "resnet50.safetensors.part")), ".part left behind")
    check("verified" in out and SHA in out, "no verification reported: " + out)
    check(not [n for n in os.listdir(path(tmp, "")) if ".tmp." in n], "temporary files left")
    # The request went the hub's way: resolve URL, then the redirect target.
    paths = [p for (_, p, _) in mirror.log]
    check(paths[:2] == ["/timm/resnet50.tv2_in1k/resolve/main/model.safetensors",
                        "/cdn/timm/resnet50.tv2_in1k"], "requests: %s" % paths)


def test_sidecars(tmp):
    """Each model's preprocessing, as the engine reads it (README "Weights")."""
    reset()
    want = {"resnet18": (256, "timm/resnet18.tv_in1k"), "resnet50": (232, "timm/resnet50.tv2_in1k"),
            "resnet50.tv_in1k": (256, "timm/resnet50.tv_in1k")}
    for arch, (resize, repo) in want.items():
        args = [arch] + (["--sha256", SHA] if arch == "resnet50.tv_in1k" else [])
        rc, out, _ = fetch(tmp, *args)
        check(rc == 0, "%s: exit %d: %s" % (arch, rc, out))
        with open(path(tmp, arch + ".json")) as f:
            side = json.load(f)
        check(side.get("resize") == resize and side.get("crop") == 224, "%s: %s" % (arch, side))
        check(side.get("interpolation") == "bilinear", "%s: %s" % (arch, side))
        check(side.get("mean") == [0.485, 0.456, 0.406] and side.get("std") == [0.229, 0.224, 0.225],
              "%s: mean/std %s" % (arch, side))
        check(side.get("source", "").endswith("/" + repo) and side.get("sha256") == SHA,
              "%s: source/sha256 %s" % (arch, side))


def test_existing(tmp):
    """A present file is verified, not downloaded again; a missing sidecar is written."""
    reset()
    rc, out, _ = fetch(tmp, "resnet18")
    check(rc == 0, "first run: exit %d: %s" % (rc, out))
    os.unlink(path(tmp, "resnet18.json"))
    mirror.log.clear()
    rc, out, _ = fetch(tmp, "resnet18")
    check(rc == 0 and "already there" in out, "second run: exit %d: %s" % (rc, out))
    check(not mirror.log, "downloaded again: %s" % mirror.log)
    check(os.path.exists(path(tmp, "resnet18.json")), "sidecar not rewritten")
    check("recorded in the sidecar" in out or "not verified" in out, out)
    # Damaged after download: the checksum recorded in the sidecar catches it.
    rc, out, _ = fetch(tmp, "resnet18")
    check(rc == 0 and "as recorded in the sidecar" in out, "sidecar checksum unused: " + out)
    with open(path(tmp, "resnet18.safetensors"), "r+b") as f:
        # Flip the byte rather than write a constant: DATA is random, so a
        # constant is already there one run in 256 and damages nothing.
        f.seek(1000)
        b = f.read(1)[0]
        f.seek(1000)
        f.write(bytes([b ^ 0xFF]))
    rc, out, _ = fetch(tmp, "resnet18")
    check(rc != 0 and "resnet18.json" in out, "damaged file accepted: exit %d: %s" % (rc, out))
    check(not mirror.log, "downloaded without --force: %s" % mirror.log)
    # A pinned checksum is checked even for a file that is already there.
    with open(path(tmp, "resnet50.tv_in1k.safetensors"), "wb") as f:
        f.write(DATA)
    rc, out, _ = fetch(tmp, "resnet50.tv_in1k")
    check(rc != 0 and PINNED_TV50 in out, "bad existing file accepted: exit %d: %s" % (rc, out))


def test_checksum_mismatch(tmp):
    """The body is corrupted in transit: rejected, nothing left."""
    reset("corrupt")
    rc, out, _ = fetch(tmp, "resnet18")
    check(rc != 0, "corrupted download accepted: " + out)
    check("mismatch" in out and SHA in out, "message does not name the checksums: " + out)
    no_weights(tmp, "resnet18", out)
    check(not os.path.exists(path(tmp, "resnet18.safetensors.part")), "corrupt .part kept")
    check(not os.path.exists(path(tmp, "resnet18.json")), "sidecar written for a failed download")
    # The hub's checksum disagrees with the file: rejected too.
    reset("wrongetag")
    rc, out, _ = fetch(tmp, "resnet18")
    check(rc != 0 and "mismatch" in out, "wrong X-Linked-Etag accepted: " + out)
    no_weights(tmp, "resnet18", out)


def test_pinned_checksum(tmp):
    """resnet50.tv_in1k has a pinned SHA-256; a hub serving another file is refused
    from its headers, before the body; --sha256 overrides the pin."""
    reset()
    rc, out, _ = fetch(tmp, "resnet50.tv_in1k")
    check(rc != 0 and PINNED_TV50 in out, "file with another checksum accepted: " + out)
    check(not [p for (_, p, _) in mirror.log if p.startswith("/cdn/")],
          "the body was fetched despite the hub's checksum: %s" % mirror.log)
    no_weights(tmp, "resnet50.tv_in1k", out)
    rc, out, _ = fetch(tmp, "resnet50.tv_in1k", "--sha256", SHA)
    check(rc == 0, "--sha256 did not override the pin: " + out)


def test_no_checksum(tmp):
    """A server without X-Linked-Etag and no pin: refused unless --sha256 is given."""
    reset("noetag")
    rc, out, _ = fetch(tmp, "resnet18")
    check(rc != 0 and "--sha256" in out, "unverified download accepted: " + out)
    no_weights(tmp, "resnet18", out)
    rc, out, _ = fetch(tmp, "resnet18", "--sha256", SHA)
    check(rc == 0, "--sha256 download failed: " + out)
    bad = hashlib.sha256(b"other").hexdigest()
    rc, out, _ = fetch(tmp, "resnet34", "--sha256", bad)
    check(rc != 0 and bad in out, "--sha256 mismatch accepted: " + out)
    no_weights(tmp, "resnet34", out)


def test_truncated(tmp):
    """The server hangs up mid-body every time: the run fails, the partial
    download stays under its .part name for a later resume."""
    reset("truncate")
    rc, out, dt = fetch(tmp, "resnet18", "--retries", "1")
    check(rc != 0, "truncated download accepted: " + out)
    no_weights(tmp, "resnet18", out)
    part = path(tmp, "resnet18.safetensors.part")
    check(os.path.exists(part) and 0 < os.path.getsize(part) < len(DATA),
          "no partial file kept: " + out)
    check("resume" in out, "message does not say how to resume: " + out)
    check(len(ranges_seen()) == 1, "the retry did not resume with Range: %s" % mirror.log)
    # The next run resumes it.
    have = os.path.getsize(part)
    reset()
    rc, out, _ = fetch(tmp, "resnet18")
    check(rc == 0, "resume failed: " + out)
    check(ranges_seen() == ["bytes=%d-" % have], "resume did not ask for the rest: %s" % mirror.log)
    with open(path(tmp, "resnet18.safetensors"), "rb") as f:
        check(f.read() == DATA, "resumed file differs")
    check(not os.path.exists(part), ".part left after success")


def test_resume_in_run(tmp):
    """A transfer broken once is resumed by the same run."""
    reset("truncate_once")
    rc, out, _ = fetch(tmp, "resnet50")
    check(rc == 0, "exit %d: %s" % (rc, out))
    check(len(ranges_seen()) == 1, "no Range request: %s" % mirror.log)
    with open(path(tmp, "resnet50.safetensors"), "rb") as f:
        check(f.read() == DATA, "resumed file differs")


def test_resume_partial(tmp):
    """A .part file from an earlier run (half the file) is completed with Range."""
    reset()
    os.makedirs(path(tmp, ""))
    half = len(DATA) // 2 + 12345
    with open(path(tmp, "resnet18.safetensors.part"), "wb") as f:
        f.write(DATA[:half])
    rc, out, _ = fetch(tmp, "resnet18")
    check(rc == 0, "exit %d: %s" % (rc, out))
    check(ranges_seen() == ["bytes=%d-" % half], "requests: %s" % mirror.log)
    body = [n for n in mirror.served.values()]
    check(body == [1], "body requests: %s" % mirror.served)
    with open(path(tmp, "resnet18.safetensors"), "rb") as f:
        check(f.read() == DATA, "resumed file differs")


def test_resume_ignored(tmp):
    """A server that ignores Range sends the whole file: the download restarts."""
    reset("norange")
    os.makedirs(path(tmp, ""))
    with open(path(tmp, "resnet18.safetensors.part"), "wb") as f:
        f.write(DATA[:1000])
    rc, out, _ = fetch(tmp, "resnet18")
    check(rc == 0, "exit %d: %s" % (rc, out))
    with open(path(tmp, "resnet18.safetensors"), "rb") as f:
        check(f.read() == DATA, "restarted file differs")


def test_resume_stale(tmp):
    """A .part file holding other bytes fails the checksum after resuming; the
    download is redone from zero once and succeeds."""
    reset()
    os.makedirs(path(tmp, ""))
    with open(path(tmp, "resnet18.safetensors.part"), "wb") as f:
        f.write(b"\0" * 5000)
    rc, out, _ = fetch(tmp, "resnet18")
    check(rc == 0, "exit %d: %s" % (rc, out))
    with open(path(tmp, "resnet18.safetensors"), "rb") as f:
        check(f.read() == DATA, "file differs")
    # A .part longer than the file: 416, restarted from zero.
    reset()
    with open(path(tmp, "resnet34.safetensors.part"), "wb") as f:
        f.write(DATA + b"extra")
    rc, out, _ = fetch(tmp, "resnet34")
    check(rc == 0, "oversized .part: exit %d: %s" % (rc, out))


def test_server_error(tmp):
    """HTTP 500: retried, then a failure naming the status; nothing left."""
    reset("error500")
    rc, out, dt = fetch(tmp, "resnet18", "--retries", "1")
    check(rc != 0 and "500" in out, "exit %d: %s" % (rc, out))
    check(len(mirror.log) == 2, "expected one retry: %s" % mirror.log)
    no_weights(tmp, "resnet18", out)
    check(not os.path.exists(path(tmp, "resnet18.safetensors.part")), "empty .part left")
    check(not os.path.exists(path(tmp, "resnet18.json")), "sidecar written for a failure")


def test_not_found(tmp):
    """HTTP 404 is final: no retry."""
    reset("notfound")
    rc, out, dt = fetch(tmp, "resnet18")
    check(rc != 0 and "404" in out and dt < 5, "exit %d after %.1f s: %s" % (rc, dt, out))
    check(len(mirror.log) == 1, "retried a 404: %s" % mirror.log)
    no_weights(tmp, "resnet18", out)


def test_offline(tmp):
    """Nothing listens: fails at once, saying what to download and where to put it."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens on port now
    base = "http://127.0.0.1:%d" % port
    rc, out, dt = fetch(tmp, "resnet50", base=base)
    check(rc != 0, "exit 0 offline: " + out)
    check(dt < 5, "took %.1f s to give up" % dt)
    url = base + "/timm/resnet50.tv2_in1k/resolve/main/model.safetensors"
    check(url in out, "message lacks the URL to download: " + out)
    check(path(tmp, "resnet50.safetensors") in out, "message lacks the destination: " + out)
    no_weights(tmp, "resnet50", out)
    check(not os.path.exists(path(tmp, "resnet50.safetensors.part")), "empty .part left")


def test_usage(tmp):
    rc, out, _ = fetch(tmp, "resnet51")
    check(rc == 2 and "unknown model" in out, "exit %d: %s" % (rc, out))
    rc, out, _ = fetch(tmp, "resnet18", "--sha256", "xyz")
    check(rc == 2, "bad --sha256 accepted: %s" % out)


def test_sha256(tmp):
    """The built-in SHA-256 against hashlib, around the block boundaries."""
    for n in [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, 100003]:
        p = os.path.join(tmp, "f%d" % n)
        data = os.urandom(n)
        with open(p, "wb") as f:
            f.write(data)
        out = subprocess.run([BIN, "--hash", p], stdout=subprocess.PIPE, check=True).stdout
        got = out.decode().split()[0]
        check(got == hashlib.sha256(data).hexdigest(), "length %d: %s" % (n, got))


def main():
    global mirror
    if not os.access(BIN, os.X_OK):
        print("FAIL fetch.binary: %s is missing (make build/fetch-model)" % BIN)
        return 1
    mirror = Mirror()
    for r in REPOS:
        mirror.files[r] = DATA
    try:
        for name, fn in list(globals().items()):
            if name.startswith("test_") and callable(fn):
                run_case(name[5:], fn)
    finally:
        mirror.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
