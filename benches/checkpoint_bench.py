"""The peer of runtime/examples/checkpoint_bench.rs: writes MiB of f32 (64 tensors) with
safetensors' numpy API, fsyncs the file, then loads it back; prints the times as JSON."""
import json
import os
import sys
import time

import numpy as np
from safetensors.numpy import load_file, save_file

mib, base = int(sys.argv[1]), sys.argv[2]
os.makedirs(base, exist_ok=True)
per = mib * (1 << 20) // 4 // 64
rng = np.random.default_rng(0)
tensors = {f"layer{t:02}.weight": rng.random((per // 256, 256), dtype=np.float32) for t in range(64)}
path = os.path.join(base, "peer.safetensors")
t = time.perf_counter()
save_file(tensors, path)
fd = os.open(path, os.O_RDONLY)
os.fsync(fd)
os.close(fd)
save_s = time.perf_counter() - t
t = time.perf_counter()
back = load_file(path)
load_s = time.perf_counter() - t
assert all(np.array_equal(back[k], v) for k, v in tensors.items())
print(json.dumps({"save_s": save_s, "load_s": load_s}))
