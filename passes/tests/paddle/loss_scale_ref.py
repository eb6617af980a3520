"""Paddle's loss-scale sequence for passes/tests/training_precision.rs: a linear model
trained by SGD under `paddle.amp.GradScaler`, some steps fed an input holding inf so that
their gradients are non-finite. Prints, per step, the scale the step used, whether the
scaler skipped the update (the weight did not move), and the scale after the step.

Reads a JSON spec on stdin ({"init", "incr_every", "decr_every", "bad": [bool per step]}),
writes JSON on stdout. Exits 3 when paddle is missing."""
import json
import sys

try:
    import numpy as np
    import paddle
except ImportError as e:
    print(f"paddle is not importable: {e}", file=sys.stderr)
    sys.exit(3)


def cpu_scaler(**kw):
    """A `GradScaler` enabled on the CPU: Paddle disables loss scaling off GPU/XPU, so the
    place check sees a GPU while the scaler is built and the AMP dtype is set to float16. Its update rule (`_update`) and the
    finite check (`check_finite_and_unscale`) are the ones a GPU run uses."""
    import paddle.amp.grad_scaler as gs

    real = gs._dygraph_tracer

    class Place:
        def is_gpu_place(self):
            return True

    class Tracer:
        _expected_place = Place()

    gs._dygraph_tracer = lambda: Tracer()
    try:
        scaler = paddle.amp.GradScaler(**kw)
    finally:
        gs._dygraph_tracer = real
    # `scale` turns the scaler off unless the AMP dtype is float16, as under
    # `auto_cast(dtype="float16")` on a GPU; the model here stays f32 (the scale sequence
    # depends only on which steps are finite).
    gs.amp_global_state().amp_dtype = "float16"
    # A rank-0 scale: `_update`'s message calls float() on it, which numpy 2 refuses for
    # the shape-[1] tensor Paddle creates.
    scaler._scale = paddle.to_tensor(np.float32(kw["init_loss_scaling"]))
    return scaler


def main():
    spec = json.load(sys.stdin)
    paddle.set_device("cpu")
    paddle.seed(0)
    lin = paddle.nn.Linear(3, 2, bias_attr=False)
    opt = paddle.optimizer.SGD(learning_rate=0.01, parameters=lin.parameters())
    scaler = cpu_scaler(
        init_loss_scaling=spec["init"],
        incr_every_n_steps=spec["incr_every"],
        decr_every_n_nan_or_inf=spec["decr_every"],
    )
    rng = np.random.default_rng(0)
    out = []
    for bad in spec["bad"]:
        x = rng.standard_normal((4, 3)).astype("float32")
        if bad:
            x[1, 2] = np.inf
        t = rng.standard_normal((4, 2)).astype("float32")
        before = lin.weight.numpy().copy()
        used = float(scaler._scale)
        loss = paddle.mean((lin(paddle.to_tensor(x)) - paddle.to_tensor(t)) ** 2)
        scaled = scaler.scale(loss)
        scaled.backward()
        scaler.minimize(opt, scaled)
        opt.clear_grad()
        moved = not np.array_equal(before, lin.weight.numpy())
        out.append({"scale": used, "skipped": not moved, "after": float(scaler._scale)})
    json.dump(out, _out)


# `_update` prints a line per decrease: keep stdout for the JSON.
_out = sys.stdout
sys.stdout = sys.stderr
main()
