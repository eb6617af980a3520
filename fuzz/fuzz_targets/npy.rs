//! `.npy` decoding: a tensor whose data fits the input, or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = oar_runtime::io::npy::decode_npy_exact(data, Path::new("fuzz.npy")) {
        // No element was invented: the data came from the input's bytes.
        assert!(
            t.numel() <= data.len(),
            "{} elements from {} bytes",
            t.numel(),
            data.len()
        );
        let again = oar_runtime::io::npy::decode_npy_exact(
            &oar_runtime::io::npy::encode_npy(&t),
            Path::new("again.npy"),
        )
        .expect("an encoded tensor decodes");
        assert_eq!(again.shape, t.shape);
    }
});
