#!/usr/bin/python3
"""bench_torch.py: the reference for `make bench`: torchvision's ResNet-50 on
Debian's PyTorch, eager and TorchScript-frozen, at each batch size on all
cores; prints one JSON object with every measurement and the best of each."""
import argparse
import json
import os
import time

import torch
import torchvision


def measure(fn, x, seconds):
    """Images/s and mean batch latency of fn(x), after two warm-up calls."""
    with torch.no_grad():
        fn(x)
        fn(x)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fn(x)
            n += 1
        wall = time.perf_counter() - start
    return {"images_per_s": n * x.shape[0] / wall, "batch_latency_ms": 1e3 * wall / n, "batches": n}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batches", default="1,2,4,8,16")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    runs = []
    for b in [int(s) for s in args.batches.split(",")]:
        x = torch.randn(b, 3, 224, 224)
        r = measure(model, x, args.seconds)
        runs.append(dict(mode="eager", batch=b, **r))
        with torch.no_grad():
            frozen = torch.jit.optimize_for_inference(torch.jit.trace(model, x))
        r = measure(frozen, x, args.seconds)
        runs.append(dict(mode="frozen", batch=b, **r))
        del frozen
    best = {}
    for mode in ("eager", "frozen"):
        mine = [r for r in runs if r["mode"] == mode]
        best[mode] = max(mine, key=lambda r: r["images_per_s"])
        best[mode + "_batch1"] = next(r for r in mine if r["batch"] == 1)
    print(json.dumps({"torch": torch.__version__, "torchvision": torchvision.__version__,
                      "threads": args.threads, "runs": runs, "best": best}))


if __name__ == "__main__":
    main()
