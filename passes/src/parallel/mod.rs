//! Auto-parallel planning: the model and job description, the training-step cost model
//! (compute, collectives, bubbles, memory), the planner, and reports.

pub mod annotate;
pub mod efficiency;
pub mod fault_model;
pub mod intra_op;
pub mod partition;
pub mod report;
pub mod scale_effects;
pub mod search;
mod sharding_rules;
pub mod spec;
pub mod step_cost;

pub use annotate::{annotate, AnnotateError};
pub use partition::{partition, partition_rank, specialize, PartitionError, RankGraph};
pub use search::{plan, plan_with, weak_scaling, Constraints, PlanError, PlanOutcome};
pub use spec::{LayerSpec, ModelSpec, TransformerConfig};
pub use step_cost::{Evaluation, Job, ParallelPlan, TrainingCostModel};
