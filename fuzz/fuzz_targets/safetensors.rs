//! safetensors weights: named tensors whose data fits the input, or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(w) = oar_runtime::io::weights::decode_safetensors_exact(data, Path::new("fuzz.st")) {
        let total: usize = w.values().map(|t| t.numel()).sum();
        assert!(
            total <= data.len(),
            "{total} elements from {} bytes",
            data.len()
        );
    }
});
