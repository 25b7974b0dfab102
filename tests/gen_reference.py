#!/usr/bin/python3
"""gen_reference.py: reference data for the C engine's tests, with torchvision
as the oracle: seeded random ResNets (safetensors), synthetic JPEGs, torchvision
preprocessed tensors and logits, and a manifest.json that ties them together.

Run with Debian's /usr/bin/python3 (torch, torchvision, PIL, numpy):
    /usr/bin/python3 tests/gen_reference.py --out build/ref

Output layout (every relative path in manifest.json is relative to --out):
    images/*.jpg                      synthetic JPEGs (decoder coverage)
    preproc_<resize>_<interp>.f32     float32 LE [n_images][3][224][224]
    resnetD.safetensors               F32 weights, torchvision key names
    resnet18_f16.safetensors          the resnet18 weights stored as F16
    resnet18_bf16.safetensors         ... and as BF16
    <model>.logits.f32                float32 LE [n_images][1000], computed on
                                      preproc_256_bilinear.f32
    manifest.json                     written last; its presence means done

The models are random but not degenerate: conv weights are Kaiming-normal,
BN gamma/beta are random (smaller gamma closing each residual branch), BN
running statistics are calibrated on image-like inputs, and the classifier is
scaled so that logits spread over a few units and the top-1 class differs
from image to image. The weights depend only on --seed (and the synthetic
images, which depend only on the seed), not on whether ../shared/images
exists, so reruns give byte-identical model files.
"""

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image, ImageDraw, ImageFilter, ImageOps
from torchvision.transforms import InterpolationMode

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
CROP = 224
DEPTHS = (18, 34, 50, 101, 152)
NUM_CLASSES = 1000

# (resize, interpolation name, file). The first one is what logits use.
# (resize, interpolation, file, decode): decode "fast" is torchvision on the
# photo as a phone shows it (EXIF orientation applied), the engine's default
# pipeline apart from its DCT scaling of large photos; "exact" is
# torchvision on PIL's plain decode (no EXIF transpose), what the engine's
# ENG_DECODE_EXACT must match.
PREPROCS = [
    (256, "bilinear", "preproc_256_bilinear.f32", "fast"),
    (232, "bilinear", "preproc_232_bilinear.f32", "fast"),
    (256, "bicubic", "preproc_256_bicubic.f32", "fast"),
    (256, "bilinear", "preproc_exact_256_bilinear.f32", "exact"),
]
INTERP = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}

# BN calibration: batches x images of smooth image-like noise at 224x224.
CALIB_BATCHES = 2
CALIB_BATCH = 16
FC_FIT_IMAGES = 32      # eval-mode features used to scale the classifier
LOGIT_SPREAD = 3.0      # std of the logits over classes, mean over the fit images
FORWARD_CHUNK = 8       # images per torchvision forward call
# BN gamma ~ U(0.5, 1.5), except on the last BN of each residual branch,
# U(LAST_GAMMA): as in trained ResNets, the branches add less than the
# identity path. With U(0.5, 1.5) everywhere the deep models are chaotic:
# torch's own float32 resnet152 logits were ~0.5 of the test tolerance away
# from float64, and the top-1 class was the same for most images.
LAST_GAMMA = (0.2, 0.6)


