//! The generated half of model.c: the program's buffers, steps, kernels and I/O as the C
//! tables runtime.c reads. Sizes come from the program (no fixed-size arrays); the
//! program was checked against the C types first (`check.rs`).

use super::check::npy_descr;
use oar_ir::DType;
use oar_runtime::io::npy::npy_header;
use oar_runtime::program::{BufferRole, Program};
use std::fmt::Write as _;

/// `s` as a C string literal: printable ASCII as is, every other byte (non-ASCII names,
/// quotes, backslashes, `?` of trigraphs) as a three-digit octal escape.
pub(super) fn c_string(s: &str) -> String {
    let mut out = String::from("\"");
    for b in s.bytes() {
        if (b' '..=b'~').contains(&b) && !matches!(b, b'"' | b'\\' | b'?') {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\{b:03o}");
        }
    }
    out.push('"');
    out
}

/// A C array initialiser; C has no empty initialiser lists, so an empty list holds one 0
/// that no count reaches.
fn c_list<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().map(|x| x.to_string()).collect();
    if items.is_empty() {
        "{0}".into()
    } else {
        format!("{{{}}}", items.join(", "))
    }
}

fn dtype_code(d: DType) -> u8 {
    match d {
        DType::I64 => 1,
        DType::Bool => 2,
        DType::F32 | DType::F16 | DType::BF16 | DType::F64 | DType::I32 | DType::I8 | DType::U8 => {
            0
        }
    }
}

fn role_code(p: &Program, id: usize) -> u8 {
    match p.buffers[id].role {
        BufferRole::Temp if p.zeroed.contains(&id) => 4,
        BufferRole::Temp => 0,
        BufferRole::Input(_) => 1,
        BufferRole::Weight(_) => 2,
        BufferRole::Constant(_) => 3,
    }
}

/// `OAR_INPUTS`/`OAR_OUTPUTS` (`table`), each buffer's dims and .npy header beside it.
fn io_table(t: &mut String, p: &Program, table: &str, list: &[(usize, String)]) {
    for (k, (buf, _)) in list.iter().enumerate() {
        let b = &p.buffers[*buf];
        let header = npy_header(npy_descr(b.dtype).unwrap_or("<f4"), &b.shape);
        let _ = writeln!(
            t,
            "static const int64_t {table}_DIMS_{k}[] = {};\nstatic const unsigned char {table}_NPY_{k}[] = {};",
            c_list(&b.shape),
            c_list(&header)
        );
    }
    let _ = writeln!(
        t,
        "const int OAR_NUM_{table} = {};\nconst oar_io OAR_{table}[] = {{",
        list.len()
    );
    for (k, (buf, name)) in list.iter().enumerate() {
        let b = &p.buffers[*buf];
        let header_len = npy_header(npy_descr(b.dtype).unwrap_or("<f4"), &b.shape).len();
        let _ = writeln!(
            t,
            "  {{{buf}, {}, {}, {table}_DIMS_{k}, {}, {table}_NPY_{k}, {header_len}}},",
            dtype_code(b.dtype),
            b.shape.len(),
            c_string(name),
        );
    }
    if list.is_empty() {
        t.push_str("  {0, 0, 0, 0, 0, 0, 0},\n");
    }
    t.push_str("};\n");
}

/// The tables of `p`: `offsets` are each weight's or constant's place in its blob.
pub(super) fn program_tables(p: &Program, offsets: &[usize], input_names: &[String]) -> String {
    let mut t = String::new();
    let owned_bytes = p.storage_bytes();
    let _ = writeln!(
        t,
        "\nconst int OAR_NUM_BUFFERS = {};\nconst oar_buffer OAR_BUFFERS[] = {{",
        p.buffers.len()
    );
    for id in 0..p.buffers.len() {
        let _ = writeln!(
            t,
            "  {{{}, {}, {}, {}}},",
            owned_bytes[id],
            role_code(p, id),
            offsets[id],
            p.owner(id)
        );
    }
    if p.buffers.is_empty() {
        t.push_str("  {0, 0, 0, 0},\n");
    }
    let _ = writeln!(
        t,
        "}};\nconst int OAR_NUM_STEPS = {};\nconst int OAR_PROLOGUE_STEPS = {};\nconst oar_step OAR_STEPS[] = {{",
        p.steps.len(),
        p.prologue
    );
    let mut args = Vec::new();
    for s in &p.steps {
        // `check_program` refused collective and send/recv steps: every step calls a kernel.
        let Some(k) = s.kernel_call() else { continue };
        let _ = writeln!(
            t,
            "  {{{}, {}, {}, {}, {}}},",
            k.kernel,
            s.args.len(),
            args.len(),
            k.extent,
            k.grain
        );
        args.extend(s.args.iter().copied());
    }
    if p.steps.is_empty() {
        t.push_str("  {0, 0, 0, 0, 0},\n");
    }
    let _ = writeln!(
        t,
        "}};\nconst int OAR_NUM_STEP_ARGS = {};\nconst int OAR_STEP_ARGS[] = {};",
        args.len(),
        c_list(&args)
    );
    for k in &p.kernels {
        let _ = writeln!(t, "void {k}(void **, int64_t, int64_t, void *);");
    }
    let _ = writeln!(
        t,
        "const oar_kernel OAR_KERNELS[] = {};",
        c_list(&p.kernels)
    );
    let mut ins: Vec<(usize, usize)> = p
        .buffers
        .iter()
        .enumerate()
        .filter_map(|(id, b)| match b.role {
            BufferRole::Input(k) => Some((k, id)),
            BufferRole::Weight(_) | BufferRole::Constant(_) | BufferRole::Temp => None,
        })
        .collect();
    ins.sort();
    let ins: Vec<(usize, String)> = ins
        .into_iter()
        .map(|(k, id)| {
            let name = input_names
                .get(k)
                .cloned()
                .unwrap_or_else(|| format!("input{k}"));
            (id, name)
        })
        .collect();
    io_table(&mut t, p, "INPUTS", &ins);
    let outs: Vec<(usize, String)> = p
        .outputs
        .iter()
        .enumerate()
        .map(|(k, &id)| (id, format!("output{k}")))
        .collect();
    io_table(&mut t, p, "OUTPUTS", &outs);
    let _ = writeln!(t, "const int64_t OAR_SCRATCH_BYTES = {};", p.scratch_bytes);
    t
}

#[cfg(test)]
mod tests {
    use super::c_string;

    #[test]
    fn c_strings_escape_every_byte_c_could_misread() {
        assert_eq!(c_string("input_ids"), "\"input_ids\"");
        assert_eq!(c_string("a\"b\\c?"), "\"a\\042b\\134c\\077\"");
        // A non-ASCII name is its UTF-8 bytes, octal: no `\u{…}` that C would reject.
        assert_eq!(c_string("é1"), "\"\\303\\2511\"");
    }
}
