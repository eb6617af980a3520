#!/usr/bin/env python3
"""Runs PaddleDetection's own PP-PicoDet (ESNet + CSPPAN + PicoHead) on oar's weights and
writes the raw head outputs.

    python3 tests/paddle/picodet_run.py SIZE WEIGHTS.safetensors INPUT.npy OUTDIR

SIZE is s, m or l: the legacy (paper) configs, configs/picodet/legacy_model/picodet_{s,m,l}_*
(`_base_/picodet_esnet.yml` with the S and L overrides), built from the installed
`paddledet` package's ESNet, CSPPAN, PicoFeat and PicoHead classes, in eval mode. The package
__init__s import the data pipeline (pycocotools, matplotlib, ...), so they are replaced by
empty packages: the network code that runs is PaddleDetection's and Paddle's own. Parameters
are loaded by name; every Paddle parameter must come from the file with the same shape
(oar's names are PaddleDetection's state-dict names), except the four `scale_reg` scalars
GFLHead registers and PicoHead never reads and the GFL integral's constant bins (applied
after the raw head).

Writes OUTDIR/output_{k}.npy in oar's output order (the four levels' sigmoid class scores
`[1, H*W, 80]`, then the four levels' distribution logits `[1, H*W, 32]`: PicoHead's
`forward_eval(export_post_process=False)`, batch 1) and OUTDIR/info.json with the trainable
parameter count.

Exit code 3: paddle or paddledet is not importable (the Rust test skips).
"""
import importlib
import importlib.util
import json
import os
import struct
import sys
import types

import numpy as np

CONFIGS = {
    # scale, channel ratios, neck/head width, head tower convs
    "s": (0.75, [0.875, 0.5, 0.5, 0.5, 0.625, 0.5, 0.625, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], 96, 2),
    "m": (1.0, [0.875, 0.5, 1.0, 0.625, 0.5, 0.75, 0.625, 0.625, 0.5, 0.625, 1.0, 0.625, 0.75], 128, 4),
    "l": (1.25, [0.875, 0.5, 1.0, 0.625, 0.5, 0.75, 0.625, 0.625, 0.5, 0.625, 1.0, 0.625, 0.75], 160, 4),
}


def load_ppdet_modules():
    spec = importlib.util.find_spec("ppdet")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("paddledet is not installed")
    root = spec.submodule_search_locations[0]
    for pkg in ["", "core", "data", "data/transform", "metrics", "utils", "modeling",
                "modeling/backbones", "modeling/necks", "modeling/heads", "modeling/losses",
                "modeling/assigners", "modeling/proposal_generator", "modeling/transformers",
                "modeling/mot"]:
        name = "ppdet" + ("." + pkg.replace("/", ".") if pkg else "")
        m = types.ModuleType(name)
        m.__path__ = [os.path.join(root, pkg)]
        sys.modules[name] = m
    return (importlib.import_module("ppdet.modeling.backbones.esnet"),
            importlib.import_module("ppdet.modeling.necks.csp_pan"),
            importlib.import_module("ppdet.modeling.heads.pico_head"))


def read_safetensors(path):
    """name -> float32 array; only the F32 tensors oar writes."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":
            raise ValueError(f"{name}: dtype {meta['dtype']} (expected F32)")
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(meta["shape"])
    return out


class Stub:
    """Stands in for the loss and assigner objects PicoHead's constructor reads (eval only)."""
    use_sigmoid = True


def build(size):
    import paddle
    esnet, csp_pan, pico_head = load_ppdet_modules()
    scale, ratios, width, convs = CONFIGS[size]

    class PicoDet(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.backbone = esnet.ESNet(scale=scale, act="hard_swish",
                                        feature_maps=[4, 11, 14], channel_ratio=ratios)
            in_channels = [s.channels for s in self.backbone.out_shape]
            # A fresh list: CSPPAN appends the P6 scale to its argument.
            self.neck = csp_pan.CSPPAN(in_channels, width, use_depthwise=True,
                                       num_csp_blocks=1, num_features=4,
                                       spatial_scales=[0.125, 0.0625, 0.03125])
            feat = pico_head.PicoFeat(feat_in=width, feat_out=width, num_fpn_stride=4,
                                      num_convs=convs, norm_type="bn", share_cls_reg=True)
            self.head = pico_head.PicoHead(
                conv_feat=feat, num_classes=80, fpn_stride=[8, 16, 32, 64], prior_prob=0.01,
                loss_class=Stub(), loss_dfl=Stub(), loss_bbox=Stub(), assigner=Stub(),
                reg_max=7, feat_in_chan=width, nms=None, cell_offset=0.5)

        def forward(self, image):
            feats = self.neck(self.backbone({"image": image}))
            scores, boxes = self.head.forward_eval(feats, export_post_process=False)
            return list(scores) + list(boxes)

    return PicoDet()


def main():
    size, weights_path, input_path, out_dir = sys.argv[1:5]
    try:
        import paddle
        model = build(size)
    except ImportError as e:
        print(f"picodet_run: {e}", file=sys.stderr)
        sys.exit(3)
    paddle.set_device("cpu")
    weights = read_safetensors(weights_path)
    state = model.state_dict()
    # Not read by the raw head: GFLHead's per-level scales, and the integral's bin values.
    unused = {k for k in state if k.endswith(".scale_reg") or k.endswith("distribution_project.project")}
    missing = [k for k in state if k not in weights and k not in unused]
    extra = [k for k in weights if k not in state]
    if missing or extra:
        sys.exit(f"picodet_run: names differ: missing {missing[:8]}, extra {extra[:8]}")
    for k, v in weights.items():
        if list(state[k].shape) != list(v.shape):
            sys.exit(f"picodet_run: {k}: paddle {list(state[k].shape)}, oar {list(v.shape)}")
    model.set_state_dict({k: paddle.to_tensor(v.copy()) for k, v in weights.items()})
    model.eval()
    outs = model(paddle.to_tensor(np.load(input_path)))
    os.makedirs(out_dir, exist_ok=True)
    for k, o in enumerate(outs):
        np.save(os.path.join(out_dir, f"output_{k}.npy"), np.ascontiguousarray(o.numpy(), dtype=np.float32))
    trainable = sum(int(np.prod(p.shape)) for n, p in model.named_parameters()
                    if not p.stop_gradient and not n.endswith(".scale_reg"))
    with open(os.path.join(out_dir, "info.json"), "w") as f:
        json.dump({"trainable_params": trainable}, f)


if __name__ == "__main__":
    main()
