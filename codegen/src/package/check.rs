//! What the C executor (runtime.c) can hold, checked before any C is generated: its tables
//! use C `int` for counts and indices, it holds f32, i64 and bool buffers only (as
//! oar-runtime's executor), and an output's `.npy` header must fit the format's 16-bit
//! length. A program past any of these is an error naming the step, buffer or output,
//! never a table that the C compiler truncates or a binary that misreads it.

use super::PackageError;
use oar_ir::DType;
use oar_runtime::io::npy::npy_header;
use oar_runtime::program::Program;

/// The largest count or index a table holds (a C `int`).
pub(super) const C_INT_MAX: usize = i32::MAX as usize;

fn limit(what: String, count: usize, limit: usize) -> Result<(), PackageError> {
    if count > limit {
        return Err(PackageError::Limit { what, count, limit });
    }
    Ok(())
}

fn inconsistent(message: String) -> PackageError {
    PackageError::Program(message)
}

/// The `.npy` dtype string of a buffer the executor holds.
pub(super) fn npy_descr(d: DType) -> Option<&'static str> {
    match d {
        DType::F32 => Some("<f4"),
        DType::I64 => Some("<i8"),
        DType::Bool => Some("|b1"),
        DType::F16 | DType::BF16 | DType::F64 | DType::I32 | DType::I8 | DType::U8 => None,
    }
}

/// Checks `p` against every limit of runtime.c and main.c.
pub(super) fn check_program(p: &Program) -> Result<(), PackageError> {
    let n = p.buffers.len();
    limit("buffers".into(), n, C_INT_MAX)?;
    limit("steps".into(), p.steps.len(), C_INT_MAX)?;
    limit("kernels".into(), p.kernels.len(), C_INT_MAX)?;
    limit("outputs".into(), p.outputs.len(), C_INT_MAX)?;
    let total_args: usize = p.steps.iter().map(|s| s.args.len()).sum();
    limit(
        "kernel arguments over all steps".into(),
        total_args,
        C_INT_MAX,
    )?;
    // runtime.c has no host dropout masks and no state write-back: a training step runs
    // in-process (oar_codegen::train::CompiledRunner).
    if !p.masks.is_empty() || !p.updates.is_empty() {
        return Err(inconsistent(
            "a training step (dropout masks or state updates) cannot be packaged; run it \
             in-process"
                .into(),
        ));
    }
    if p.prologue > p.steps.len() {
        return Err(inconsistent(format!(
            "prologue of {} steps in a program of {}",
            p.prologue,
            p.steps.len()
        )));
    }
    for (id, b) in p.buffers.iter().enumerate() {
        if npy_descr(b.dtype).is_none() {
            return Err(PackageError::Dtype {
                name: b.name.clone(),
                dtype: b.dtype.name().to_string(),
            });
        }
        if p.owner(id) >= n {
            return Err(inconsistent(format!(
                "buffer `{}` uses the memory of buffer {} of {n}",
                b.name,
                p.owner(id)
            )));
        }
        // The executable's .npy reader and the C API hand out ranks as `int`.
        limit(
            format!("buffer `{}`'s rank", b.name),
            b.shape.len(),
            C_INT_MAX,
        )?;
    }
    for (i, s) in p.steps.iter().enumerate() {
        let Some(call) = s.kernel_call() else {
            return Err(PackageError::Communicates { step: i });
        };
        let Some(kernel) = p.kernels.get(call.kernel) else {
            return Err(inconsistent(format!(
                "step {i} calls kernel {} of {}",
                call.kernel,
                p.kernels.len()
            )));
        };
        if let Some(&bad) = s.args.iter().find(|&&a| a >= n) {
            return Err(inconsistent(format!(
                "step {i} ({kernel}) names buffer {bad} of {n}"
            )));
        }
    }
    for (k, &id) in p.outputs.iter().enumerate() {
        let Some(b) = p.buffers.get(id) else {
            return Err(inconsistent(format!("output {k} is buffer {id} of {n}")));
        };
        let descr = npy_descr(b.dtype).unwrap_or("<f4");
        // The header minus magic (6), version (2) and length (2) bytes.
        let dict = npy_header(descr, &b.shape).len() - 10;
        limit(
            format!("output {k} (`{}`)'s .npy header bytes", b.name),
            dict,
            u16::MAX as usize,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oar_runtime::program::{BufferDecl, BufferRole, Step};

    fn buffer(name: &str, dtype: DType, shape: Vec<usize>) -> BufferDecl {
        BufferDecl {
            name: name.into(),
            dtype,
            shape,
            role: BufferRole::Temp,
        }
    }

    fn program() -> Program {
        Program {
            buffers: vec![
                buffer("x", DType::F32, vec![2, 3]),
                buffer("y", DType::F32, vec![2, 3]),
            ],
            steps: vec![Step::kernel(0, vec![0, 1], 2, 1)],
            kernels: vec!["k0_relu".into()],
            outputs: vec![1],
            ..Program::default()
        }
    }

    #[test]
    fn a_well_formed_program_passes() {
        check_program(&program()).unwrap();
    }

    #[test]
    fn each_limit_is_an_error_naming_what_exceeds_it() {
        let mut p = program();
        p.buffers[1].dtype = DType::F16;
        let e = check_program(&p).unwrap_err().to_string();
        assert!(e.contains("buffer `y` is f16"), "{e}");

        let mut p = program();
        p.steps[0].args.push(7);
        let e = check_program(&p).unwrap_err().to_string();
        assert!(e.contains("step 0 (k0_relu) names buffer 7 of 2"), "{e}");

        let mut p = program();
        p.steps[0] = Step::kernel(3, vec![0, 1], 2, 1);
        let e = check_program(&p).unwrap_err().to_string();
        assert!(e.contains("step 0 calls kernel 3 of 1"), "{e}");

        // A rank whose shape tuple needs more than the .npy format's 65535 header bytes.
        let mut p = program();
        p.buffers[1].shape = vec![1; 30_000];
        let e = check_program(&p).unwrap_err().to_string();
        assert!(e.contains("output 0 (`y`)'s .npy header bytes"), "{e}");
        assert!(e.contains("limit of 65535"), "{e}");
    }
}
