#!/usr/bin/env python3
"""Times the peers the benches compare against, in the same run as oar's measurements.

    python3 benches/peers.py sgemm N THREADS          -> GFLOP/s of numpy (OpenBLAS) float32 matmul
    python3 benches/peers.py ort MODEL.onnx THREADS   -> p50 latency (ms) of onnxruntime at batch 1
    python3 benches/peers.py serve paddle_train VARIANT BATCH SIZE THREADS
                                                      -> ms per training step of PaddleClas's
                                                         VARIANT (forward, backward, AdamW)
    python3 benches/peers.py serve paddle_ernie_train CONFIG BATCH SEQ THREADS
                                                      -> the same for PaddleNLP's ErnieForMaskedLM
                                                         (benches/peer_ernie.py)

Prints one number. With `serve` first (`peers.py serve sgemm 1024 2`), it sets up once,
prints `ready`, then for each line `R` read from stdin times R more runs and prints their
median (GFLOP/s or ms): the benches interleave blocks of oar and peer runs this way, so both
see the same machine load.
"""
import os
import sys
import time


def median_time(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]


def paddle_train_step(variant, batch, size, threads):
    """One AdamW training step of PaddleClas's PPLCNet on CPU (train mode, 10 classes)."""
    os.environ["OMP_NUM_THREADS"] = threads
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../tests/paddle"))
    import numpy as np
    import paddle
    from paddleclas_run import load_pplcnet_module
    paddle.set_device("cpu")
    net = getattr(load_pplcnet_module(), variant)(pretrained=False, class_num=10)
    net.train()
    opt = paddle.optimizer.AdamW(learning_rate=1e-3, parameters=net.parameters(),
                                 grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0))
    x = paddle.to_tensor(np.random.rand(batch, 3, size, size).astype("float32"))
    y = paddle.to_tensor(np.random.randint(0, 10, size=(batch,)).astype("int64"))

    def step():
        loss = paddle.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()
        float(loss.numpy())
    return step


def setup(kind, args):
    """The peer's one run and its unit conversion (seconds -> the printed figure)."""
    if kind == "paddle_train":
        run = paddle_train_step(args[0], int(args[1]), int(args[2]), args[3])
        return run, (lambda s: s * 1e3)
    if kind == "paddle_ernie_train":
        from peer_ernie import paddle_ernie_train_step
        run = paddle_ernie_train_step(args[0], int(args[1]), int(args[2]), args[3])
        return run, (lambda s: s * 1e3)
    if kind == "sgemm":
        n, threads = int(args[0]), args[1]
        os.environ["OPENBLAS_NUM_THREADS"] = threads
        import numpy as np
        a = np.random.rand(n, n).astype(np.float32)
        b = np.random.rand(n, n).astype(np.float32)
        return (lambda: a @ b), (lambda s: 2 * n ** 3 / s / 1e9)
    import numpy as np
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads = int(args[1])
    o.inter_op_num_threads = 1
    sess = ort.InferenceSession(args[0], o, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    x = np.random.rand(*shape).astype(np.float32)
    return (lambda: sess.run(None, {inp.name: x})), (lambda s: s * 1e3)


def serve(kind, args):
    run, unit = setup(kind, args)
    run()
    print("ready", flush=True)
    for line in sys.stdin:
        reps = int(line)
        print(unit(median_time(run, reps)), flush=True)


def main():
    kind = sys.argv[1]
    if kind == "serve":
        serve(sys.argv[2], sys.argv[3:])
        return
    if kind == "sgemm":
        n, threads = int(sys.argv[2]), sys.argv[3]
        os.environ["OPENBLAS_NUM_THREADS"] = threads
        import numpy as np
        a = np.random.rand(n, n).astype(np.float32)
        b = np.random.rand(n, n).astype(np.float32)
        reps = max(3, min(200, int(2e9 / (2 * n ** 3))))
        s = median_time(lambda: a @ b, reps)
        print(2 * n ** 3 / s / 1e9)
    elif kind == "ort":
        import numpy as np
        import onnxruntime as ort
        o = ort.SessionOptions()
        o.intra_op_num_threads = int(sys.argv[3])
        o.inter_op_num_threads = 1
        sess = ort.InferenceSession(sys.argv[2], o, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        x = np.random.rand(*shape).astype(np.float32)
        print(median_time(lambda: sess.run(None, {inp.name: x}), 100) * 1e3)


if __name__ == "__main__":
    main()
