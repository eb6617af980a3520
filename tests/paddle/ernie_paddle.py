#!/usr/bin/env python3
"""PaddleNLP's own ErnieForMaskedLM on oar's weights: the masked-LM loss of given batches,
or the loss of every step of an AdamW run from those weights.

    python3 tests/paddle/ernie_paddle.py forward CONFIG WEIGHTS.safetensors BATCHES OUT.npy
    python3 tests/paddle/ernie_paddle.py train CONFIG WEIGHTS.safetensors BATCHES OUT.npy TRAIN.json

CONFIG is a PaddleNLP configuration name (`ernie-3.0-nano-zh`, `ernie-3.0-tiny-pico-v2-zh`),
optionally with overrides `NAME:key=value,...` (integers). BATCHES is a path prefix:
BATCHES.ids.npy, .types.npy, .pos.npy and .labels.npy, each int64 [steps, N, seq] (labels
-100 where a position is not scored). `forward` writes the loss of every batch (f64 [steps])
with the model in eval mode; `train` runs one AdamW step per batch and writes the loss before
each step. The loss is the mean over the scored positions of the cross-entropy of
ErnieForMaskedLM's logits (PaddleNLP's pre-training criterion, and oar's masked-LM loss);
ErnieForMaskedLM's own `labels=` loss divides by every position instead (Paddle's
CrossEntropyLoss "mean" with a negative ignore_index), which the script checks as well. TRAIN: lr, warmup, weight_decay, clip. The optimizer is paddle.optimizer.AdamW
(beta 0.9/0.999, epsilon 1e-8) with ClipGradByGlobalNorm(clip), decay on every parameter whose
structured name contains neither "bias" nor "norm" (PaddleNLP's pre-training convention), and
LinearWarmup(0 → lr over `warmup`) wrapping PolynomialDecay(lr → 0 over steps − warmup,
power 1); the scheduler steps after every optimizer step. Dropout is 0.

PaddleNLP's package __init__s import most of its dependencies (datasets, aistudio_sdk, ...);
they are replaced by stand-ins so that only `transformers/ernie/configuration.py`,
`transformers/ernie/modeling.py` and `layers/linear.py` are loaded from the installed package:
the network that runs is PaddleNLP's. The stand-in `PretrainedModel` does what the real one
does at construction for these classes: `init_weights` applies `_init_weights` (which sets
every LayerNorm's epsilon to 1e-12) and `tie_weights` shares the word embedding with the MLM
decoder. The attention mask PaddleNLP derives from pad ids (0) is all zeros because the ids
are drawn from [1, vocab).

Exit code 3: paddle or paddlenlp is not importable (the Rust test skips).
"""
import importlib.util
import json
import os
import sys
import types

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paddleclas_run import read_safetensors  # noqa: E402


def _stub(name, path=None, **attrs):
    m = types.ModuleType(name)
    if path is not None:
        m.__path__ = [path]
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(spec)
    sys.modules[name] = m
    spec.loader.exec_module(m)
    return m


def load_ernie():
    """(modeling module, ErnieConfig, the pretrained configurations) from PaddleNLP."""
    import paddle.nn as nn

    spec = importlib.util.find_spec("paddlenlp")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("paddlenlp is not installed")
    root = spec.submodule_search_locations[0]
    tr = os.path.join(root, "transformers")

    class PretrainedConfig:
        def __init__(self, **kwargs):
            self.tie_word_embeddings = kwargs.pop("tie_word_embeddings", True)
            self.use_return_dict = False
            for k, v in kwargs.items():
                setattr(self, k, v)

    class PretrainedModel(nn.Layer):
        def __init__(self, config, *args, **kwargs):
            super().__init__()
            self.config = config

        def get_input_embeddings(self):
            return getattr(self, self.base_model_prefix).get_input_embeddings()

        def init_weights(self):
            self.apply(self._init_weights)

        def tie_weights(self):
            out, inp = self.get_output_embeddings(), self.get_input_embeddings()
            if self.config.tie_word_embeddings and out is not None and inp is not None:
                out.weight = inp.weight

    _stub("paddlenlp", root)
    _stub("paddlenlp.utils", os.path.join(root, "utils"))
    _load("paddlenlp.utils.env", os.path.join(root, "utils", "env.py"))
    linear = _load("paddlenlp.layers.linear", os.path.join(root, "layers", "linear.py"))
    _stub("paddlenlp.layers", os.path.join(root, "layers"), Linear=linear.Linear)
    _stub("paddlenlp.transformers", tr, PretrainedModel=PretrainedModel,
          register_base_model=lambda cls: cls)
    _stub("paddlenlp.transformers.configuration_utils", PretrainedConfig=PretrainedConfig)
    # model_outputs.py is PaddleNLP's own: it patches paddle.nn.TransformerEncoder(Layer)
    # .forward to take `output_attentions`, which modeling.py passes. Its one import from
    # transformers/utils.py adapts monkey patches of `forward`, which nothing here makes.
    _stub("paddlenlp.transformers.utils", adapt_stale_fwd_patch=lambda self, name, value: value)
    _load("paddlenlp.transformers.model_outputs", os.path.join(tr, "model_outputs.py"))
    _stub("paddlenlp.transformers.ernie", os.path.join(tr, "ernie"))
    conf = _load("paddlenlp.transformers.ernie.configuration",
                 os.path.join(tr, "ernie", "configuration.py"))
    modeling = _load("paddlenlp.transformers.ernie.modeling",
                     os.path.join(tr, "ernie", "modeling.py"))
    return modeling, conf.ErnieConfig, conf.ERNIE_PRETRAINED_INIT_CONFIGURATION


