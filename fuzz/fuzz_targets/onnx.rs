//! The ONNX importer on protobuf bytes, no model folder (external data is refused).
#![no_main]
use libfuzzer_sys::fuzz_target;
use oar_frontend::onnx::{import_bytes, ImportOptions};

fuzz_target!(|data: &[u8]| {
    let _ = import_bytes(data, None, "fuzz.onnx", &ImportOptions::default());
});
