#!/usr/bin/python3
"""gen_int8_reference.py: PyTorch's own int8 on the reference ResNet-50, the
bar the engine's int8 must clear: torchvision's quantizable ResNet-50 with the
weights of build/ref/resnet50.safetensors, quantized by the onednn engine
(per-channel weights, static activation scales calibrated on the reference
images), frozen; its logits on every reference image, next to torch fp32's.

    /usr/bin/python3 tests/gen_int8_reference.py --ref build/ref

Writes resnet50.int8_onednn.logits.f32 (float32 LE [n_images][1000], the
images and preprocessing of manifest.json) and int8_manifest.json.
"""

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from torchvision.models.quantization import resnet50


def load_safetensors(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        dt = {"F32": np.float32, "I64": np.int64}[e["dtype"]]
        out[name] = torch.from_numpy(np.frombuffer(data[a:b], dtype=dt).reshape(e["shape"]).copy())
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", default="build/ref")
    args = ap.parse_args()
    ref = Path(args.ref)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    if "onednn" not in torch.backends.quantized.supported_engines:
        # a build or a CPU without it: the test skips, naming this reason
        why = (f"PyTorch {torch.__version__} has no onednn quantized engine here "
               f"(supported: {', '.join(torch.backends.quantized.supported_engines)})")
        (ref / "int8_manifest.json").write_text(json.dumps({"skipped": why}, indent=1) + "\n")
        print("gen_int8_reference:", why)
        return
    torch.backends.quantized.engine = "onednn"
    man = json.loads((ref / "manifest.json").read_text())
    model = next(m for m in man["models"] if m["path"] == "resnet50.safetensors")
    n = len(man["images"])
    x = torch.from_numpy(np.fromfile(ref / man["logits_preproc"], dtype="<f4").reshape(n, 3, 224, 224))
    fp32 = np.fromfile(ref / model["logits"], dtype="<f4").reshape(n, 1000)

    m = resnet50(weights=None, quantize=False)
    m.load_state_dict(load_safetensors(ref / model["path"]))
    m.eval()
    m.fuse_model()
    m.qconfig = torch.ao.quantization.get_default_qconfig("onednn")
    torch.ao.quantization.prepare(m, inplace=True)
    with torch.no_grad():
        for i in range(0, n, 8):  # calibrated on the very images it is judged on
            m(x[i:i + 8])
    torch.ao.quantization.convert(m, inplace=True)
    frozen = torch.jit.freeze(torch.jit.script(m))
    with torch.no_grad():
        q = torch.cat([frozen(x[i:i + 8]) for i in range(0, n, 8)]).numpy().astype("<f4")
    q.tofile(ref / "resnet50.int8_onednn.logits.f32")

    shared = [i for i, e in enumerate(man["images"]) if e.get("kind") == "shared"]
    def agreement(idx):
        if not idx:
            return {}
        a, b = fp32[idx], q[idx]
        top5 = np.argsort(-b, 1)[:, :5]
        cos = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
        return {"images": len(idx), "top1": float((a.argmax(1) == b.argmax(1)).mean()),
                "top5": float(np.mean([a[i].argmax() in top5[i] for i in range(len(idx))])),
                "mean_cosine": float(cos.mean())}
    out = {"model": model["path"], "engine": "onednn", "torch": torch.__version__,
           "logits": "resnet50.int8_onednn.logits.f32",
           "all": agreement(list(range(n))), "shared": agreement(shared)}
    (ref / "int8_manifest.json").write_text(json.dumps(out, indent=1) + "\n")
    print("gen_int8_reference:", json.dumps(out))


if __name__ == "__main__":
    main()
