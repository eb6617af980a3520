//! oar-passes: graph passes over `ir::Graph` — the pass infrastructure and registry,
//! canonicalize, equality saturation with egg, fusion, memory planning and the cost model.

pub mod canonicalize;
pub mod comm_cost;
pub mod cost;
pub mod eqsat;
pub mod fuse;
pub mod memory;
pub mod parallel;
pub mod pass;
pub mod rebuild;
pub mod summary;

pub use pass::{registry, PassContext, PassError, PassFailure, PassReport, Pipeline, PIPELINES};
