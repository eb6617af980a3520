//! ERNIE 3.0 (Sun et al., 2021) and ERNIE 3.0 Titan (Wang et al., 2021).
//!
//! Word, position, token-type and task-id embeddings feed a shared *universal representation*
//! module; task-specific modules sit on top: an NLU module (bidirectional attention) with a
//! masked-LM head tied to the word embedding, and an NLG module (causal attention) with an LM
//! head tied the same way. Titan adds a self-supervised adversarial loss (a binary head on the
//! NLU [CLS] state telling original from generated text) and a controllable LM loss: prompt
//! tokens are prepended to the text and the LM loss is taken over the text positions only,
//! which the `lm_weights` input expresses (zero on prompt positions).
//!
//! The public PaddleNLP checkpoints (nano … xbase, the ERNIE 3.0 Tiny v2 family) are the
//! universal module alone, distilled; those configs have no task modules and an MLM head on
//! the universal output. An encoder-only config builds PaddleNLP's `ErnieForMaskedLM` layout
//! exactly, so a public checkpoint's tensors load unchanged by name: `ernie.embeddings.*`
//! (a task-type table only when `task_vocab > 0`, PaddleNLP's `use_task_id`),
//! `ernie.encoder.layers.{i}.*` (Paddle's `TransformerEncoderLayer` names, Linear weights
//! `[in, out]`), `ernie.pooler.dense.*` (declared so the checkpoint loads; the MLM loss does
//! not read it) and `cls.predictions.{transform,layer_norm,decoder_bias}` with the decoder
//! tied to the word embedding. Layer-norm epsilon is 1e-12: PaddleNLP's
//! `ErniePretrainedModel._init_weights` sets it on every `nn.LayerNorm` at construction.
//!
//! Assumptions where the papers give no figure: a task module narrower than the universal
//! module reads it through a linear projection, and its heads project back to the embedding
//! width before the tied decoder; Titan's width (12288, 192 heads, FFN 4×) follows GPT-3 175B,
//! and its depth (144 universal layers) is chosen so the total is the reported ≈260B.

use oar_frontend::nn::{
    Activation, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig,
    TransformerEncoderLayer, TransformerEncoderLayerConfig,
};
use oar_frontend::{BuildError, ModelBuilder, Tensor};
use oar_ir::Graph;

/// A stack of transformer layers of one width.
#[derive(Debug, Clone, PartialEq)]
pub struct StackConfig {
    pub layers: u64,
    pub hidden: u64,
    pub heads: u64,
    pub ffn: u64,
}

impl StackConfig {
    pub const fn new(layers: u64, hidden: u64, heads: u64, ffn: u64) -> Self {
        StackConfig {
            layers,
            hidden,
            heads,
            ffn,
        }
    }
}

/// An ERNIE 3.0 configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ErnieConfig {
    pub vocab: u64,
    pub max_positions: u64,
    pub type_vocab: u64,
    /// Rows of the task-type embedding; 0 = none (PaddleNLP's `use_task_id = False`), the
    /// `task_type_ids` input is then read by nothing.
    pub task_vocab: u64,
    pub universal: StackConfig,
    /// NLU and NLG task modules; `None` for the public encoder-only checkpoints.
    pub task_modules: Option<StackConfig>,
    /// The Titan adversarial (original vs generated) head.
    pub adversarial_head: bool,
    pub dropout: f64,
    pub eps: f64,
}

impl ErnieConfig {
    /// A PaddleNLP ERNIE 3.0 configuration (`ERNIE_PRETRAINED_INIT_CONFIGURATION` in
    /// `paddlenlp/transformers/ernie/configuration.py`, 2.8): vocab 40000, 2048 positions,
    /// 4 token types, 16 task types with `use_task_id`.
    fn encoder_only(universal: StackConfig) -> Self {
        ErnieConfig {
            vocab: 40000,
            max_positions: 2048,
            type_vocab: 4,
            task_vocab: 16,
            universal,
            task_modules: None,
            adversarial_head: false,
            dropout: 0.1,
            eps: 1e-12,
        }
    }