def log(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------

def write_atomic(path, data):
    """Writes bytes to path via a temporary file and rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_f32(path, arr):
    write_atomic(path, np.ascontiguousarray(arr, dtype="<f4").tobytes())


def tensor_bytes(t, dtype):
    """Raw little-endian bytes of tensor t stored as dtype (safetensors name)."""
    t = t.detach().contiguous().cpu()
    if dtype == "F32":
        return t.to(torch.float32).numpy().astype("<f4").tobytes()
    if dtype == "F16":
        return t.to(torch.float32).numpy().astype("<f2").tobytes()
    if dtype == "BF16":
        # Round-to-nearest-even by torch, then reinterpret the 16-bit pattern.
        return t.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()
    if dtype == "I64":
        return t.to(torch.int64).numpy().astype("<i8").tobytes()
    raise ValueError(dtype)


DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8}


def write_safetensors(path, state_dict, float_dtype):
    """Writes a state_dict in the safetensors format: u64 LE header length N,
    N bytes of JSON (space-padded to a multiple of 8), then the tensors back to
    back. Integer tensors (num_batches_tracked) are stored as I64, floating
    ones as float_dtype. Like the safetensors library, tensors are laid out by
    decreasing element size, then by name, so every tensor is aligned to its
    element size."""
    items = []
    for name, t in state_dict.items():
        dtype = float_dtype if t.is_floating_point() else "I64"
        items.append((name, dtype, t))
    items.sort(key=lambda it: (-DTYPE_SIZE[it[1]], it[0]))
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    off = 0
    for name, dtype, t in items:
        b = tensor_bytes(t, dtype)
        assert len(b) == t.numel() * DTYPE_SIZE[dtype]
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((-len(hjson)) % 8)
    write_atomic(path, len(hjson).to_bytes(8, "little") + hjson + b"".join(blobs))
    return 8 + len(hjson) + off


# --------------------------------------------------------------------------
# Synthetic images
# --------------------------------------------------------------------------

def smooth_field(rng, w, h, cells, channels):
    """Low-resolution Gaussian noise upsampled bicubically to w x h:
    [h][w][channels] float32, roughly unit variance, smooth."""
    ch = max(2, int(round(cells * h / max(w, h))) + 1)
    cw = max(2, int(round(cells * w / max(w, h))) + 1)
    out = np.empty((h, w, channels), np.float32)
    for c in range(channels):
        small = rng.standard_normal((ch, cw)).astype(np.float32)
        out[:, :, c] = np.asarray(Image.fromarray(small, "F").resize((w, h), Image.BICUBIC))
    return out


def synth_rgb(rng, w, h):
    """A photo-like RGB image: gradients, multi-scale smooth noise, blurred
    shapes with soft edges, and grain. uint8 [h][w][3]."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx /= max(w - 1, 1)
    yy /= max(h - 1, 1)
    # Two-colour linear gradient at a random angle, plus a radial vignette.
    a = rng.uniform(0, 2 * math.pi)
    t = (np.cos(a) * xx + np.sin(a) * yy)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    img = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]
    cx, cy = rng.uniform(0.2, 0.8, 2)
    r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    img *= (1.0 - rng.uniform(0.1, 0.5) * r)[..., None]
    # Multi-scale smooth noise (a 1/f-like texture).
    for cells, amp in ((3, 45.0), (9, 22.0), (30, 10.0)):
        img += amp * smooth_field(rng, w, h, cells, 3)
    base = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")

    # Shapes on a transparent layer, blurred a little so edges are soft.
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    s = min(w, h)
    for _ in range(int(rng.integers(5, 13))):
        col = tuple(int(v) for v in rng.integers(0, 256, 3)) + (int(rng.integers(120, 256)),)
        x0, y0 = rng.uniform(-0.1, 1.0) * w, rng.uniform(-0.1, 1.0) * h
        sz = rng.uniform(0.05, 0.45) * s
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse([x0, y0, x0 + sz, y0 + sz * rng.uniform(0.4, 1.6)], fill=col)
        elif kind == 1:
            draw.rectangle([x0, y0, x0 + sz * rng.uniform(0.3, 2.0), y0 + sz], fill=col)
        else:
            pts = [(x0 + rng.uniform(-1, 1) * sz, y0 + rng.uniform(-1, 1) * sz)
                   for _ in range(int(rng.integers(3, 7)))]
            draw.polygon(pts, fill=col)
        if rng.uniform() < 0.3:
            draw.line([(rng.uniform(0, w), rng.uniform(0, h)), (rng.uniform(0, w), rng.uniform(0, h))],
                      fill=col, width=max(1, int(s * rng.uniform(0.005, 0.03))))
    layer = layer.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 2.5)) * s / 400))
    base = Image.alpha_composite(base.convert("RGBA"), layer).convert("RGB")

    # Grain.
    arr = np.asarray(base).astype(np.float32)
    arr += rng.normal(0, rng.uniform(2, 7), arr.shape).astype(np.float32)
    return np.clip(arr + 0.5, 0, 255).astype(np.uint8)


