//! The ONNX importer with external data: the input is a bundle of files (oar_fuzz::split_files),
//! the first the model, the rest written beside it where its tensors' `location`s find them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use oar_frontend::onnx::{import_bytes, ImportOptions};

fuzz_target!(|data: &[u8]| {
    let files = oar_fuzz::split_files(data);
    let Some((_, model)) = files.first() else {
        return;
    };
    let dir = oar_fuzz::scratch_dir("onnx");
    oar_fuzz::write_files(&dir, &files[1..]);
    let _ = import_bytes(model, Some(&dir), "fuzz.onnx", &ImportOptions::default());
});
