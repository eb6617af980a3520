//! Cluster descriptions in JSON: parse and validate, or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = oar_ir::Cluster::from_json(text, "fuzz.json") {
            let _ = (c.num_devices(), c.num_nodes(), c.to_toml());
        }
    }
});
