//! IR → MLIR (TOSA dialect, with `func` for the signature). Shapes are made static by binding
//! symbols (unbound ones are 1); parameters become function arguments named by an
//! `oar.param` attribute, so the module is readable without megabytes of weights.
//!
//! [`to_tosa`] writes the module text; [`verify`] parses it with MLIR (melior), runs the
//! verifier and returns MLIR's own printing.

mod emit;
mod gather;
mod lower;
mod pointwise;

use oar_ir::Graph;
use std::collections::BTreeMap;

/// Why a graph could not be written or verified as MLIR.
#[derive(Debug, thiserror::Error)]
pub enum MlirError {
    #[error("MLIR export: node %{node} ({op}): {message}")]
    Lower {
        node: String,
        op: String,
        message: String,
    },
    #[error("MLIR rejected the module: {0}")]
    Invalid(String),
}

/// The graph as a TOSA module (text), symbols bound by `bindings` (others 1).
pub fn to_tosa(graph: &Graph, bindings: &BTreeMap<String, u64>) -> Result<String, MlirError> {
    lower::module(graph, bindings)
}

/// Parses and verifies module text with MLIR; returns MLIR's printing of it.
pub fn verify(text: &str) -> Result<String, MlirError> {
    use melior::dialect::DialectRegistry;
    use melior::ir::operation::OperationLike;
    use melior::ir::Module;
    use melior::utility::register_all_dialects;
    use melior::Context;
    let registry = DialectRegistry::new();
    register_all_dialects(&registry);
    let context = Context::new();
    context.append_dialect_registry(&registry);
    context.load_all_available_dialects();
    // MLIR reports parse and verification errors through diagnostics; keep the first few.
    let diags = std::rc::Rc::new(std::cell::RefCell::new(Vec::<String>::new()));
    let sink = diags.clone();
    let id = context.attach_diagnostic_handler(move |d| {
        if sink.borrow().len() < 5 {
            sink.borrow_mut().push(format!("{}: {}", d.location(), d));
        }
        true
    });
    let result = match Module::parse(&context, text) {
        None => Err(MlirError::Invalid(format!(
            "parse failed: {}",
            diags.borrow().join("; ")
        ))),
        Some(m) if !m.as_operation().verify() => Err(MlirError::Invalid(format!(
            "verification failed: {}",
            diags.borrow().join("; ")
        ))),
        Some(m) => Ok(m.as_operation().to_string()),
    };
    context.detach_diagnostic_handler(id);
    result
}
