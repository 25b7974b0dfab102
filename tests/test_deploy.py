#!/usr/bin/python3
"""test_deploy.py: the deployment files agree with each other and with the
binary. Parses deploy/k8s/*.yaml, deploy/kserve/*.yaml, deploy/docker-compose.yml,
deploy/prometheus.yml and docker/Dockerfile; checks every flag and
IMGCLASSD_* variable they use against `imgclassd --help` (and that the binary
accepts their values), ports, probe paths, selectors, shutdown timing and
resources; then starts the binary with the Deployment's own arguments and
environment (and again with the KServe InferenceService's) and probes the
paths the manifests name. Prints PASS/FAIL/SKIP
lines for tests/run.sh; cases that need build/imgclassd are skipped, saying
so, when it has not been built. The binary is $IMGCLASSD_BIN (default
build/imgclassd)."""
import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("IMGCLASSD_BIN", os.path.join(ROOT, "build", "imgclassd"))
K8S = os.path.join(ROOT, "deploy", "k8s")
KSERVE = os.path.join(ROOT, "deploy", "kserve")
COMPOSE = os.path.join(ROOT, "deploy", "docker-compose.yml")
PROMETHEUS = os.path.join(ROOT, "deploy", "prometheus.yml")
DOCKERFILE = os.path.join(ROOT, "docker", "Dockerfile")
IMAGE_BIN = "/usr/local/bin/imgclassd"

failed = 0


class Fail(Exception):
    pass


class Skip(Exception):
    pass


def check(cond, why):
    if not cond:
        raise Fail(why)


def case(fn):
    """Runs fn and prints its line."""
    global failed
    name = fn.__name__[5:]
    try:
        fn()
        print("PASS deploy.%s" % name, flush=True)
    except Skip as e:
        print("SKIP deploy.%s: %s" % (name, e), flush=True)
    except Fail as e:
        failed += 1
        print("FAIL deploy.%s: %s" % (name, e), flush=True)
    except Exception:
        failed += 1
        print("FAIL deploy.%s: %s" % (name, traceback.format_exc().strip().splitlines()[-1]),
              flush=True)


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------

try:
    import yaml
except ImportError:
    yaml = None

docs = {}  # kind -> object (one of each kind)
kdocs = {}  # the same for deploy/kserve
compose = prom = None
load_error = None


def load_dir(folder, into):
    """Every document of folder/*.yaml into `into`, by kind (one of each)."""
    for path in sorted(glob.glob(os.path.join(folder, "*.yaml"))):
        with open(path) as f:
            for d in yaml.safe_load_all(f):
                if d is None:
                    continue
                check(isinstance(d, dict) and "kind" in d, "%s: a document without kind" % path)
                check(d["kind"] not in into, "%s: a second %s" % (path, d["kind"]))
                into[d["kind"]] = d


def load():
    global compose, prom
    load_dir(K8S, docs)
    load_dir(KSERVE, kdocs)
    with open(COMPOSE) as f:
        compose = yaml.safe_load(f)
    with open(PROMETHEUS) as f:
        prom = yaml.safe_load(f)


def dockerfile():
    """Instructions of the Dockerfile as (KEYWORD, rest), continuations joined."""
    out, cur = [], ""
    with open(DOCKERFILE) as f:
        for line in f:
            s = line.rstrip("\n")
            if not cur and (not s.strip() or s.lstrip().startswith("#")):
                continue
            if s.lstrip().startswith("#"):
                continue
            if s.endswith("\\"):
                cur += s[:-1] + " "
                continue
            cur += s
            kw, _, rest = cur.strip().partition(" ")
            out.append((kw.upper(), rest.strip()))
            cur = ""
    return out


# ---------------------------------------------------------------------------
# The binary's flags
# ---------------------------------------------------------------------------

flags = {}  # "port" -> {"env": "IMGCLASSD_PORT", "default": "8080"}; switches: env None
help_error = None


