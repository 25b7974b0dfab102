#!/usr/bin/python3
"""bench_torch_int8.py: PyTorch's own int8 for `make bench`: torchvision's
quantizable ResNet-50, onednn engine (Debian's PyTorch has no fbgemm),
per-channel weights, activation scales calibrated on the shared photos
(random tensors when they are absent), TorchScript-frozen; images/s at each
batch size on all cores. Prints one JSON object."""
import argparse
import json
import os
import time
from pathlib import Path

import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.models.quantization import resnet50


def calibration(images_dir):
    files = sorted(Path(images_dir).glob("*.JPEG")) if images_dir and Path(images_dir).is_dir() else []
    if not files:
        return torch.randn(16, 3, 224, 224), "random tensors"
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    return torch.stack([tf(Image.open(f).convert("RGB")) for f in files]), f"{len(files)} photos"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batches", default="1,2,4,8,16")
    ap.add_argument("--images", default="../shared/images")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.backends.quantized.engine = "onednn"
    torch.manual_seed(0)
    m = resnet50(weights=None, quantize=False).eval()
    m.fuse_model()
    m.qconfig = torch.ao.quantization.get_default_qconfig("onednn")
    torch.ao.quantization.prepare(m, inplace=True)
    calib, what = calibration(args.images)
    with torch.no_grad():
        for i in range(0, len(calib), 8):
            m(calib[i:i + 8])
    torch.ao.quantization.convert(m, inplace=True)
    frozen = torch.jit.freeze(torch.jit.script(m))
    runs = []
    with torch.no_grad():
        for b in [int(s) for s in args.batches.split(",")]:
            x = torch.randn(b, 3, 224, 224)
            frozen(x)
            frozen(x)
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < args.seconds:
                frozen(x)
                n += 1
            wall = time.perf_counter() - start
            runs.append({"mode": "int8_onednn", "batch": b, "images_per_s": n * b / wall,
                         "batch_latency_ms": 1e3 * wall / n, "batches": n})
    print(json.dumps({"torch": torch.__version__, "engine": "onednn", "calibration": what,
                      "threads": args.threads, "runs": runs,
                      "best": max(runs, key=lambda r: r["images_per_s"])}))


if __name__ == "__main__":
    main()
