#!/usr/bin/env python3
"""Runs an ONNX model in onnxruntime (CPU) on .npy inputs, in graph-input order, and writes
output_K.npy files: the reference the Rust tests compare oar against.

    python3 tests/onnx/ort_run.py MODEL.onnx OUT_DIR IN0.npy [IN1.npy ...]
"""
import os
import sys

import numpy as np
import onnxruntime as ort

model, out_dir, *inputs = sys.argv[1:]
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
feed = {i.name: np.load(p) for i, p in zip(sess.get_inputs(), inputs)}
for k, v in enumerate(sess.run(None, feed)):
    np.save(os.path.join(out_dir, f"output_{k}.npy"), np.asarray(v))
