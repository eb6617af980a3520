//! One runner per backend. Each compiles a case once (`Compiled` for this CPU) and returns
//! the outputs of every run it makes; the harness compares each run to the interpreter.
//! Executors that keep buffers between runs run twice: the second run must not depend on
//! what the first left behind.

use oar_codegen::cpu::{host_cpu, jit};
use oar_codegen::kernel::{build_kernels, Compiled};
use oar_codegen::package::{package, Artifact};
use oar_runtime::io::npy::{read_npy, write_npy};
use oar_runtime::program::Executor;
use oar_runtime::{HostTensor, TensorData, Weights};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::cases::Case;

/// Threads every executor runs with: enough to split kernels, as in production.
const THREADS: usize = 2;

pub trait Backend {
    fn name(&self) -> &'static str;
    /// Cases this backend does not run, each with the reason.
    fn known_gaps(&self) -> &'static [(&'static str, &'static str)];
    /// The outputs of each run of the compiled case on `inputs`.
    fn run(
        &self,
        case: &Case,
        compiled: Compiled,
        weights: &Weights,
        inputs: &[HostTensor],
        dir: &Path,
    ) -> Result<Vec<Vec<HostTensor>>, String>;
}

/// The case's kernels for this CPU.
pub fn compile(case: &Case) -> Result<Compiled, String> {
    let cpu = host_cpu().map_err(|e| e.to_string())?;
    build_kernels(&case.graph, &case.bindings, &cpu).map_err(|e| e.to_string())
}

/// oar-runtime's executor (runtime/src/program/exec.rs) on JIT-compiled kernels.
pub struct RustExecutor;

impl Backend for RustExecutor {
    fn name(&self) -> &'static str {
        "rust-executor"
    }
    fn known_gaps(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    fn run(
        &self,
        _: &Case,
        compiled: Compiled,
        weights: &Weights,
        inputs: &[HostTensor],
        _: &Path,
    ) -> Result<Vec<Vec<HostTensor>>, String> {
        let code = jit(&compiled).map_err(|e| e.to_string())?;
        let mut exec = Executor::new(compiled.program, code.kernels.clone(), weights, THREADS)
            .map_err(|e| e.to_string())?;
        let runs = (0..2)
            .map(|_| exec.run(inputs).map_err(|e| e.to_string()))
            .collect();
        // The executor calls into the JIT's code: drop it first.
        drop(exec);
        drop(code);
        runs
    }
}

fn input_names(case: &Case) -> Vec<String> {
    let g = &case.graph;
    g.inputs().iter().map(|&i| g.node(i).name.clone()).collect()
}

fn packaged(
    compiled: &Compiled,
    case: &Case,
    weights: &Weights,
    artifact: Artifact,
    out: &Path,
) -> Result<(), String> {
    package(compiled, &input_names(case), weights, artifact, true, out)
        .map(|_| ())
        .map_err(|e| format!("packaging: {e}"))
}

fn exec(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// The packaged executable (main.c's front end over runtime.c), run as a subprocess on
/// .npy files. One run per process: the run whose temporaries start poisoned.
pub struct Executable;

impl Backend for Executable {
    fn name(&self) -> &'static str {
        "packaged-executable"
    }
    fn known_gaps(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    fn run(
        &self,
        case: &Case,
        compiled: Compiled,
        weights: &Weights,
        inputs: &[HostTensor],
        dir: &Path,
    ) -> Result<Vec<Vec<HostTensor>>, String> {
        let exe = dir.join("model");
        packaged(&compiled, case, weights, Artifact::Executable, &exe)?;
        let mut cmd = Command::new(&exe);
        cmd.args(["--threads", &THREADS.to_string()]);
        for (name, t) in input_names(case).iter().zip(inputs) {
            let p = dir.join(format!("in_{name}.npy"));
            write_npy(&p, t).map_err(|e| e.to_string())?;
            cmd.arg("--input").arg(format!("{name}={}", p.display()));
        }
        let outs: Vec<PathBuf> = (0..compiled.program.outputs.len())
            .map(|k| dir.join(format!("out{k}.npy")))
            .collect();
        for p in &outs {
            cmd.arg("-o").arg(p);
        }
        exec(&mut cmd)?;
        let got = outs
            .iter()
            .map(|p| read_npy(p).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        Ok(vec![got])
    }
}

fn raw_bytes(t: &HostTensor) -> Vec<u8> {
    match &t.data {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Bool(v) => v.iter().map(|&b| b as u8).collect(),
    }
}

/// Raw bytes read back as a tensor of `like`'s dtype and `shape`.
fn from_raw(bytes: &[u8], like: &oar_runtime::program::BufferDecl) -> HostTensor {
    let shape = like.shape.clone();
    match like.dtype {
        oar_ir::DType::I64 => HostTensor::i64(
            shape,
            bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
        ),
        oar_ir::DType::Bool => HostTensor::bool(shape, bytes.iter().map(|&b| b != 0).collect()),
        _ => HostTensor::f32(
            shape,
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
                .collect(),
        ),
    }
}

/// The packaged shared library, called through its C API (the generated header) by
/// `driver.c`, twice per process.
pub struct SharedLibrary;

impl Backend for SharedLibrary {
    fn name(&self) -> &'static str {
        "packaged-shared-library"
    }
    fn known_gaps(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    fn run(
        &self,
        case: &Case,
        compiled: Compiled,
        weights: &Weights,
        inputs: &[HostTensor],
        dir: &Path,
    ) -> Result<Vec<Vec<HostTensor>>, String> {
        packaged(
            &compiled,
            case,
            weights,
            Artifact::SharedLibrary,
            &dir.join("libmodel.so"),
        )?;
        std::fs::write(dir.join("driver.c"), include_str!("driver.c"))
            .map_err(|e| e.to_string())?;
        exec(Command::new("cc").current_dir(dir).args([
            "-O1",
            "-o",
            "driver",
            "driver.c",
            "-L.",
            "-lmodel",
            "-Wl,-rpath,$ORIGIN",
        ]))?;
        let mut cmd = Command::new(dir.join("driver"));
        cmd.arg(THREADS.to_string());
        for (k, t) in inputs.iter().enumerate() {
            let p = dir.join(format!("in{k}.bin"));
            std::fs::write(&p, raw_bytes(t)).map_err(|e| e.to_string())?;
            cmd.arg(p);
        }
        let p = &compiled.program;
        for k in 0..p.outputs.len() {
            cmd.arg(dir.join(format!("out{k}.bin")));
            cmd.arg(p.buffers[p.outputs[k]].bytes().to_string());
        }
        exec(&mut cmd)?;
        (1..=2)
            .map(|r| {
                p.outputs
                    .iter()
                    .enumerate()
                    .map(|(k, &id)| {
                        let f = dir.join(format!("out{k}.bin.{r}"));
                        let bytes =
                            std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?;
                        Ok(from_raw(&bytes, &p.buffers[id]))
                    })
                    .collect()
            })
            .collect()
    }
}