def build_model(spec, weights_path):
    """ErnieForMaskedLM for `spec` with dropout 0, every parameter from the file by name."""
    import paddle

    modeling, ErnieConfig, configs = load_ernie()
    name, _, overrides = spec.partition(":")
    cfg = dict(configs[name])
    for kv in filter(None, overrides.split(",")):
        k, v = kv.split("=")
        cfg[k] = int(v)
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = modeling.ErnieForMaskedLM(ErnieConfig(**cfg))
    model.init_weights()
    ours = read_safetensors(weights_path)
    state = model.state_dict()
    theirs = {k: tuple(v.shape) for k, v in state.items()}
    # The decoder's weight is the word embedding and its bias `decoder_bias`: one tensor each.
    tied = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    missing = sorted(k for k in theirs if k not in ours and k not in tied)
    extra = sorted(k for k in ours if k not in theirs)
    wrong = sorted(k for k in ours if k in theirs and tuple(ours[k].shape) != theirs[k])
    if missing or extra or wrong:
        print(f"missing {missing[:8]} extra {extra[:8]} wrong shape {wrong[:8]}", file=sys.stderr)
        sys.exit(1)
    model.set_state_dict({k: paddle.to_tensor(np.array(v)) for k, v in ours.items()})
    eps = {layer._epsilon for layer in model.sublayers() if isinstance(layer, paddle.nn.LayerNorm)}
    assert eps == {1e-12}, eps
    return model


def main():
    mode, spec, weights_path, batches, out_path = sys.argv[1:6]
    try:
        import paddle
        model = build_model(spec, weights_path)
    except ImportError as e:
        print(f"paddle/paddlenlp not importable: {e}", file=sys.stderr)
        sys.exit(3)
    paddle.set_device("cpu")
    ids, types_, pos, labels = (np.load(f"{batches}.{k}.npy").astype("int64")
                                for k in ["ids", "types", "pos", "labels"])
    steps = ids.shape[0]

    def loss_of(s):
        t = paddle.to_tensor
        builtin, logits = model(t(ids[s]), token_type_ids=t(types_[s]), position_ids=t(pos[s]),
                                labels=t(labels[s]))
        y = t(labels[s].reshape(-1))
        scored = int((labels[s] != -100).sum())
        loss = paddle.nn.functional.cross_entropy(
            logits.reshape([-1, logits.shape[-1]]), y, ignore_index=-100, reduction="sum") / scored
        # ErnieForMaskedLM's own loss is CrossEntropyLoss(), whose "mean" with a negative
        # ignore_index divides by every position, scored or not (Paddle 3.3): the same sum
        # over fewer or more positions.
        want = float(loss.numpy()) * scored / labels[s].size
        assert abs(float(builtin.numpy()) - want) <= 1e-6 * abs(want), (builtin, want)
        return loss

    losses = []
    if mode == "forward":
        model.eval()
        with paddle.no_grad():
            losses = [float(loss_of(s).numpy()) for s in range(steps)]
    else:
        cfg = json.load(open(sys.argv[6]))
        lr, warmup = cfg["lr"], cfg["warmup"]
        sched = paddle.optimizer.lr.LinearWarmup(
            learning_rate=paddle.optimizer.lr.PolynomialDecay(
                lr, decay_steps=steps - warmup, end_lr=0.0, power=1.0),
            warmup_steps=warmup, start_lr=0.0, end_lr=lr)
        decay = {p.name for n, p in model.named_parameters()
                 if not any(nd in n for nd in ["bias", "norm"])}
        opt = paddle.optimizer.AdamW(
            learning_rate=sched, parameters=model.parameters(),
            weight_decay=cfg["weight_decay"],
            grad_clip=paddle.nn.ClipGradByGlobalNorm(cfg["clip"]),
            apply_decay_param_fun=lambda n: n in decay)
        model.train()
        for s in range(steps):
            loss = loss_of(s)
            loss.backward()
            opt.step()
            opt.clear_grad()
            sched.step()
            losses.append(float(loss.numpy()))
    np.save(out_path, np.array(losses, dtype="float64"))


if __name__ == "__main__":
    main()
