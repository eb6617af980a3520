//! IR JSON (`oar_ir::read_graph` on text starting with `{`): serde plus the verifier.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if !text.trim_start().starts_with('{') {
        return;
    }
    if let Ok(g) = oar_ir::read_graph(text, "fuzz.json") {
        // A verified graph prints without panicking.
        let _ = oar_ir::print(&g);
    }
});