    /// The paper-shaped models with task modules (10B, Titan) have no PaddleNLP checkpoint:
    /// they keep the papers' 3 task types and Paddle's default layer-norm epsilon.
    fn with_task_modules(universal: StackConfig, task: StackConfig, adversarial: bool) -> Self {
        ErnieConfig {
            task_vocab: 3,
            task_modules: Some(task),
            adversarial_head: adversarial,
            eps: 1e-5,
            ..Self::encoder_only(universal)
        }
    }

    /// ERNIE 3.0 Tiny: PaddleNLP's `ernie-3.0-tiny-pico-v2-zh`, the smallest public ERNIE 3.0
    /// (3 layers, hidden 128, 2 heads, FFN 512; no task-type embedding).
    pub fn tiny() -> Self {
        ErnieConfig {
            task_vocab: 0,
            ..Self::encoder_only(StackConfig::new(3, 128, 2, 512))
        }
    }
    /// For tests of the Titan structure: 2 universal layers and 1 layer per task module at
    /// hidden 128, the adversarial head.
    pub fn titan_tiny() -> Self {
        Self::with_task_modules(
            StackConfig::new(2, 128, 2, 512),
            StackConfig::new(1, 128, 2, 512),
            true,
        )
    }
    pub fn nano() -> Self {
        Self::encoder_only(StackConfig::new(4, 312, 12, 1248))
    }
    pub fn micro() -> Self {
        Self::encoder_only(StackConfig::new(4, 384, 12, 1536))
    }
    pub fn mini() -> Self {
        Self::encoder_only(StackConfig::new(6, 384, 12, 1536))
    }
    pub fn medium() -> Self {
        Self::encoder_only(StackConfig::new(6, 768, 12, 3072))
    }
    /// `ernie-3.0-base-zh` alone of PaddleNLP's configs has 3 task types.
    pub fn base() -> Self {
        ErnieConfig {
            task_vocab: 3,
            ..Self::encoder_only(StackConfig::new(12, 768, 12, 3072))
        }
    }
    pub fn xbase() -> Self {
        Self::encoder_only(StackConfig::new(20, 1024, 16, 4096))
    }
    /// ERNIE 3.0 10B: universal 48 layers × 4096 (64 heads); task modules 12 × 768 (12 heads).
    pub fn ten_billion() -> Self {
        Self::with_task_modules(
            StackConfig::new(48, 4096, 64, 16384),
            StackConfig::new(12, 768, 12, 3072),
            false,
        )
    }
    /// ERNIE 3.0 Titan, ≈260B (see the module docs for the assumed shape).
    pub fn titan() -> Self {
        Self::with_task_modules(
            StackConfig::new(144, 12288, 192, 49152),
            StackConfig::new(12, 768, 12, 3072),
            true,
        )
    }

    /// The masked-LM model (PaddleNLP's `ErnieForMaskedLM`): the universal module and an
    /// MLM head on its output, tied to the word embedding; task modules, if the config has
    /// them, are not used. Inputs (all `i64[N, seq]`): `input_ids`, `token_type_ids`,
    /// `position_ids` (0, 1, … per row), `task_type_ids` (zeros unless a task is meant).
    /// Output: the logits `f32[N, seq, vocab]`. Train it with the masked-LM loss (labels
    /// −100 where a position is not scored).
    pub fn build_masked_lm(&self, name: &str) -> Result<Graph, BuildError> {
        let b = ModelBuilder::new(name);
        let (u, word) = self.universal_output(&b);
        let head = LmHead::init(&b, self.mlm_head_name(), self.universal.hidden, self);
        b.finish(&[&head.logits(&u, &word)])
    }

