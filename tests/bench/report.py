#!/usr/bin/python3
"""report.py: turns bench.sh's measurements into build/bench.json and a table
with the ratios against PyTorch and the targets of the performance issue."""
import argparse
import json


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def best_of_rounds(runs, key):
    """The fastest run of each configuration, in first-seen order."""
    best = {}
    for r in runs:
        k = key(r)
        if k not in best or r["images_per_s"] > best[k]["images_per_s"]:
            best[k] = r
    return list(best.values())


def merge_torch(rounds):
    """bench_torch.py's rounds as one result: each (mode, batch) at its best."""
    runs = best_of_rounds([r for t in rounds for r in t["runs"]], lambda r: (r["mode"], r["batch"]))
    best = {}
    for mode in ("eager", "frozen"):
        mine = [r for r in runs if r["mode"] == mode]
        best[mode] = max(mine, key=lambda r: r["images_per_s"])
        best[mode + "_batch1"] = next(r for r in mine if r["batch"] == 1)
    return dict(rounds[0], runs=runs, best=best, rounds=len(rounds))


def best_server(rows, kind):
    """loadgen's runs of one kind of server, each client count at its best round."""
    return best_of_rounds([r["data"] for r in rows if r["kind"] == kind], lambda r: r["clients"])


def summarise(rows):
    def cfg(e):
        return (e["batch"], e["workers"], e["threads"], e.get("kernel"))
    engine = best_of_rounds([r["data"] for r in rows if r["kind"] == "engine"], cfg)
    portable = best_of_rounds([r["data"] for r in rows if r["kind"] == "engine_portable"], cfg)
    torch = merge_torch([r["data"] for r in rows if r["kind"] == "torch"])
    server = best_server(rows, "server")
    rss = next(r["data"]["peak_rss_bytes"] for r in rows if r["kind"] == "server_rss")
    sat = max(engine, key=lambda e: e["images_per_s"])
    # idle single-image latency: one image, all cores on it
    single = min((e for e in engine if e["batch"] == 1),
                 key=lambda e: e["batch_latency_p50_ms"])
    params = 25557032 if "resnet50" in sat["model"] else None
    weights_mb = params * 4 / 2**20 if params else None
    by_clients = {s["clients"]: s for s in server}
    s1, s16 = by_clients.get(1), by_clients.get(16)
    eager, frozen = torch["best"]["eager"], torch["best"]["frozen"]
    frozen_b1 = torch["best"]["frozen_batch1"]
    targets = {
        "engine_vs_eager": (sat["images_per_s"] / eager["images_per_s"], ">=", 1.5),
        "engine_vs_frozen": (sat["images_per_s"] / frozen["images_per_s"], ">=", 1.0),
        "single_latency_ms_vs_frozen_b1": (single["batch_latency_p50_ms"],
                                           "<=", frozen_b1["batch_latency_ms"]),
    }
    if s16:
        targets["server16_share_of_engine"] = (s16["images_per_s"] / sat["images_per_s"], ">=", 0.9)
        targets["server16_p99_over_p50"] = (s16["p99_ms"] / max(s16["p50_ms"], 1e-9), "<=", 2.0)
    if s1:
        targets["server1_p50_ms"] = (s1["p50_ms"], "<=",
                                     single["batch_latency_p50_ms"] + s1["mean_decode_ms"] + 5)
    if weights_mb:
        targets["peak_rss_mb"] = (rss / 2**20, "<=", 2 * weights_mb + 200)
    int8 = best_of_rounds([r["data"] for r in rows if r["kind"] == "engine_int8"], cfg)
    tq = best_of_rounds([r for t in rows if t["kind"] == "torch_int8" for r in t["data"]["runs"]],
                        lambda r: r["batch"])
    peaks = [r["data"] for r in rows if r["kind"] == "peak"]
    peak = {k: max(p[k] for p in peaks) for k in peaks[0]} if peaks else {}
    tq_best = max(tq, key=lambda r: r["images_per_s"]) if tq else None
    if int8 and tq:
        sat8 = max(int8, key=lambda e: e["images_per_s"])
        single8 = min((e for e in int8 if e["batch"] == 1), key=lambda e: e["batch_latency_p50_ms"])
        tq_b1 = next(r for r in tq if r["batch"] == 1)
        targets["int8_vs_torch_int8"] = (sat8["images_per_s"] / tq_best["images_per_s"], ">=", 1.25)
        targets["int8_vs_engine_fp32"] = (sat8["images_per_s"] / sat["images_per_s"], ">=", 2.5)
        targets["int8_single_latency_ms_vs_torch_int8_b1"] = (single8["batch_latency_p50_ms"], "<=",
                                                             tq_b1["batch_latency_ms"])
    # the server in int8 against PyTorch int8's engine-only best and against
    # the server in fp32 at the same client count; keyed by the client count
    # as a string, as bench.json has it
    server8 = best_server(rows, "server_int8")
    rss8 = next((r["data"]["peak_rss_bytes"] for r in rows if r["kind"] == "server_int8_rss"), None)
    ratios8 = {}
    for sv in server8:
        fp32 = by_clients.get(sv["clients"])
        ratios8[str(sv["clients"])] = {
            "vs_torch_int8_best": sv["images_per_s"] / tq_best["images_per_s"] if tq_best else None,
            "vs_server_fp32": sv["images_per_s"] / fp32["images_per_s"]
            if fp32 and fp32["images_per_s"] else None}
    s8_16 = ratios8.get("16", {}).get("vs_torch_int8_best")
    if s8_16 is not None:
        targets["server_int8_16_vs_torch_int8"] = (s8_16, ">=", 0.8)
    met = {k: (v <= lim if op == "<=" else v >= lim) for k, (v, op, lim) in targets.items()}
    return {"engine_int8": int8, "torch_int8": tq, "peak": peak, "engine": engine, "engine_portable": portable, "engine_saturated": sat, "engine_single": single, "torch": torch,
            "server": server, "server_peak_rss_bytes": rss,
            "server_int8": server8, "server_int8_peak_rss_bytes": rss8,
            "server_int8_ratios": ratios8,
            "targets": {k: {"value": v, "op": op, "limit": lim, "met": met[k]}
                        for k, (v, op, lim) in targets.items()}}


