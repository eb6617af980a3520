#!/usr/bin/env python3
"""Test data for `oar ocr` (tests/ocr.rs): renders text images with Pillow in the DejaVu
fonts, writes their ground truth, installs rapidocr-onnxruntime 1.4.4 and writes its own
results on the same images, so the Rust test compares against the peer without running
Python at test time.

    python3 scripts/ocr_setup.py [OUT_DIR]     (default: target/data/ocr)
    python3 scripts/ocr_setup.py --bench [OUT_DIR] [--oar PATH] [--rounds N] [--images N]

--bench times end-to-end latency per image, `oar ocr --warmup` (compiled networks,
compilation excluded) against rapidocr-onnxruntime, in alternating rounds of the same run
(benches/README.md).

OUT_DIR/img_NN.png        white canvases with 1-4 lines of words or digit strings, font sizes
                          22-44 px, each line rotated by up to +-5 degrees
OUT_DIR/blank.png         a canvas with no text (the "no text found" case)
OUT_DIR/truth.json        [{"image", "lines": [{"text", "box": [[x, y] x4]}]}]
OUT_DIR/rapidocr.json     [{"image", "lines": [{"text", "score", "box"}], "seconds"}]
Every step is skipped when its result is already there (delete OUT_DIR to redo it); a
registry that cannot be reached leaves rapidocr.json missing, and the test says so.
"""
import json
import math
import os
import random
import subprocess
import sys
import time

FONT_DIR = "/usr/share/fonts/truetype/dejavu"
FONTS = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf"]
# Two canvas sizes: the detector is compiled once per input shape.
CANVASES = [(640, 480), (800, 600)]
WORDS = (
    "compiler tensor graph kernel layout fusion planner cluster device memory buffer "
    "schedule gradient optimizer checkpoint pipeline shard replica network storage "
    "vector matrix window river mountain garden yellow orange purple silver market "
    "station library theatre harbour bridge castle forest meadow winter summer autumn "
    "Paris London Berlin Madrid Vienna Oslo Dublin Lisbon Prague Athens"
).split()
N_IMAGES = 30
SEED = 2026


def text_for(rng):
    kind = rng.random()
    if kind < 0.3:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(4, 10)))
    if kind < 0.45:
        # digits with separators, as in dates, prices and phone numbers
        a, b, c = rng.randint(10, 99), rng.randint(100, 999), rng.randint(1000, 9999)
        return rng.choice([f"{a}-{b}-{c}", f"{b}.{a}", f"{c}/{a}/{b}"])
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))


def render_line(draw_img, text, font, x, y, angle, rng):
    """Draws `text` at (x, y) rotated by `angle` degrees about its centre; returns the
    rotated layout box (4 corners, clockwise from top-left) or None if it leaves the canvas."""
    from PIL import Image, ImageDraw

    l, t, r, b = font.getbbox(text)
    w, h = r - l, b - t
    pad = 4
    layer = Image.new("L", (w + 2 * pad, h + 2 * pad), 0)
    ImageDraw.Draw(layer).text((pad - l, pad - t), text, font=font, fill=255)
    rot = layer.rotate(angle, resample=Image.BICUBIC, expand=True)
    cx, cy = x + w / 2 + pad, y + h / 2 + pad
    ox, oy = int(round(cx - rot.width / 2)), int(round(cy - rot.height / 2))
    W, H = draw_img.size
    if ox < 0 or oy < 0 or ox + rot.width > W or oy + rot.height > H:
        return None
    ink = rng.randint(0, 60)
    colour = Image.new("RGB", rot.size, (ink, ink, ink + rng.randint(0, 40)))
    draw_img.paste(colour, (ox, oy), rot)
    a = math.radians(-angle)  # PIL rotates counter-clockwise; image y points down
    corners = []
    for px, py in [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]:
        corners.append([round(cx + px * math.cos(a) - py * math.sin(a), 1),
                        round(cy + px * math.sin(a) + py * math.cos(a), 1)])
    return corners


