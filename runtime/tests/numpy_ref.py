"""Reference results for the interpreter's op tests, computed with numpy in float64.

Reads spec.json from the folder given on the command line; each case names an op (as oar's
serde JSON), its input .npy files and the symbol bindings; writes the expected outputs as
<case>_expected<k>.npy. The implementations here are written independently of the Rust
interpreter (vectorised numpy, not loops translated line by line).
"""
import json
import math
import os
import sys

import numpy as np

erf = np.vectorize(math.erf)


def unary(op, x):
    if isinstance(op, str):
        return {
            "Neg": lambda: -x, "Exp": lambda: np.exp(x), "Log": lambda: np.log(x),
            "Sqrt": lambda: np.sqrt(x), "Rsqrt": lambda: 1 / np.sqrt(x), "Tanh": lambda: np.tanh(x),
            "Erf": lambda: erf(x), "Abs": lambda: np.abs(x), "Relu": lambda: np.maximum(x, 0),
            "Relu6": lambda: np.clip(x, 0, 6), "Sigmoid": lambda: 1 / (1 + np.exp(-x)),
            "HardSwish": lambda: x * np.clip(x + 3, 0, 6) / 6, "Silu": lambda: x / (1 + np.exp(-x)),
            "Mish": lambda: x * np.tanh(np.log1p(np.exp(x))),
        }[op]()
    (name, a), = op.items()
    if name == "LeakyRelu":
        return np.where(x >= 0, x, a["alpha"] * x)
    if name == "HardSigmoid":
        return np.clip(a["alpha"] * x + a["beta"], 0, 1)
    if name == "Gelu":
        if a["tanh"]:
            return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
        return 0.5 * x * (1 + erf(x / np.sqrt(2)))
    if name == "Clip":
        lo = -np.inf if a["min"] == "-inf" else a["min"]
        hi = np.inf if a["max"] == "inf" else a["max"]
        return np.clip(x, lo, hi)
    raise ValueError(op)


def binary(op, a, b):
    if a.dtype.kind == "i" and op == "Div":
        return np.trunc(a / b).astype(np.int64)
    return {
        "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Pow": np.power,
        "Max": np.maximum, "Min": np.minimum, "Equal": np.equal, "Less": np.less, "Greater": np.greater,
    }[op](a, b)


def conv2d(x, w, b, a):
    g = a["groups"]
    sh, sw = a["stride"]
    dh, dw = a["dilation"]
    pt, pl, pb, pr = a["padding"]
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    n, c, h, wd = xp.shape
    o, cg, kh, kw = w.shape
    ho = (h - dh * (kh - 1) - 1) // sh + 1
    wo = (wd - dw * (kw - 1) - 1) // sw + 1
    og = o // g
    out = np.zeros((n, o, ho, wo))
    for gi in range(g):
        xs = xp[:, gi * cg:(gi + 1) * cg]
        ws = w[gi * og:(gi + 1) * og]
        for ky in range(kh):
            for kx in range(kw):
                patch = xs[:, :, ky * dh: ky * dh + sh * (ho - 1) + 1: sh, kx * dw: kx * dw + sw * (wo - 1) + 1: sw]
                out[:, gi * og:(gi + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, ky, kx])
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


def conv_transpose2d(x, w, b, a):
    # A transposed conv is a stride-1 conv over the input dilated by the stride, padded by
    # d*(k-1)-p, with the kernel flipped and its in/out channels swapped per group.
    c = a["conv"]
    g = c["groups"]
    sh, sw = c["stride"]
    dh, dw = c["dilation"]
    pt, pl, pb, pr = c["padding"]
    oph, opw = a["output_padding"]
    n, ci, h, wd = x.shape
    _, og, kh, kw = w.shape
    xd = np.zeros((n, ci, (h - 1) * sh + 1, (wd - 1) * sw + 1))
    xd[:, :, ::sh, ::sw] = x
    eh, ew = dh * (kh - 1), dw * (kw - 1)
    xd = np.pad(xd, ((0, 0), (0, 0), (eh, eh + oph), (ew, ew + opw)))
    xd = xd[:, :, pt: xd.shape[2] - pb or None, pl: xd.shape[3] - pr or None]
    cg = ci // g
    wf = np.zeros((og * g, cg, kh, kw))
    for gi in range(g):
        blk = w[gi * cg:(gi + 1) * cg]  # [cg, og, kh, kw]
        wf[gi * og:(gi + 1) * og] = blk.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
    attrs = {"groups": g, "stride": [1, 1], "dilation": [dh, dw], "padding": [0, 0, 0, 0]}
    return conv2d(xd, wf, b, attrs)