    /// The MLM head's scope: PaddleNLP's `cls.predictions` for the encoder-only layout.
    fn mlm_head_name(&self) -> &'static str {
        match self.task_modules {
            None => "cls.predictions",
            Some(_) => "mlm_head",
        }
    }

    /// Declares the four id inputs (all `i64[N, seq]`) and builds the universal module on
    /// them: its output `[N, seq, hidden]` and the word embedding the LM heads are tied to.
    /// Encoder-only configs put it under `ernie.` and declare the pooler, as PaddleNLP does.
    fn universal_output(&self, b: &ModelBuilder) -> (Tensor, Tensor) {
        let ids = |n: &str| b.input(n, "i64[N,seq]");
        let (input_ids, token_type, position, task_type) = (
            ids("input_ids"),
            ids("token_type_ids"),
            ids("position_ids"),
            ids("task_type_ids"),
        );
        let build = || {
            let e = Embeddings::init(b, self);
            let h = e.forward(&input_ids, &token_type, &position, &task_type);
            let u = self
                .universal
                .init_stack(b, "encoder", self, false)
                .forward(&h);
            (u, e.word.weight)
        };
        if self.task_modules.is_some() {
            return build();
        }
        b.scope("ernie", || {
            let out = build();
            // PaddleNLP's pooler (dense + tanh on [CLS]) feeds no MLM output; its parameters
            // are declared so that a checkpoint's tensors all have a place.
            let h = self.universal.hidden;
            b.scope("pooler", || LinearConfig::new(h, h).init(b, "dense"));
            out
        })
    }

    /// The pre-training graph. Inputs (all `[N, seq]`): `input_ids`, `token_type_ids`,
    /// `position_ids`, `task_type_ids` (i64), `mlm_labels` (i64), `mlm_weights` (f32, 1 on
    /// masked positions); with task modules also `lm_labels`, `lm_weights` (0 on prompt
    /// positions); with the adversarial head `adv_labels: f32[N]` (1 = original text).
    /// Outputs: `mlm_loss`, then `lm_loss` and `adv_loss` when present.
    pub fn build_pretraining(&self, name: &str) -> Result<Graph, BuildError> {
        let b = ModelBuilder::new(name);
        let (u, word) = self.universal_output(&b);
        let ids = |n: &str| b.input(n, "i64[N,seq]");
        let mlm_labels = ids("mlm_labels");
        let mlm_weights = b.input("mlm_weights", "f32[N,seq]");
        let mut outputs = Vec::new();
        let Some(task) = &self.task_modules else {
            let head = LmHead::init(&b, self.mlm_head_name(), self.universal.hidden, self);
            outputs.push(cross_entropy(
                &head.logits(&u, &word),
                &mlm_labels,
                &mlm_weights,
            ));
            let refs: Vec<&Tensor> = outputs.iter().collect();
            return b.finish(&refs);
        };
        let nlu = TaskModule::init(&b, "nlu", task, self, false).forward(&u);
        let mlm_head = LmHead::init(&b, self.mlm_head_name(), task.hidden, self);
        outputs.push(cross_entropy(
            &mlm_head.logits(&nlu, &word),
            &mlm_labels,
            &mlm_weights,
        ));
        let (lm_labels, lm_weights) = (ids("lm_labels"), b.input("lm_weights", "f32[N,seq]"));
        let nlg = TaskModule::init(&b, "nlg", task, self, true).forward(&u);
        let lm_head = LmHead::init(&b, "lm_head", task.hidden, self);
        outputs.push(cross_entropy(
            &lm_head.logits(&nlg, &word),
            &lm_labels,
            &lm_weights,
        ));
        if self.adversarial_head {
            let adv_labels = b.input("adv_labels", "f32[N]");
            let cls = nlu.gather(&b.constant_i64(&[], vec![0]), 1);
            let logit = LinearConfig::new(task.hidden, 1)
                .init(&b, "adversarial_head")
                .forward(&cls)
                .squeeze(&[-1]);
            outputs.push(binary_cross_entropy(&logit, &adv_labels));
        }
        let refs: Vec<&Tensor> = outputs.iter().collect();
        b.finish(&refs)
    }
}

impl StackConfig {
    fn init_stack(&self, b: &ModelBuilder, name: &str, cfg: &ErnieConfig, causal: bool) -> Stack {
        let layer = TransformerEncoderLayerConfig {
            dropout: cfg.dropout,
            activation: Activation::Gelu,
            ..TransformerEncoderLayerConfig::new(self.hidden, self.heads, self.ffn)
                .causal(causal)
                .eps(cfg.eps)
        };
        b.scope(name, || Stack {
            layers: (0..self.layers)
                .map(|i| layer.init(b, &format!("layers.{i}")))
                .collect(),
        })
    }
}

struct Stack {
    layers: Vec<TransformerEncoderLayer>,
}

