#!/usr/bin/env python3
"""Trains PaddleClas's own PPLCNet from oar's initial weights on given batches and writes the
loss of every step.

    python3 tests/paddle/lcnet_train.py VARIANT WEIGHTS.safetensors IMAGES.npy LABELS.npy CONFIG.json OUT.npy

IMAGES is f32 [steps, batch, 3, H, W], LABELS int [steps, batch]. CONFIG: class_num, lr,
warmup, weight_decay, clip, bn_momentum. The optimizer is paddle.optimizer.AdamW with
ClipGradByGlobalNorm(clip), no decay on rank-1 parameters, and a LinearWarmup (0 → lr over
`warmup` steps) wrapping CosineAnnealingDecay(lr, T_max = steps − warmup); the scheduler steps
after every optimizer step. The model is in train mode (batch statistics) with dropout 0.

Exit code 3: paddle or paddleclas is not importable (the Rust test skips).
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paddleclas_run import load_pplcnet_module, read_safetensors  # noqa: E402


def main():
    variant, weights_path, images_path, labels_path, config_path, out_path = sys.argv[1:7]
    try:
        import paddle
        mod = load_pplcnet_module()
    except ImportError as e:
        print(f"paddle/paddleclas not importable: {e}", file=sys.stderr)
        sys.exit(3)
    cfg = json.load(open(config_path))
    paddle.set_device("cpu")
    paddle.seed(0)
    net = getattr(mod, variant)(pretrained=False, class_num=cfg["class_num"], dropout_prob=0.0)
    ours = read_safetensors(weights_path)
    state = net.state_dict()
    missing = [k for k in state if k not in ours]
    if missing:
        print(f"missing weights: {missing[:8]}", file=sys.stderr)
        sys.exit(1)
    net.set_state_dict({k: paddle.to_tensor(np.array(ours[k])) for k in state})
    for layer in net.sublayers():
        if isinstance(layer, paddle.nn.BatchNorm2D):
            layer._momentum = cfg["bn_momentum"]
    net.train()

    images = np.load(images_path).astype("float32")
    labels = np.load(labels_path).astype("int64")
    steps = images.shape[0]
    lr, warmup = cfg["lr"], cfg["warmup"]
    sched = paddle.optimizer.lr.LinearWarmup(
        learning_rate=paddle.optimizer.lr.CosineAnnealingDecay(lr, T_max=steps - warmup),
        warmup_steps=warmup, start_lr=0.0, end_lr=lr)
    decay = {p.name for p in net.parameters() if len(p.shape) > 1}
    opt = paddle.optimizer.AdamW(
        learning_rate=sched, parameters=net.parameters(), weight_decay=cfg["weight_decay"],
        grad_clip=paddle.nn.ClipGradByGlobalNorm(cfg["clip"]),
        apply_decay_param_fun=lambda name: name in decay)
    losses = []
    for s in range(steps):
        x = paddle.to_tensor(images[s])
        y = paddle.to_tensor(labels[s])
        loss = paddle.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()
        sched.step()
        losses.append(float(loss.numpy()))
    np.save(out_path, np.array(losses, dtype="float64"))


if __name__ == "__main__":
    main()