def render(out):
    from PIL import Image, ImageFont

    rng = random.Random(SEED)
    truth = []
    for k in range(N_IMAGES):
        W, H = CANVASES[k % len(CANVASES)]
        bg = rng.randint(225, 255)
        img = Image.new("RGB", (W, H), (bg, bg, bg))
        n_lines = 1 + k % 4
        lines = []
        y = rng.randint(20, 50)
        for _ in range(n_lines):
            for _attempt in range(20):
                size = rng.randint(22, 44)
                font = ImageFont.truetype(os.path.join(FONT_DIR, rng.choice(FONTS)), size)
                text = text_for(rng)
                angle = rng.uniform(-5, 5)
                x = rng.randint(20, max(21, W // 4))
                box = render_line(img, text, font, x, y, angle, rng)
                if box is not None:
                    break
            else:
                continue
            lines.append({"text": text, "box": box})
            bottom = max(p[1] for p in box)
            y = int(bottom + size * rng.uniform(0.9, 1.6))
            if y > H - 60:
                break
        name = f"img_{k:02d}.png"
        img.save(os.path.join(out, name))
        truth.append({"image": name, "lines": lines})
    Image.new("RGB", (320, 240), (255, 255, 255)).save(os.path.join(out, "blank.png"))
    with open(os.path.join(out, "truth.json"), "w") as f:
        json.dump(truth, f, indent=1)


def ensure_rapidocr():
    try:
        import rapidocr_onnxruntime  # noqa: F401
        return True
    except ImportError:
        pass
    r = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q",
                        "install", "rapidocr-onnxruntime==1.4.4"])
    if r.returncode != 0:
        print("ocr_setup: could not install rapidocr-onnxruntime (registry unreachable?)",
              file=sys.stderr)
        return False
    return True


def peer_results(out, images):
    """rapidocr's own pipeline on every image (default config, the PP-OCRv4 models)."""
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR()
    results = []
    for name in images:
        path = os.path.join(out, name)
        engine(path)  # warm-up: onnxruntime sessions allocate on the first call
        t0 = time.perf_counter()
        res, _ = engine(path)
        dt = time.perf_counter() - t0
        lines = [{"box": [[float(v) for v in p] for p in box], "text": text,
                  "score": float(score)} for box, text, score in (res or [])]
        results.append({"image": name, "lines": lines, "seconds": dt})
    return results


def bench(out, oar, rounds, limit):
    """Median per-image latency of each side over `rounds` alternating rounds."""
    import statistics

    from rapidocr_onnxruntime import RapidOCR

    with open(os.path.join(out, "truth.json")) as f:
        images = [os.path.join(out, t["image"]) for t in json.load(f)][:limit]
    engine = RapidOCR()
    ours, theirs = [], []
    for r in range(rounds):
        run = subprocess.run([oar, "ocr", "--json", "--warmup", *images], capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"oar ocr failed: {run.stderr}")
        ours.extend(x["seconds"] for x in json.loads(run.stdout))
        for path in images:
            engine(path)
            t0 = time.perf_counter()
            engine(path)
            theirs.append(time.perf_counter() - t0)
        print(f"round {r + 1}: oar median {statistics.median(ours[-len(images):]) * 1e3:.0f} ms, "
              f"rapidocr median {statistics.median(theirs[-len(images):]) * 1e3:.0f} ms")
    mo, mt = statistics.median(ours), statistics.median(theirs)
    print(f"{len(images)} images x {rounds} rounds: oar ocr median {mo * 1e3:.0f} ms/image, "
          f"rapidocr-onnxruntime median {mt * 1e3:.0f} ms/image, ratio oar/rapidocr {mo / mt:.2f}")


def main():
    if "--bench" in sys.argv:
        args = [a for a in sys.argv[1:] if a != "--bench"]
        oar, rounds, limit = "target/release/oar", 2, None
        if "--images" in args:
            i = args.index("--images")
            limit = int(args[i + 1])
            del args[i:i + 2]
        if "--oar" in args:
            i = args.index("--oar")
            oar = args[i + 1]
            del args[i:i + 2]
        if "--rounds" in args:
            i = args.index("--rounds")
            rounds = int(args[i + 1])
            del args[i:i + 2]
        bench(args[0] if args else os.path.join("target", "data", "ocr"), oar, rounds, limit)
        return
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target", "data", "ocr")
    os.makedirs(out, exist_ok=True)
    try:
        import PIL  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q",
                        "install", "pillow"])
    if not os.path.exists(os.path.join(FONT_DIR, FONTS[0])):
        print(f"ocr_setup: no DejaVu fonts in {FONT_DIR} (apt-get install fonts-dejavu-core)",
              file=sys.stderr)
        return
    if not os.path.exists(os.path.join(out, "truth.json")):
        render(out)
    peer = os.path.join(out, "rapidocr.json")
    if not os.path.exists(peer) and ensure_rapidocr():
        with open(os.path.join(out, "truth.json")) as f:
            images = [t["image"] for t in json.load(f)]
        with open(peer, "w") as f:
            json.dump(peer_results(out, images + ["blank.png"]), f, indent=1)


if __name__ == "__main__":
    main()