impl Stack {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.layers.iter().fold(x.clone(), |h, l| l.forward(&h))
    }
}

struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    task_type: Option<Embedding>,
    norm: LayerNorm,
    dropout: f64,
}

impl Embeddings {
    fn init(b: &ModelBuilder, c: &ErnieConfig) -> Embeddings {
        let h = c.universal.hidden;
        b.scope("embeddings", || Embeddings {
            word: EmbeddingConfig::new(c.vocab, h).init(b, "word_embeddings"),
            position: EmbeddingConfig::new(c.max_positions, h).init(b, "position_embeddings"),
            token_type: EmbeddingConfig::new(c.type_vocab, h).init(b, "token_type_embeddings"),
            task_type: (c.task_vocab > 0)
                .then(|| EmbeddingConfig::new(c.task_vocab, h).init(b, "task_type_embeddings")),
            norm: LayerNormConfig::new(h)
                .with_eps(c.eps)
                .init(b, "layer_norm"),
            dropout: c.dropout,
        })
    }

    fn forward(
        &self,
        ids: &Tensor,
        token_type: &Tensor,
        position: &Tensor,
        task_type: &Tensor,
    ) -> Tensor {
        // PaddleNLP's order of summation (word, position, token type, task type).
        let mut sum = self.word.forward(ids)
            + self.position.forward(position)
            + self.token_type.forward(token_type);
        if let Some(t) = &self.task_type {
            sum = sum + t.forward(task_type);
        }
        self.norm.forward(&sum).dropout(self.dropout)
    }
}

/// A task-specific module: an optional projection from the universal width, then layers.
struct TaskModule {
    proj: Option<Linear>,
    stack: Stack,
}

impl TaskModule {
    fn init(
        b: &ModelBuilder,
        name: &str,
        task: &StackConfig,
        c: &ErnieConfig,
        causal: bool,
    ) -> TaskModule {
        b.scope(name, || TaskModule {
            proj: (task.hidden != c.universal.hidden)
                .then(|| LinearConfig::new(c.universal.hidden, task.hidden).init(b, "proj")),
            stack: task.init_stack(b, "encoder", c, causal),
        })
    }

    fn forward(&self, u: &Tensor) -> Tensor {
        let x = match &self.proj {
            Some(p) => p.forward(u),
            None => u.clone(),
        };
        self.stack.forward(&x)
    }
}

/// Transform (dense + GELU + LayerNorm) to the embedding width, then logits against the
/// tied word embedding plus a bias.
struct LmHead {
    transform: Linear,
    norm: LayerNorm,
    bias: Tensor,
}

impl LmHead {
    fn init(b: &ModelBuilder, name: &str, from: u64, c: &ErnieConfig) -> LmHead {
        let h = c.universal.hidden;
        b.scope(name, || LmHead {
            transform: LinearConfig::new(from, h).init(b, "transform"),
            norm: LayerNormConfig::new(h)
                .with_eps(c.eps)
                .init(b, "layer_norm"),
            bias: b.param("decoder_bias", &[c.vocab], oar_ir::op::Init::Constant(0.0)),
        })
    }

    fn logits(&self, x: &Tensor, word_embedding: &Tensor) -> Tensor {
        let h = self.norm.forward(&self.transform.forward(x).gelu());
        &h.matmul_t(word_embedding) + &self.bias
    }
}

/// Weighted softmax cross-entropy: Σ w·(−log p[label]) / Σ w over `[N, seq]` positions.
fn cross_entropy(logits: &Tensor, labels: &Tensor, weights: &Tensor) -> Tensor {
    let logp = logits
        .log_softmax(-1)
        .gather_elements(&labels.unsqueeze(&[-1]), -1)
        .squeeze(&[-1]);
    let total = (&logp.neg() * weights).reduce_sum(&[], false);
    total.div(&weights.reduce_sum(&[], false))
}

/// Mean binary cross-entropy with logits, in the stable form relu(z) − y·z + log(1 + e^−|z|).
fn binary_cross_entropy(logit: &Tensor, labels: &Tensor) -> Tensor {
    let softplus_part = logit.abs().neg().exp().add_scalar(1.0).log();
    (logit.relu() - logit * labels + softplus_part).reduce_mean(&[], false)
}
