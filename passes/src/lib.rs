//! oar-passes: graph passes over `ir::Graph` — the pass infrastructure and registry,
//! canonicalize, equality saturation with egg, fusion, the liveness estimate, the cost models,
//! autodiff and training steps (losses, optimizers, schedules).

pub mod autodiff;
pub mod canonicalize;
pub mod comm_cost;
pub mod eqsat;
pub mod fuse;
pub mod liveness;
pub mod parallel;
pub mod pass;
pub mod placement;
pub mod rebuild;
pub mod report_html;
pub mod roofline;
pub mod step_memory;
pub mod summary;
pub mod training;

pub use pass::{registry, PassContext, PassError, PassFailure, PassReport, Pipeline, PIPELINES};