def pool(x, a):
    kh, kw = a["kernel"]
    sh, sw = a["stride"]
    pt, pl, pb, pr = a["padding"]
    n, c, h, w = x.shape

    def out_len(size, k, s, p0, p1):
        span = size + p0 + p1 - k
        o = -(-span // s) + 1 if a["ceil_mode"] else span // s + 1
        if a["ceil_mode"] and (o - 1) * s >= size + p0:
            o -= 1
        return o

    ho, wo = out_len(h, kh, sh, pt, pb), out_len(w, kw, sw, pl, pr)
    out = np.zeros((n, c, ho, wo))
    for y in range(ho):
        for xo in range(wo):
            y0, x0 = y * sh - pt, xo * sw - pl
            ys, ye = max(y0, 0), min(y0 + kh, h)
            xs, xe = max(x0, 0), min(x0 + kw, w)
            win = x[:, :, ys:ye, xs:xe]
            if a["kind"] == "Max":
                out[:, :, y, xo] = win.max(axis=(2, 3))
            else:
                if a["count_include_pad"]:
                    count = (min(y0 + kh, h + pb) - y0) * (min(x0 + kw, w + pr) - x0)
                else:
                    count = (ye - ys) * (xe - xs)
                out[:, :, y, xo] = win.sum(axis=(2, 3)) / count
    return out


def resize(x, a, out_hw):
    mode, coord = a["mode"], a["coord"]

    def src(o, n_in, n_out):
        o = np.arange(n_out, dtype=np.float64)
        scale = n_out / n_in
        if coord == "HalfPixel" or (coord == "PytorchHalfPixel" and n_out > 1):
            return (o + 0.5) / scale - 0.5
        if coord == "AlignCorners":
            return o * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(n_out)
        if coord == "Asymmetric":
            return o / scale
        return np.zeros(n_out)

    h, w = x.shape[2:]
    ho, wo = out_hw
    sy, sx = src(None, h, ho), src(None, w, wo)
    if mode == "Nearest":
        rnd = np.floor if coord == "Asymmetric" else (lambda v: np.ceil(v - 0.5))
        iy = np.clip(rnd(sy), 0, h - 1).astype(int)
        ix = np.clip(rnd(sx), 0, w - 1).astype(int)
        return x[:, :, iy][:, :, :, ix]
    sy, sx = np.clip(sy, 0, h - 1), np.clip(sx, 0, w - 1)
    y0, x0 = np.floor(sy).astype(int), np.floor(sx).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (sy - y0)[:, None], (sx - x0)[None, :]
    g = lambda yy, xx: x[:, :, yy][:, :, :, xx]
    top = g(y0, x0) * (1 - fx) + g(y0, x1) * fx
    bot = g(y1, x0) * (1 - fx) + g(y1, x1) * fx
    return top * (1 - fy) + bot * fy


def dim_value(d, bindings):
    if isinstance(d, int):
        return d
    v = 1
    for part in d.split("*"):
        v *= int(part) if part.isdigit() else bindings[part]
    return v


def evaluate(op, ins, bindings, out_shapes):
    if isinstance(op, str):
        (name, a) = (op, None)
    else:
        (name, a), = op.items()
    x = ins[0] if ins else None
    if name == "Unary":
        return [unary(a, x)]
    if name == "Binary":
        return [binary(a, ins[0], ins[1])]
    if name == "Where":
        return [np.where(ins[0], ins[1], ins[2])]
    if name == "Cast":
        return [x.astype({"f32": np.float64, "i64": np.int64, "bool": np.bool_}[a["to"]])]
    if name == "Dropout":
        return [x]
    if name == "MatMul":
        xa = np.swapaxes(ins[0], -1, -2) if a["transpose_a"] else ins[0]
        xb = np.swapaxes(ins[1], -1, -2) if a["transpose_b"] else ins[1]
        return [np.matmul(xa, xb)]
    if name == "Conv2d":
        return [conv2d(x, ins[1], ins[2] if len(ins) > 2 else None, a)]
    if name == "ConvTranspose2d":
        return [conv_transpose2d(x, ins[1], ins[2] if len(ins) > 2 else None, a)]
    if name == "BatchNorm":
        sh = (1, -1) + (1,) * (x.ndim - 2)
        s, b, m, v = (t.reshape(sh) for t in ins[1:])
        return [(x - m) / np.sqrt(v + a["eps"]) * s + b]
    if name == "LayerNorm":
        axes = tuple(range(a["axis"] % x.ndim, x.ndim))
        m = x.mean(axis=axes, keepdims=True)
        v = ((x - m) ** 2).mean(axis=axes, keepdims=True)
        return [(x - m) / np.sqrt(v + a["eps"]) * ins[1] + ins[2]]
    if name in ("Softmax", "LogSoftmax"):
        z = x - x.max(axis=a["axis"], keepdims=True)
        lse = np.log(np.exp(z).sum(axis=a["axis"], keepdims=True))
        return [z - lse if name == "LogSoftmax" else np.exp(z - lse)]
    if name == "CausalMask":
        m, n = x.shape[-2:]
        keep = np.tril(np.ones((m, n), dtype=bool), k=n - m)
        return [np.where(keep, x, a["fill"])]
    if name == "Reduce":
        axes = tuple(a["axes"]) if a["axes"] else None
        f = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min, "prod": np.prod}[a["op"]]
        return [f(x, axis=axes, keepdims=a["keepdims"])]
    if name == "Pool":
        return [pool(x, a)]
    if name == "GlobalPool":
        f = np.max if a == "Max" else np.mean
        return [f(x, axis=tuple(range(2, x.ndim)), keepdims=True)]
    if name == "Resize":
        return [resize(x, a, [dim_value(d, bindings) for d in a["size"]])]
    if name == "Concat":
        return [np.concatenate(ins, axis=a["axis"])]
    if name == "Split":
        cuts = np.cumsum(a["sizes"])[:-1]
        return np.split(x, cuts, axis=a["axis"])
    if name == "Slice":
        sl = [slice(None)] * x.ndim
        for ax, s, e, st in zip(a["axes"], a["starts"], a["ends"], a["steps"]):
            n = x.shape[ax]
            e_norm = e + n if e < 0 else e
            sl[ax] = slice(s, None if (st < 0 and e_norm < 0) else e, st)
        return [x[tuple(sl)]]
    if name == "Reshape":
        shape = [-1 if d == "Infer" else dim_value(d["Dim"], bindings) for d in a["shape"]]
        return [x.reshape(shape)]
    if name == "Transpose":
        return [np.transpose(x, a["perm"])]
    if name == "Squeeze":
        axes = tuple(a["axes"]) if a["axes"] else tuple(i for i, d in enumerate(x.shape) if d == 1)
        return [np.squeeze(x, axis=axes)]
    if name == "Unsqueeze":
        return [np.expand_dims(x, tuple(a["axes"]))]
    if name == "Flatten":
        ax = a["axis"] % (x.ndim + 1) if a["axis"] < 0 else a["axis"]
        return [x.reshape(int(np.prod(x.shape[:ax])), -1)]
    if name == "Gather":
        return [np.take(x, ins[1], axis=a["axis"])]
    if name == "GatherElements":
        idx = np.where(ins[1] < 0, ins[1] + x.shape[a["axis"]], ins[1])
        return [np.take_along_axis(x, idx, axis=a["axis"])]
    if name == "Shape":
        return [np.array(x.shape, dtype=np.int64)]
    if name == "Embedding":
        return [ins[0][ins[1]]]
    raise ValueError(f"no numpy reference for {name}")


def main():
    folder = sys.argv[1]
    with open(os.path.join(folder, "spec.json")) as f:
        cases = json.load(f)
    for case in cases:
        ins = []
        for path in case["inputs"]:
            t = np.load(os.path.join(folder, path))
            ins.append(t.astype(np.float64) if t.dtype == np.float32 else t)
        outs = evaluate(case["op"], ins, case["bindings"], case.get("out_shapes"))
        for k, o in enumerate(outs):
            o = np.asarray(o)
            if o.dtype == np.float64:
                o = o.astype(np.float64)
            np.save(os.path.join(folder, f"{case['name']}_expected{k}.npy"), o)


if __name__ == "__main__":
    main()
