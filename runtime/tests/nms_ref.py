"""Reference results for the interpreter's NMS tests, written with numpy independently of
the Rust code (a vectorised IoU matrix, argsort with kind="stable" for the tie rule).

Reads spec.json from the folder given on the command line: each case has the op (oar's
serde JSON), boxes.npy / scores.npy names and whether PaddlePaddle should confirm the
reference (tie-free cases only: Paddle's matrix_nms ranks with std::partial_sort, which
does not promise an order among equal scores). Writes <case>_dets.npy, _selected.npy and
_count.npy, and paddle.json saying which cases Paddle confirmed (or why it could not).
"""
import json
import os
import sys

import numpy as np


def iou_matrix(b, normalized):
    one = np.float32(0 if normalized else 1)
    x0, y0, x1, y1 = (b[:, i] for i in range(4))
    area = np.where((x1 < x0) | (y1 < y0), np.float32(0), (x1 - x0 + one) * (y1 - y0 + one))
    iw = np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None]) + one
    ih = np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None]) + one
    inter = iw * ih
    disjoint = (x0[None] > x1[:, None]) | (x1[None] < x0[:, None]) | (y0[None] > y1[:, None]) | (y1[None] < y0[:, None])
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (area[:, None] + area[None] - inter)
    return np.where(disjoint, np.float32(0), iou).astype(np.float32)


def one_class(a, kind, b, s, cls):
    order = np.argsort(-s, kind="stable")
    order = order[s[order] > np.float32(a["score_threshold"])]
    if a["nms_top_k"] is not None:
        order = order[: a["nms_top_k"]]
    cap = a["max_per_class"] if a["max_per_class"] is not None else len(order) + 1
    iou = iou_matrix(b, a["normalized"])
    if "Hard" in kind:
        t = np.float32(kind["Hard"]["iou_threshold"])
        keep = []
        for i in order:
            if len(keep) >= cap:
                break
            if np.all(iou[i, keep] <= t):
                keep.append(i)
        return [(s[i], cls, i) for i in keep]
    m = kind["Matrix"]
    n = len(order)
    if n == 0:
        return []
    sub = iou[np.ix_(order, order)]
    lower = np.tril(np.ones((n, n), bool), -1)
    tri = np.where(lower, sub, np.float32(0))
    max_iou = tri.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        if m["gaussian"]:
            d = np.exp((max_iou[None, :] * max_iou[None, :] - tri * tri) * np.float32(m["sigma"]))
        else:
            d = (np.float32(1) - tri) / (np.float32(1) - max_iou[None, :])
    decay = np.fmin.reduce(np.where(lower, d, np.float32(1)).astype(np.float32), axis=1)
    ds = (decay * s[order]).astype(np.float32)
    kept = [(ds[i], cls, order[i]) for i in range(n) if ds[i] > np.float32(m["post_threshold"])]
    return kept[:cap]


def reference(a, boxes, scores):
    kind = a["kind"]
    n, c, k = scores.shape[0], scores.shape[1], a["keep_top_k"]
    dets = np.zeros((n, k, 6), np.float32)
    dets[:, :, 0] = -1
    sel = -np.ones((n, k, 3), np.int64)
    count = np.zeros(n, np.int64)
    for img in range(n):
        rows = []
        for cls in range(c):
            if a["background"] == cls:
                continue
            rows += one_class(a, kind, boxes[img], scores[img, cls], cls)
        sc = np.array([r[0] for r in rows], np.float32)
        if len(rows) > k or "Matrix" in kind:
            rows = [rows[i] for i in np.argsort(-sc, kind="stable")][:k]
        if "Hard" in kind:
            rows = [rows[i] for i in np.argsort([r[1] for r in rows], kind="stable")]
        count[img] = len(rows)
        for j, (score, cls, i) in enumerate(rows):
            dets[img, j] = [cls, score, *boxes[img, i]]
            sel[img, j] = [img, cls, i]
    return dets, sel, count


def paddle_check(a, boxes, scores, dets, count):
    import paddle

    kind = a["kind"]
    bg = -1 if a["background"] is None else a["background"]
    top = -1 if a["nms_top_k"] is None else a["nms_top_k"]
    b, s = paddle.to_tensor(boxes), paddle.to_tensor(scores)
    if "Hard" in kind:
        out, _, num = paddle._C_ops.multiclass_nms3(
            b, s, None, a["score_threshold"], top, a["keep_top_k"],
            kind["Hard"]["iou_threshold"], a["normalized"], 1.0, bg)
    else:
        m = kind["Matrix"]
        out, num, _ = paddle.vision.ops.matrix_nms(
            b, s, a["score_threshold"], m["post_threshold"], top, a["keep_top_k"],
            m["gaussian"], m["sigma"], bg, a["normalized"], True, True)
    out, num = out.numpy(), num.numpy()
    if list(num) != list(count):
        return f"counts {list(num)} vs reference {list(count)}"
    ours = np.concatenate([dets[i, : count[i]] for i in range(len(count))])
    if out.size == 0 and ours.size == 0:
        return None
    if out.shape != ours.shape or not np.allclose(out, ours, atol=1e-5):
        return f"rows differ: paddle {out.tolist()} vs reference {ours.tolist()}"
    return None


def main():
    folder = sys.argv[1]
    spec = json.load(open(os.path.join(folder, "spec.json")))
    report = {}
    try:
        import paddle  # noqa: F401
        have_paddle = True
    except ImportError as e:
        have_paddle = False
        report["_missing"] = str(e)
    for case in spec:
        a = case["op"]["Nms"]
        boxes = np.load(os.path.join(folder, case["boxes"]))
        scores = np.load(os.path.join(folder, case["scores"]))
        dets, sel, count = reference(a, boxes, scores)
        name = case["name"]
        np.save(os.path.join(folder, f"{name}_dets.npy"), dets)
        np.save(os.path.join(folder, f"{name}_selected.npy"), sel)
        np.save(os.path.join(folder, f"{name}_count.npy"), count)
        if have_paddle and case["paddle"]:
            report[name] = paddle_check(a, boxes, scores, dets, count) or "ok"
    json.dump(report, open(os.path.join(folder, "paddle.json"), "w"))


if __name__ == "__main__":
    main()