def server_row(label, sv, extra=()):
    """One loadgen run as a table row; extra: more notes for its last column."""
    notes = [f"mean batch {sv['mean_batch']:.2f}", f"decode {sv['mean_decode_ms']:.1f} ms",
             f"{sv['errors']} errors", *extra]
    return (f"| {label} {sv['clients']} clients | {sv['images_per_s']:.1f} | "
            f"p50 {sv['p50_ms']:.1f} / p90 {sv['p90_ms']:.1f} / p99 {sv['p99_ms']:.1f} | "
            f"{', '.join(notes)} |")


def table(name, s):
    sat, single, t = s["engine_saturated"], s["engine_single"], s["torch"]["best"]
    out = [f"### {name}", "",
           "| measurement | images/s | latency ms | note |", "|---|---|---|---|"]
    for e in s["engine"] + s["engine_portable"]:
        out.append(f"| engine b{e['batch']} {e['workers']}w x {e['threads']}t "
                   f"({e.get('kernel', '?')}) | "
                   f"{e['images_per_s']:.1f} | {e['batch_latency_p50_ms']:.1f} (batch p50) | "
                   f"{e['gflops']:.0f} GFLOP/s, {100 * e['peak_share']:.0f}% of "
                   f"{e['fma_peak_gflops']:.0f} |")
    for mode in ("eager", "frozen"):
        r = t[mode]
        out.append(f"| PyTorch {mode} (best: b{r['batch']}) | {r['images_per_s']:.1f} | "
                   f"{r['batch_latency_ms']:.1f} (batch) | |")
    r = t["frozen_batch1"]
    out.append(f"| PyTorch frozen b1 | {r['images_per_s']:.1f} | {r['batch_latency_ms']:.1f} | |")
    for sv in s["server"]:
        out.append(server_row("server", sv))
    out.append(f"| server peak RSS (64 clients) | | | {s['server_peak_rss_bytes'] / 2**20:.0f} MB |")
    for e in s.get("engine_int8", []):
        out.append(f"| engine int8 b{e['batch']} {e['workers']}w x {e['threads']}t ({e['kernel']}) | "
                   f"{e['images_per_s']:.1f} | {e['batch_latency_p50_ms']:.1f} (batch p50) | "
                   f"{e['gflops']:.0f} GOP/s |")
    for r in s.get("torch_int8", []):
        out.append(f"| PyTorch onednn int8 b{r['batch']} | {r['images_per_s']:.1f} | "
                   f"{r['batch_latency_ms']:.1f} (batch) | |")
    for sv in s.get("server_int8", []):
        r = s["server_int8_ratios"][str(sv["clients"])]
        vs = [f"{r[k]:.2f}x {what}" for k, what in (("vs_torch_int8_best", "PyTorch int8 best"),
                                                     ("vs_server_fp32", "server fp32"))
              if r[k] is not None]
        out.append(server_row("server int8", sv, vs))
    if s.get("server_int8_peak_rss_bytes") is not None:
        out.append(f"| server int8 peak RSS (64 clients) | | | "
                   f"{s['server_int8_peak_rss_bytes'] / 2**20:.0f} MB |")
    p = s.get("peak")
    if p:
        out.append(f"| peak, best of rounds | | | fp32 FMA {p['fp32_fma_core_gflops']:.0f} GFLOP/s per "
                   f"core, {p['fp32_fma_sum_gflops']:.0f} all cores; int8 VNNI "
                   f"{p['int8_vnni_core_gops']:.0f} GOP/s per core, {p['int8_vnni_sum_gops']:.0f} all |")
    out += ["", "| target | measured | goal | met |", "|---|---|---|---|"]
    for k, v in s["targets"].items():
        out.append(f"| {k} | {v['value']:.2f} | {v['op']} {v['limit']:.2f} | "
                   f"{'yes' if v['met'] else 'NO'} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--machine", required=True)
    ap.add_argument("--native", required=True)
    ap.add_argument("--machine-env", default="")
    ap.add_argument("--model", default="random:resnet50")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    res = {"model": a.model,
           "variants": {"machine": dict(env=a.machine_env, **summarise(load(a.machine))),
                        "native": dict(env="OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset",
                                       **summarise(load(a.native)))}}
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(table(f"OpenBLAS as set on this machine ({a.machine_env})", res["variants"]["machine"]))
    print()
    print(table("OpenBLAS's own kernels (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE unset)",
                res["variants"]["native"]))
    print(f"\nwritten: {a.out}")


if __name__ == "__main__":
    main()