def synth_cmyk(rng, w, h):
    """A CMYK image with a real black channel (not just inverted RGB)."""
    rgb = synth_rgb(rng, w, h).astype(np.float32)
    cmy = 255.0 - rgb
    kmax = cmy.min(axis=2)
    frac = np.clip(0.5 + 0.4 * smooth_field(rng, w, h, 4, 1)[..., 0], 0, 1)
    k = kmax * frac
    cmy = cmy - k[..., None]
    arr = np.concatenate([cmy, k[..., None]], axis=2)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "CMYK")


def exif_with_orientation(o):
    ex = Image.Exif()
    ex[0x0112] = o
    return ex


# name suffix, width, height, kind, mode, save options
SYNTH_SPECS = [
    ("640x480", 640, 480, "baseline", "RGB", dict(quality=90)),
    ("333x500", 333, 500, "baseline", "RGB", dict(quality=90)),
    ("500x333", 500, 333, "baseline", "RGB", dict(quality=90)),
    ("257x256", 257, 256, "baseline", "RGB", dict(quality=90)),
    ("224x224", 224, 224, "baseline", "RGB", dict(quality=90)),
    ("1000x750", 1000, 750, "baseline", "RGB", dict(quality=85)),
    ("small_97x131", 97, 131, "small", "RGB", dict(quality=90)),
    ("small_150x100", 150, 100, "small", "RGB", dict(quality=90)),
    ("q95_444_480x360", 480, 360, "baseline", "RGB", dict(quality=95, subsampling=0)),
    ("q90_422_480x360", 480, 360, "baseline", "RGB", dict(quality=90, subsampling=1)),
    ("q75_420_480x360", 480, 360, "baseline", "RGB", dict(quality=75, subsampling=2)),
    ("q50_optimized_400x400", 400, 400, "baseline", "RGB", dict(quality=50, optimize=True)),
    ("prog_640x427", 640, 427, "progressive", "RGB", dict(quality=85, progressive=True)),
    ("prog_444_301x401", 301, 401, "progressive", "RGB",
     dict(quality=92, progressive=True, subsampling=0)),
    ("gray_400x300", 400, 300, "gray", "L", dict(quality=90)),
    ("gray_prog_255x383", 255, 383, "gray", "L", dict(quality=90, progressive=True)),
    ("cmyk_300x400", 300, 400, "cmyk", "CMYK", dict(quality=92)),
    ("exif6_400x300", 400, 300, "exif", "RGB", dict(quality=90, exif=6)),
    ("exif3_400x300", 400, 300, "exif", "RGB", dict(quality=90, exif=3)),
    ("exif8_360x270", 360, 270, "exif", "RGB", dict(quality=90, exif=8)),
    ("large_2400x1800", 2400, 1800, "large", "RGB", dict(quality=88)),
]


def write_synthetic_images(img_dir, seed):
    entries = []
    for i, (suffix, w, h, kind, mode, opts) in enumerate(SYNTH_SPECS):
        rng = np.random.default_rng([seed, 1000 + i])
        if mode == "CMYK":
            im = synth_cmyk(rng, w, h)
        else:
            im = Image.fromarray(synth_rgb(rng, w, h), "RGB")
            if mode == "L":
                im = im.convert("L")
        opts = dict(opts)
        orientation = opts.pop("exif", 1)
        if orientation != 1:
            opts["exif"] = exif_with_orientation(orientation)
        name = "synth_" + suffix
        rel = "images/" + name + ".jpg"
        path = img_dir / (name + ".jpg")
        tmp = path.with_name(path.name + ".tmp")
        im.save(tmp, format="JPEG", **opts)
        os.replace(tmp, path)
        entries.append({"name": name, "path": rel, "kind": kind, "width": w, "height": h,
                        "mode": mode, "orientation": orientation,
                        "progressive": bool(opts.get("progressive", False))})
    return entries


