"""Paddle's values for passes/tests/training_paddle.rs: learning-rate schedules
(LinearWarmup around CosineAnnealingDecay / PolynomialDecay), parameters after each
step of AdamW / Lamb fed fixed gradients, with ClipGradByGlobalNorm, and a linear-softmax
model trained by AdamW with clipping and a warmup + cosine schedule (loss and parameters
after each step).

Reads a JSON spec on stdin, writes JSON on stdout. Exits 3 when paddle is missing."""
import json
import sys

try:
    import numpy as np
    import paddle
except ImportError as e:
    print(f"paddle is not importable: {e}", file=sys.stderr)
    sys.exit(3)


def scheduler(s):
    """Paddle's scheduler for the spec `s`."""
    d = s["decay"]
    if d["kind"] == "cosine":
        inner = paddle.optimizer.lr.CosineAnnealingDecay(
            learning_rate=s["base_lr"], T_max=d["t_max"], eta_min=d["eta_min"])
    else:
        inner = paddle.optimizer.lr.PolynomialDecay(
            learning_rate=s["base_lr"], decay_steps=d["decay_steps"],
            end_lr=d["end_lr"], power=d["power"])
    sched = paddle.optimizer.lr.LinearWarmup(
        learning_rate=inner, warmup_steps=s["warmup_steps"],
        start_lr=s["start_lr"], end_lr=s["end_lr"])
    return sched


def schedule(s):
    """The rates of the first `s["steps"]` steps."""
    sched = scheduler(s)
    lrs = []
    for _ in range(s["steps"]):
        lrs.append(float(sched()))
        sched.step()
    return lrs


def optim(run, o):
    params = {}
    for name, (shape, values) in o["params"].items():
        # Paddle's parameter names are global in dygraph mode: one prefix per run.
        p = paddle.create_parameter(shape, "float32", name=f"run{run}.{name}")
        p.set_value(np.array(values, dtype="float32").reshape(shape))
        params[name] = p
    decay = {f"run{run}.{n}" for n in o["decay"]}
    clip = paddle.nn.ClipGradByGlobalNorm(o["clip"]) if o["clip"] else None
    plist = list(params.values())
    if o["kind"] == "adamw":
        opt = paddle.optimizer.AdamW(
            learning_rate=o["lrs"][0], parameters=plist, beta1=o["beta1"],
            beta2=o["beta2"], epsilon=o["epsilon"], weight_decay=o["weight_decay"],
            apply_decay_param_fun=lambda n: n in decay, grad_clip=clip)
    else:
        opt = paddle.optimizer.Lamb(
            learning_rate=o["lrs"][0], parameters=plist, beta1=o["beta1"],
            beta2=o["beta2"], epsilon=o["epsilon"],
            lamb_weight_decay=o["weight_decay"],
            exclude_from_weight_decay_fn=lambda p: p.name not in decay,
            always_adapt=o["always_adapt"], grad_clip=clip)
    out = []
    for lr, grads in zip(o["lrs"], o["grads"]):
        opt.set_lr(lr)
        loss = None
        for name, p in params.items():
            g = paddle.to_tensor(np.array(grads[name], dtype="float32").reshape(p.shape))
            term = (p * g).sum()
            loss = term if loss is None else loss + term
        loss.backward()
        opt.step()
        opt.clear_grad()
        out.append({n: p.numpy().astype("float64").ravel().tolist() for n, p in params.items()})
    return out


def model(m):
    w = paddle.create_parameter(m["w"][0], "float32", name="model.fc.weight")
    w.set_value(np.array(m["w"][1], dtype="float32").reshape(m["w"][0]))
    b = paddle.create_parameter(m["b"][0], "float32", name="model.fc.bias")
    b.set_value(np.array(m["b"][1], dtype="float32").reshape(m["b"][0]))
    sched = scheduler(m["schedule"])
    o = m["adamw"]
    opt = paddle.optimizer.AdamW(
        learning_rate=sched, parameters=[w, b], beta1=o["beta1"], beta2=o["beta2"],
        epsilon=o["epsilon"], weight_decay=o["weight_decay"],
        apply_decay_param_fun=lambda n: n == w.name,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(m["clip"]))
    out = []
    for x, y in zip(m["xs"], m["labels"]):
        x = paddle.to_tensor(np.array(x, dtype="float32").reshape(m["x_shape"]))
        y = paddle.to_tensor(np.array(y, dtype="int64"))
        loss = paddle.nn.functional.cross_entropy(paddle.matmul(x, w) + b, y)
        loss.backward()
        opt.step()
        opt.clear_grad()
        sched.step()
        out.append({"loss": float(loss), "fc.weight": w.numpy().astype("float64").ravel().tolist(),
                    "fc.bias": b.numpy().astype("float64").ravel().tolist()})
    return out


spec = json.load(sys.stdin)
print(json.dumps({
    "schedules": [schedule(s) for s in spec.get("schedules", [])],
    "optim": [optim(i, o) for i, o in enumerate(spec.get("optim", []))],
    "model": [model(m) for m in spec.get("model", [])],
}))