def read_help():
    global help_error
    if not os.access(BIN, os.X_OK):
        help_error = "%s is not built yet" % BIN
        return
    p = subprocess.run([BIN, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, timeout=30)
    if p.returncode != 0:
        help_error = "%s --help exited %d" % (BIN, p.returncode)
        return
    cur = None
    for line in p.stdout.decode().splitlines():
        m = re.match(r"\s+--([a-z0-9-]+)", line)
        if m:
            cur = m.group(1)
            flags[cur] = {"env": None, "default": None}
            continue
        m = re.search(r"\[(IMGCLASSD_[A-Z0-9_]+); default (.*)\]\s*$", line)
        if m and cur:
            flags[cur] = {"env": m.group(1), "default": m.group(2).strip('"')}
    if "port" not in flags:
        help_error = "no --port in %s --help" % BIN


def need_binary():
    if help_error:
        raise Skip(help_error)


def env_names():
    return {v["env"]: k for k, v in flags.items() if v["env"]}


def parse_args(args):
    """{flag: value} from ["--a", "1", "--b=2", "--switch"]; unknown flags fail."""
    out, i = {}, 0
    while i < len(args):
        a = str(args[i])
        check(a.startswith("--"), "argument %r is not a flag" % a)
        name, eq, val = a[2:].partition("=")
        check(name in flags, "--%s is not in imgclassd --help" % name)
        if flags[name]["env"] is None:
            out[name] = True
        elif eq:
            out[name] = val
        else:
            check(i + 1 < len(args), "--%s has no value" % name)
            i += 1
            out[name] = str(args[i])
        i += 1
    return out


def setting(name, args, env):
    """The value the binary would use: flag, else variable, else default."""
    if name in args:
        return args[name]
    e = flags[name]["env"]
    if e in env:
        return str(env[e])
    return flags[name]["default"]


def check_env(env, where):
    names = env_names()
    for k in env:
        if k.startswith("IMGCLASSD_"):
            check(k in names, "%s: %s is not in imgclassd --help" % (where, k))


def accepted(args, env, where):
    """The binary parses these flags and values (config errors exit 2)."""
    e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    e.update({k: str(v) for k, v in env.items() if k.startswith("IMGCLASSD_")})
    p = subprocess.run([BIN] + [str(a) for a in args] + ["--help"], env=e,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30)
    check(p.returncode == 0, "%s: imgclassd rejects them: %s" % (where, p.stderr.decode().strip()))


def duration_s(v):
    """Compose durations: "30s", "1m30s", "500ms" or a number of seconds."""
    if isinstance(v, (int, float)):
        return float(v)
    total, found = 0.0, False
    for n, unit in re.findall(r"([0-9.]+)(ms|us|h|m|s)", str(v)):
        total += float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[unit]
        found = True
    check(found, "cannot read duration %r" % v)
    return total


def mem_bytes(v):
    m = re.fullmatch(r"([0-9.]+)\s*([KMGT]i?|[kmgt]b?|)", str(v))
    check(m, "cannot read memory %r" % v)
    mult = {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "K": 1e3,
            "M": 1e6, "G": 1e9, "T": 1e12, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30,
            "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30}
    return float(m.group(1)) * mult[m.group(2)]


def cpu_count(v):
    s = str(v)
    return float(s[:-1]) / 1000 if s.endswith("m") else float(s)


# ---------------------------------------------------------------------------
# The Deployment's container
# ---------------------------------------------------------------------------


def pod():
    return docs["Deployment"]["spec"]["template"]


def container():
    cs = pod()["spec"]["containers"]
    check(len(cs) == 1, "expected one container, found %d" % len(cs))
    return cs[0]


def k8s_env(c=None):
    """A container's literal env (the Deployment's unless c is given)."""
    env = {}
    for e in (c or container()).get("env", []):
        check("value" in e, "env %s has no literal value" % e.get("name"))
        env[e["name"]] = e["value"]
    return env


def k8s_args(c=None):
    c = c or container()
    check("command" not in c, "command overrides the image's ENTRYPOINT")
    return [str(a) for a in c.get("args", [])]


def container_port(ref, c=None):
    """Resolves a probe/Service port (name or number) to the container's port number."""
    for p in (c or container()).get("ports", []):
        if ref == p.get("name") or ref == p.get("containerPort"):
            return p["containerPort"]
    raise Fail("port %r is not a port of the container" % (ref,))


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------


def test_parse():
    check(yaml is not None, "python3-yaml is missing (make deps installs it)")
    if load_error:
        raise Fail(load_error)
    for kind in ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]:
        check(kind in docs, "no %s in deploy/k8s" % kind)
    kust = docs.get("Kustomization")
    check(kust, "no kustomization.yaml")
    listed = set(kust["resources"])
    present = {os.path.basename(p) for p in glob.glob(os.path.join(K8S, "*.yaml"))}
    check(listed == present - {"kustomization.yaml"},
          "kustomization lists %s, the folder has %s" % (sorted(listed), sorted(present)))
    check("imgclassd" in compose.get("services", {}), "no imgclassd service in the compose file")
    check(dockerfile(), "empty Dockerfile")


def check_flags(args, env, where):
    """Every flag and variable exists, with values the binary accepts."""
    need_binary()
    parse_args(args)
    check_env(env, "%s env" % where)
    accepted(args, env, "%s args/env" % where)


def test_k8s_flags():
    check_flags(k8s_args(), k8s_env(), "Deployment")


def the_port(c):
    """The container's one port, which must be the one the binary listens on."""
    need_binary()
    port = int(setting("port", parse_args(k8s_args(c)), k8s_env(c)))
    ports = c.get("ports", [])
    check([p["containerPort"] for p in ports] == [port],
          "containerPort %s, the binary listens on %d" % ([p["containerPort"] for p in ports], port))
    return port, ports


def test_k8s_ports():
    port, _ = the_port(container())
    svc = docs["Service"]["spec"]["ports"]
    for p in svc:
        check(container_port(p["targetPort"]) == port, "Service targetPort %r" % p["targetPort"])
    ann = pod()["metadata"].get("annotations", {})
    check(ann.get("prometheus.io/scrape") == "true", "no prometheus.io/scrape: \"true\"")
    check(str(ann.get("prometheus.io/port")) == str(port), "prometheus.io/port %r" %
          ann.get("prometheus.io/port"))
    check(ann.get("prometheus.io/path") == "/metrics", "prometheus.io/path %r" %
          ann.get("prometheus.io/path"))


def test_k8s_probes():
    c = container()
    for kind, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
        p = c.get(kind)
        check(p and p.get("httpGet", {}).get("path") == path, "%s must GET %s: %r" % (kind, path, p))
        container_port(p["httpGet"]["port"])
    s = c.get("startupProbe")
    check(s and s.get("httpGet", {}).get("path") in ("/readyz", "/healthz"), "startupProbe %r" % s)
    container_port(s["httpGet"]["port"])
    budget = s.get("initialDelaySeconds", 0) + s.get("periodSeconds", 10) * s.get("failureThreshold", 3)
    check(budget >= 120, "startupProbe allows %d s for loading the weights; want >= 120" % budget)


def test_k8s_shutdown():
    """The grace period outlasts the drain plus the longest request."""
    need_binary()
    args, env = parse_args(k8s_args()), k8s_env()
    drain = int(setting("drain-seconds", args, env))
    req = int(setting("request-timeout-ms", args, env)) / 1000
    grace = pod()["spec"].get("terminationGracePeriodSeconds", 30)
    check(grace > drain + req, "terminationGracePeriodSeconds %d <= drain %d s + request timeout "
          "%.0f s" % (grace, drain, req))
    check(drain >= 5, "drain %d s is shorter than an endpoint update usually takes" % drain)


def test_k8s_resources():
    need_binary()
    r = container().get("resources", {})
    req, lim = r.get("requests", {}), r.get("limits", {})
    for k in ["cpu", "memory"]:
        check(k in req and k in lim, "no %s request and limit" % k)
    cpus = cpu_count(lim["cpu"])
    check(cpus >= 1 and cpus == int(cpus), "cpu limit %r: threads are whole CPUs" % lim["cpu"])
    check(cpu_count(req["cpu"]) == cpus, "cpu request %r != limit %r: the threads follow the "
          "limit (quota), so the pod should get it" % (req["cpu"], lim["cpu"]))
    check(mem_bytes(lim["memory"]) >= 512 << 20, "memory limit %r is too small for ResNet-50" %
          lim["memory"])
    check(mem_bytes(req["memory"]) <= mem_bytes(lim["memory"]), "memory request over the limit")
    args, env = parse_args(k8s_args()), k8s_env()
    for f in ["workers", "http-threads", "engine-threads", "blas-threads"]:
        if f not in flags:
            continue
        n = int(setting(f, args, env))
        check(n == 0 or n <= cpus, "--%s %d is more than the %g CPUs of the limit" % (f, n, cpus))


def test_k8s_selectors():
    d = docs["Deployment"]
    labels = pod()["metadata"]["labels"]

    def matches(sel, where):
        for k, v in sel.items():
            check(labels.get(k) == v, "%s selects %s=%s, the pods have %s" % (where, k, v, labels))

    matches(d["spec"]["selector"]["matchLabels"], "Deployment selector")
    matches(docs["Service"]["spec"]["selector"], "Service")
    matches(docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"], "PodDisruptionBudget")
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    ref = hpa["scaleTargetRef"]
    check(ref["kind"] == "Deployment" and ref["name"] == d["metadata"]["name"],
          "HPA scales %s/%s" % (ref["kind"], ref["name"]))
    pdb = docs["PodDisruptionBudget"]["spec"].get("minAvailable", 0)
    check(hpa["minReplicas"] > pdb, "minReplicas %d <= PDB minAvailable %d: nodes could never be "
          "drained" % (hpa["minReplicas"], pdb))
    check(d["spec"]["replicas"] >= hpa["minReplicas"], "replicas below the HPA minimum")
    check(container()["resources"]["requests"].get("cpu"), "the HPA needs a CPU request")


def test_compose():
    """The compose service: flags, variables, port, health check, weights, stop timing."""
    need_binary()
    s = compose["services"]["imgclassd"]
    raw = [str(a) for a in s.get("command", [])]
    args = parse_args(raw)
    env = s.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    check_env(env, "compose environment")
    accepted(raw, env, "compose command/environment")
    port = int(setting("port", args, env))
    targets = [int(str(p).split(":")[-1].split("/")[0]) for p in s.get("ports", [])]
    check(targets == [port], "compose publishes container ports %s, the binary listens on %d" %
          (targets, port))
    hc = s.get("healthcheck", {}).get("test")
    check(hc == ["CMD", IMAGE_BIN, "--healthcheck"], "healthcheck %r" % hc)
    check("healthcheck" in flags, "the binary has no --healthcheck")
    model = setting("model", args, env)
    mounts = [str(v).split(":")[1] for v in s.get("volumes", [])]
    check(any(model.startswith(m.rstrip("/") + "/") for m in mounts),
          "--model %s is not under a mounted volume %s" % (model, mounts))
    check(s.get("restart") in ("always", "unless-stopped", "on-failure"), "restart %r" %
          s.get("restart"))
    drain = int(setting("drain-seconds", args, env))
    req = int(setting("request-timeout-ms", args, env)) / 1000
    grace = duration_s(s.get("stop_grace_period", "10s"))
    check(grace > drain + req, "stop_grace_period %.0f s <= drain %d s + request timeout %.0f s" %
          (grace, drain, req))
    # Prometheus scrapes the service by its compose name and port.
    jobs = prom["scrape_configs"]
    tg = [t for j in jobs for sc in j.get("static_configs", []) for t in sc["targets"]]
    check("imgclassd:%d" % port in tg, "prometheus.yml targets %s" % tg)
    check(all(j.get("metrics_path", "/metrics") == "/metrics" for j in jobs), "metrics_path")
    cprom = compose["services"].get("prometheus")
    if cprom:
        check(any("prometheus.yml" in str(v) for v in cprom.get("volumes", [])),
              "the prometheus service does not mount deploy/prometheus.yml")


def test_dockerfile():
    need_binary()
    ins = dockerfile()
    kws = [k for k, _ in ins]
    check(kws.count("FROM") >= 2, "not multi-stage")
    check(ins[0] == ("ARG", "BASE=debian:bookworm-slim"), "first line %r" % (ins[0],))
    stages = set()
    for k, r in ins:
        if k != "FROM":
            continue
        parts = r.split()
        check(parts[0] in stages or parts[0] == "${BASE}", "FROM %s: not ${BASE} nor a stage" % r)
        if len(parts) == 3 and parts[1].upper() == "AS":
            stages.add(parts[2])
    get = lambda k: [r for kk, r in ins if kk == k]  # noqa: E731
    port = int(flags["port"]["default"])
    env = {}
    for r in get("ENV"):
        for k, v in re.findall(r"(\w+)=(\S+)", r):
            env[k] = v
    check_env(env, "Dockerfile ENV")
    if "IMGCLASSD_PORT" in env:
        port = int(env["IMGCLASSD_PORT"])
    check(get("EXPOSE") == [str(port)], "EXPOSE %s, the binary listens on %d" % (get("EXPOSE"), port))
    import json
    ep = json.loads(get("ENTRYPOINT")[-1])
    check(ep == [IMAGE_BIN], "ENTRYPOINT %r (exec form, the server as PID 1)" % ep)
    cmd = json.loads(get("CMD")[-1])
    parse_args(cmd)
    accepted(cmd, env, "Dockerfile CMD/ENV")
    hc = get("HEALTHCHECK")[-1]
    check(hc.endswith('CMD ["%s", "--healthcheck"]' % IMAGE_BIN), "HEALTHCHECK %r" % hc)
    user = get("USER")[-1].split(":")[0]
    check(user.isdigit() and user != "0", "USER %r: numeric and not root" % user)


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def without_model(args):
    """args without their --model flags: --model is repeatable (several
    models), so the manifest's weights file is replaced by random weights,
    not served beside them."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if a == "--model":
            i += 2
            continue
        if a.startswith("--model="):
            i += 1
            continue
        out.append(a)
        i += 1
    return out


def serve(args, env, probe):
    """Starts the binary with args (plus random weights unless args name
    their own, an ephemeral loopback port and a short drain) and env, waits
    for /readyz, calls probe(base_url, port), then checks that SIGTERM ends
    it with status 0."""
    args = list(args)
    if "--model" not in args:
        args += ["--model", "random:resnet18"]
    args += ["--port", "0", "--bind", "127.0.0.1", "--drain-seconds", "1", "--static-dir", ""]
    e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    e.update({k: str(v) for k, v in env.items()})
    log = tempfile.TemporaryFile()
    p = subprocess.Popen([BIN] + args, env=e, stdout=subprocess.PIPE, stderr=log)

    def tail():
        log.seek(0)
        return log.read().decode(errors="replace")[-300:]

    try:
        line = p.stdout.readline().decode()
        m = re.search(r":(\d+)\s*$", line)
        check(m, "no port line on stdout: %r" % line)
        base = "http://127.0.0.1:%s" % m.group(1)
        deadline = time.monotonic() + 120
        while get(base + "/readyz")[0] != 200:
            if p.poll() is not None:
                raise Fail("the server exited with status %d: %s" % (p.returncode, tail()))
            check(time.monotonic() < deadline, "/readyz not 200 within 120 s")
            time.sleep(0.2)
        probe(base, m.group(1), e)
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=60)
        check(rc == 0, "exit status %d after SIGTERM: %s" % (rc, tail()))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        log.close()


def test_live_probes():
    """The binary, started with the Deployment's args and env (random weights,
    an ephemeral port), answers every path the manifests and compose probe."""
    need_binary()

    def probe(base, port, env):
        c = container()
        paths = {c[k]["httpGet"]["path"] for k in ["startupProbe", "readinessProbe", "livenessProbe"]}
        paths.add(pod()["metadata"]["annotations"]["prometheus.io/path"])
        for path in sorted(paths):
            code, body = get(base + path)
            check(code == 200, "GET %s answered %d" % (path, code))
        code, body = get(base + "/metrics")
        check(b"imgclassd_requests_total" in body, "/metrics has no imgclassd_requests_total")
        # The image's HEALTHCHECK command, pointed at this port the way the
        # manifests set it: by IMGCLASSD_PORT.
        hc = subprocess.run([BIN, "--healthcheck"], env=dict(env, IMGCLASSD_PORT=port,
                            IMGCLASSD_BIND="127.0.0.1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, timeout=30)
        check(hc.returncode == 0, "--healthcheck exited %d: %s" % (hc.returncode, hc.stdout))

    serve(without_model(k8s_args()), k8s_env(), probe)


# ---------------------------------------------------------------------------
# KServe (deploy/kserve/): an InferenceService with a custom predictor
# ---------------------------------------------------------------------------


def isvc():
    check("InferenceService" in kdocs, "no InferenceService in deploy/kserve")
    return kdocs["InferenceService"]


def kcontainer():
    cs = isvc()["spec"]["predictor"].get("containers", [])
    check(len(cs) == 1, "expected one predictor container, found %d" % len(cs))
    return cs[0]


def kserve_env():
    return k8s_env(kcontainer())


def kserve_args():
    return k8s_args(kcontainer())


def kserve_model_names(args):
    """The names the binary gives the manifest's models: NAME=SPEC, else the
    architecture (read from the weights file's name, resnetD)."""
    names, i = [], 0
    while i < len(args):
        if args[i] == "--model" or args[i].startswith("--model="):
            spec = args[i][8:] if args[i].startswith("--model=") else args[i + 1]
            name, eq, rest = spec.partition("=")
            if not eq:
                m = re.search(r"resnet\d+", spec)
                check(m, "cannot tell the name of --model %s; give it NAME=" % spec)
                name = m.group(0)
            names.append(name)
        i += 1
    return names


def test_kserve_parse():
    d = isvc()
    check(d.get("apiVersion") == "serving.kserve.io/v1beta1", "apiVersion %r" % d.get("apiVersion"))
    check(set(kdocs) == {"InferenceService"}, "deploy/kserve has %s" % sorted(kdocs))
    pred = d["spec"]["predictor"]
    c = kcontainer()
    check(c.get("name") == "kserve-container", "predictor container named %r, KServe expects "
          "kserve-container" % c.get("name"))
    check(kserve_env().get("PROTOCOL") == "v2", "PROTOCOL %r: the predictor must declare v2" %
          kserve_env().get("PROTOCOL"))
    check(c.get("image") == container().get("image"), "image %r, the Deployment runs %r" %
          (c.get("image"), container().get("image")))
    check(pred.get("minReplicas", 1) >= 1 and pred.get("maxReplicas", 1) >= pred.get("minReplicas", 1),
          "replicas %r..%r" % (pred.get("minReplicas"), pred.get("maxReplicas")))
    check(os.path.exists(os.path.join(KSERVE, "README.md")), "no deploy/kserve/README.md")


def test_kserve_flags():
    check_flags(kserve_args(), kserve_env(), "InferenceService")
    check(kserve_model_names(kserve_args()), "the predictor names no --model")


def test_kserve_ports():
    port, ports = the_port(kcontainer())
    check(ports[0].get("name") in (None, "http1"), "port name %r: Knative wants http1 for "
          "HTTP/1.1" % ports[0].get("name"))
    ann = isvc()["metadata"].get("annotations", {})
    if "prometheus.kserve.io/port" in ann:
        check(str(ann["prometheus.kserve.io/port"]) == str(port), "prometheus.kserve.io/port %r" %
              ann["prometheus.kserve.io/port"])
    if "prometheus.kserve.io/path" in ann:
        check(ann["prometheus.kserve.io/path"] == "/metrics", "prometheus.kserve.io/path %r" %
              ann["prometheus.kserve.io/path"])


def test_kserve_probes():
    c = kcontainer()
    for kind, path in [("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live")]:
        p = c.get(kind)
        check(p and p.get("httpGet", {}).get("path") == path, "%s must GET %s: %r" % (kind, path, p))
        if "port" in p["httpGet"]:
            container_port(p["httpGet"]["port"], c)


def test_kserve_resources():
    """Resources, shutdown timing and security context as in deploy/k8s."""
    need_binary()
    c = kcontainer()
    check(c.get("resources") == container().get("resources"), "resources %r, the Deployment has "
          "%r" % (c.get("resources"), container().get("resources")))
    cpus = cpu_count(c["resources"]["limits"]["cpu"])
    args, env = parse_args(kserve_args()), kserve_env()
    for f in ["workers", "http-threads", "engine-threads", "blas-threads"]:
        if f not in flags:
            continue
        n = int(setting(f, args, env))
        check(n == 0 or n <= cpus, "--%s %d is more than the %g CPUs of the limit" % (f, n, cpus))
    drain = int(setting("drain-seconds", args, env))
    req = int(setting("request-timeout-ms", args, env)) / 1000
    timeout = isvc()["spec"]["predictor"].get("timeout", 300)
    check(timeout > drain + req, "predictor timeout %d <= drain %d s + request timeout %.0f s" %
          (timeout, drain, req))
    sc = c.get("securityContext", {})
    check(sc.get("runAsNonRoot") is True, "runAsNonRoot %r" % sc.get("runAsNonRoot"))
    user = [r for k, r in dockerfile() if k == "USER"][-1].split(":")[0]
    check(str(sc.get("runAsUser")) == user, "runAsUser %r, the image's USER is %s" %
          (sc.get("runAsUser"), user))
    check(sc.get("readOnlyRootFilesystem") is True, "the root filesystem is writable")
    check(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation %r" %
          sc.get("allowPrivilegeEscalation"))


def test_kserve_live():
    """The binary, started with the InferenceService's args and env (its model
    names on random weights), answers the probe paths with 200, reports the
    models ready under /v2/models/{m}/ready and listens on the port the
    manifest names (by IMGCLASSD_PORT, checked with --healthcheck)."""
    need_binary()
    raw = kserve_args()
    names = kserve_model_names(raw)
    args = without_model(raw)
    for n in names:
        args += ["--model", "%s=random:resnet18" % n]
    env = kserve_env()

    def probe(base, port, e):
        c = kcontainer()
        paths = {c[k]["httpGet"]["path"] for k in ["readinessProbe", "livenessProbe"]}
        ann = isvc()["metadata"].get("annotations", {})
        if "prometheus.kserve.io/path" in ann:
            paths.add(ann["prometheus.kserve.io/path"])
        paths.add("/v2")
        for n in names:
            paths.add("/v2/models/%s/ready" % n)
            paths.add("/v2/models/%s" % n)
        for path in sorted(paths):
            code, body = get(base + path)
            check(code == 200, "GET %s answered %d: %r" % (path, code, body[:200]))
        import json
        check(json.loads(get(base + "/v2/health/ready")[1]) == {"ready": True}, "/v2/health/ready body")
        check(json.loads(get(base + "/v2/health/live")[1]) == {"live": True}, "/v2/health/live body")
        hc = subprocess.run([BIN, "--healthcheck"], env=dict(e, IMGCLASSD_PORT=port,
                            IMGCLASSD_BIND="127.0.0.1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, timeout=30)
        check(hc.returncode == 0, "--healthcheck exited %d: %s" % (hc.returncode, hc.stdout))

    serve(args, env, probe)


def main():
    global load_error
    if yaml is not None:
        try:
            load()
        except Exception as e:  # reported by test_parse; the rest cannot run
            load_error = "%s: %s" % (type(e).__name__, e)
    read_help()
    case(test_parse)
    if yaml is None or load_error:
        return 1
    for t in [test_k8s_flags, test_k8s_ports, test_k8s_probes, test_k8s_shutdown,
              test_k8s_resources, test_k8s_selectors, test_compose, test_dockerfile,
              test_live_probes, test_kserve_parse, test_kserve_flags, test_kserve_ports,
              test_kserve_probes, test_kserve_resources, test_kserve_live]:
        case(t)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