def shared_images(no_shared):
    """Entries for ../shared/images/*.JPEG (absolute paths), or [] with a note."""
    if no_shared:
        log("shared images: skipped (--no-shared)")
        return []
    env = os.environ.get("IMGCLASS_SHARED_IMAGES")
    d = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "images"
    if not d.is_dir():
        log(f"shared images: skipped ({d} does not exist)")
        return []
    files = sorted(p for p in d.iterdir() if p.suffix == ".JPEG" and p.is_file())
    if not files:
        log(f"shared images: skipped (no *.JPEG in {d})")
        return []
    out = []
    for p in files:
        with Image.open(p) as im:
            out.append({"name": p.stem, "path": str(p.resolve()), "kind": "shared",
                        "width": im.width, "height": im.height, "mode": im.mode,
                        "orientation": int(im.getexif().get(0x0112, 1)),
                        "progressive": bool(im.info.get("progressive", False))})
    log(f"shared images: {len(out)} from {d}")
    return out


# --------------------------------------------------------------------------
# Preprocessing (the oracle)
# --------------------------------------------------------------------------

def load_for_eval(path, transpose=True):
    """PIL image as torchvision sees it, RGB; EXIF orientation applied when
    transpose (ImageFolder and most pipelines do not apply it)."""
    with Image.open(path) as im:
        im.load()
        return (ImageOps.exif_transpose(im) if transpose else im).convert("RGB")


def preprocess_all(out, images):
    """Returns {file: float32 tensor [n][3][224][224]} and writes the files."""
    pil = {d: [load_for_eval(resolve(out, e["path"]), transpose=d == "fast") for e in images]
           for d in ("fast", "exact")}
    result = {}
    for resize, interp, fname, decode in PREPROCS:
        tf = T.Compose([T.Resize(resize, interpolation=INTERP[interp]), T.CenterCrop(CROP),
                        T.ToTensor(), T.Normalize(MEAN, STD)])
        batch = torch.stack([tf(im) for im in pil[decode]])
        write_f32(out / fname, batch.numpy())
        result[fname] = batch
    return result


def resolve(out, p):
    p = Path(p)
    return p if p.is_absolute() else out / p


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------

def calibration_batch(g, rng, n):
    """n image-like inputs at 224x224, already normalized like ImageNet. A
    mix, so that BN statistics and the classifier scale hold for real photos
    too: smooth noise (low-res noise upsampled bilinearly, several scales)
    with colour gradients; photo-like synthetic images (as the test JPEGs);
    and high-frequency textures (stripes, grain), which otherwise drive a few
    features far outside their calibrated range."""
    xs = []
    lin = torch.linspace(0, 1, CROP)
    for i in range(n):
        kind = i % 3
        if kind == 1:
            img = torch.from_numpy(synth_rgb(rng, CROP, CROP)).permute(2, 0, 1).float() / 255
        else:
            img = torch.zeros(3, CROP, CROP)
            for cells, amp in ((2, 0.25), (4, 0.2), (8, 0.12), (16, 0.08), (56, 0.04)):
                small = torch.randn(1, 3, cells, cells, generator=g)
                img += amp * torch.nn.functional.interpolate(
                    small, size=(CROP, CROP), mode="bilinear", align_corners=False)[0]
            a = float(torch.rand(1, generator=g)) * 2 * math.pi
            t = math.cos(a) * lin[None, :] + math.sin(a) * lin[:, None]
            if kind == 0:  # a colour gradient along a random direction
                t = (t - t.min()) / (t.max() - t.min())
                c0, c1 = torch.rand(3, generator=g), torch.rand(3, generator=g)
                img += (c0[:, None, None] * (1 - t) + c1[:, None, None] * t) - 0.5
            else:  # stripes of random frequency and contrast, plus grain
                freq = float(torch.empty(1).uniform_(3, 60, generator=g))
                stripes = torch.sin(2 * math.pi * freq * t)
                if float(torch.rand(1, generator=g)) < 0.5:
                    stripes = stripes.sign()
                c0 = torch.rand(3, generator=g) * 0.8
                img += 0.5 * c0[:, None, None] * stripes
                img += 0.08 * torch.randn(3, CROP, CROP, generator=g)
            img += 0.45 + 0.1 * torch.randn(3, 1, 1, generator=g)
        xs.append(img.clamp(0, 1))
    x = torch.stack(xs)
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def features(model, x):
    """torchvision ResNet._forward_impl up to the flattened pooled features."""
    m = model
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
    return torch.flatten(m.avgpool(x), 1)


