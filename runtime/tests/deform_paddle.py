"""PaddlePaddle's deform_conv2d (modulated, DCNv2) forward and gradients for the
interpreter's test. Reads x, offset, mask, w, b, u (.npy) and attrs.json from the folder
given on the command line; writes y.npy and dx, doffset, dmask, dw .npy: the gradients of
sum(u * y). Exits with code 3 when paddle cannot be imported."""
import json
import os
import sys

import numpy as np

try:
    import paddle
except ImportError as e:
    print(e)
    sys.exit(3)

d = sys.argv[1]
load = lambda n: paddle.to_tensor(np.load(os.path.join(d, n + ".npy")).astype(np.float64), stop_gradient=False)
a = json.load(open(os.path.join(d, "attrs.json")))
x, off, m, w, b, u = (load(n) for n in ["x", "offset", "mask", "w", "b", "u"])
y = paddle.vision.ops.deform_conv2d(
    x, off, w, bias=b, stride=a["stride"], padding=a["padding"], dilation=a["dilation"],
    deformable_groups=a["deform_groups"], groups=a["groups"], mask=m)
(y * u).sum().backward()
for name, t in [("y", y), ("dx", x.grad), ("doffset", off.grad), ("dmask", m.grad), ("dw", w.grad)]:
    np.save(os.path.join(d, name + ".npy"), t.numpy())
