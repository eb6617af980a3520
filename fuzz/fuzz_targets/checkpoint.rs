//! Checkpoint loading through the public `load_checkpoint(dir)`, whatever the on-disk layout
//! (a manifest or an index plus shards): the input is a bundle of files
//! (oar_fuzz::split_files) written into a fresh folder, which is then loaded.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let files = oar_fuzz::split_files(data);
    let dir = oar_fuzz::scratch_dir("ckpt");
    oar_fuzz::write_files(&dir, &files);
    let _ = oar_runtime::io::checkpoint::load_checkpoint(&dir);
});