def forward_chunks(fn, x):
    return torch.cat([fn(x[i:i + FORWARD_CHUNK]) for i in range(0, x.shape[0], FORWARD_CHUNK)])


def make_model(depth, seed, x_fit):
    """A seeded, calibrated, non-degenerate torchvision ResNet in eval mode.
    x_fit: extra preprocessed inputs (the synthetic test images, which depend
    only on the seed) that join the calibration inputs for the classifier."""
    g = torch.Generator().manual_seed(seed * 1009 + depth)
    rng = np.random.default_rng([seed, 7, depth])
    model = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    last_bn = set()  # the BN whose output joins the identity path
    for blk in model.modules():
        if isinstance(blk, torchvision.models.resnet.Bottleneck):
            last_bn.add(id(blk.bn3))
        elif isinstance(blk, torchvision.models.resnet.BasicBlock):
            last_bn.add(id(blk.bn2))
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d):
            fan_in = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            std = math.sqrt(2.0 / fan_in)  # Kaiming normal, fan_in, ReLU gain
            mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * std)
        elif isinstance(mod, torch.nn.BatchNorm2d):
            lo, hi = LAST_GAMMA if id(mod) in last_bn else (0.5, 1.5)
            mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) * (hi - lo) + lo)
            mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
            mod.momentum = None  # cumulative average over the calibration batches
            mod.reset_running_stats()

    # Calibrate BN running statistics on image-like inputs.
    model.train()
    for _ in range(CALIB_BATCHES):
        model(calibration_batch(g, rng, CALIB_BATCH))
    model.eval()
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = 0.1  # back to torchvision's default

    # Classifier: random directions in the space of standardized features
    # z = (f - mu) / sd (sd floored at its median, so no feature that is
    # nearly constant on the fit set dominates on other images), with the
    # direction of mu / sd projected out: images differ most in overall
    # activation level, which would otherwise add the same vector to every
    # image's logits and give most images the same top-1 class.
    x_cal = torch.cat([calibration_batch(g, rng, FC_FIT_IMAGES), x_fit])
    feats = forward_chunks(lambda b: features(model, b), x_cal)
    mu = feats.mean(0)
    sd = feats.std(0)
    sd = torch.maximum(sd, sd.median() + 1e-6)
    dim = feats.shape[1]
    u = mu / sd
    u = u / u.norm()
    wz = torch.randn(NUM_CLASSES, dim, generator=g)
    wz -= (wz @ u)[:, None] * u[None, :]
    w = wz / sd
    spread = ((feats - mu) @ w.t()).std(1).mean()  # per-image std over classes
    w *= LOGIT_SPREAD / float(spread)
    b = -(w @ mu) + 0.1 * torch.randn(NUM_CLASSES, generator=g)
    model.fc.weight.copy_(w)
    model.fc.bias.copy_(b)
    return model


def rounded_copy(model, dtype):
    """A copy of model whose floating state (weights and BN buffers) is
    rounded to dtype and back to float32, as a loader converting at load sees."""
    import copy
    m = copy.deepcopy(model)
    sd = m.state_dict()
    for k, v in sd.items():
        if v.is_floating_point():
            v.copy_(v.to(dtype).to(torch.float32))
    return m


