"""The ERNIE peer of benches/train_step_ernie.rs (loaded by benches/peers.py `serve
paddle_ernie_train CONFIG BATCH SEQ THREADS`): one training step of PaddleNLP's
ErnieForMaskedLM on CPU: forward, masked-LM loss, backward, AdamW with global-norm clipping.
The model comes from tests/paddle/ernie_paddle.py's loader (PaddleNLP's own modeling code);
dropout as configured (0.1), about 15% of positions scored."""
import os
import sys


def paddle_ernie_train_step(config, batch, seq, threads):
    os.environ["OMP_NUM_THREADS"] = threads
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../tests/paddle"))
    import numpy as np
    import paddle
    from ernie_paddle import load_ernie
    paddle.set_device("cpu")
    modeling, ErnieConfig, configs = load_ernie()
    model = modeling.ErnieForMaskedLM(ErnieConfig(**configs[config]))
    model.init_weights()
    model.train()
    opt = paddle.optimizer.AdamW(learning_rate=1e-4, parameters=model.parameters(),
                                 grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0))
    rng = np.random.default_rng(0)
    vocab = model.config.vocab_size
    ids = paddle.to_tensor(rng.integers(1, vocab, size=(batch, seq)).astype("int64"))
    types = paddle.to_tensor(rng.integers(0, 4, size=(batch, seq)).astype("int64"))
    pos = paddle.to_tensor(np.tile(np.arange(seq, dtype="int64"), (batch, 1)))
    labels = np.where(rng.random((batch, seq)) < 0.15, rng.integers(0, vocab, size=(batch, seq)), -100)
    labels = paddle.to_tensor(labels.reshape(-1).astype("int64"))
    scored = float((labels != -100).astype("float32").sum())

    def step():
        logits = model(ids, token_type_ids=types, position_ids=pos)
        loss = paddle.nn.functional.cross_entropy(
            logits.reshape([-1, vocab]), labels, ignore_index=-100, reduction="sum") / scored
        loss.backward()
        opt.step()
        opt.clear_grad()
        float(loss.numpy())
    return step
