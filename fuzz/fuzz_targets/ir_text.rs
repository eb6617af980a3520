//! The IR text parser: any input parses or returns an error; a parsed graph prints, the
//! printed text parses again, and printing that gives the same text (print is a fixed point).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(g) = oar_ir::parse(text) {
        let printed = oar_ir::print(&g);
        let again = oar_ir::parse(&printed)
            .unwrap_or_else(|e| panic!("printed graph does not parse: {e}\n{printed}"));
        assert_eq!(oar_ir::print(&again), printed, "print is not a fixed point");
    }
});