def run_logits(model, x):
    return forward_chunks(model, x)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="build/ref", help="output directory (default build/ref)")
    ap.add_argument("--seed", type=int, default=1234, help="seed for weights and images")
    ap.add_argument("--no-shared", action="store_true", help="leave out ../shared/images")
    ap.add_argument("--depths", default=",".join(map(str, DEPTHS)),
                    help="comma-separated ResNet depths (default all five)")
    args = ap.parse_args()

    t_start = time.time()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        manifest_path.unlink()  # a partial run must not look complete
    depths = [int(d) for d in args.depths.split(",") if d]
    for d in depths:
        if d not in DEPTHS:
            sys.exit(f"gen_reference: unknown depth {d}")

    timings = {}
    t = time.time()
    images = write_synthetic_images(img_dir, args.seed)
    n_synth = len(images)
    images += shared_images(args.no_shared)
    timings["images"] = time.time() - t
    log(f"images: {len(images)} ({timings['images']:.1f} s)")

    t = time.time()
    pre = preprocess_all(out, images)
    x = pre[PREPROCS[0][2]]
    timings["preprocess"] = time.time() - t
    log(f"preprocessed: {len(PREPROCS)} variants x {x.shape[0]} images "
        f"({timings['preprocess']:.1f} s)")

    models = []

    def emit(model, depth, path, dtype, logits_file):
        t1 = time.time()
        logits = run_logits(model, x)
        write_f32(out / logits_file, logits.numpy())
        top1 = logits.argmax(1)
        distinct = int(torch.unique(top1).numel())
        spread = float(logits.std(1).mean())
        maxabs = float(logits.abs().max())
        models.append({"arch": f"resnet{depth}", "depth": depth, "path": path, "dtype": dtype,
                       "num_classes": NUM_CLASSES, "logits": logits_file,
                       "top1_distinct": distinct, "logit_std": round(spread, 4),
                       "max_abs_logit": round(maxabs, 4)})
        log(f"  {path:28s} {dtype:4s} top1 distinct {distinct:2d}/{x.shape[0]}  "
            f"logit std {spread:.2f}  max|logit| {maxabs:.2f}  ({time.time() - t1:.1f} s)")
        return distinct

    with torch.no_grad():
        for depth in depths:
            t = time.time()
            model = make_model(depth, args.seed, x[:n_synth])
            t_make = time.time() - t
            nbytes = write_safetensors(out / f"resnet{depth}.safetensors", model.state_dict(), "F32")
            log(f"resnet{depth}: built and calibrated in {t_make:.1f} s, {nbytes / 1e6:.1f} MB")
            emit(model, depth, f"resnet{depth}.safetensors", "F32", f"resnet{depth}.logits.f32")
            if depth == 18:
                for dtype, tdt, tag in (("F16", torch.float16, "f16"),
                                        ("BF16", torch.bfloat16, "bf16")):
                    write_safetensors(out / f"resnet18_{tag}.safetensors", model.state_dict(), dtype)
                    emit(rounded_copy(model, tdt), 18, f"resnet18_{tag}.safetensors", dtype,
                         f"resnet18_{tag}.logits.f32")
            timings[f"resnet{depth}"] = time.time() - t

    manifest = {
        "images": images,
        "preproc": [{"resize": r, "crop": CROP, "interp": i, "mean": MEAN, "std": STD, "file": f,
                     "decode": d} for r, i, f, d in PREPROCS],
        "models": models,
        "logits_preproc": PREPROCS[0][2],
        "seed": args.seed,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pil": Image.__version__,
    }
    write_atomic(manifest_path, (json.dumps(manifest, indent=1) + "\n").encode())
    total = time.time() - t_start
    log("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    log(f"gen_reference: wrote {manifest_path} ({len(images)} images, {len(models)} models) "
        f"in {total:.1f} s")


if __name__ == "__main__":
    main()
