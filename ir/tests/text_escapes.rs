//! String escapes in the IR text format survive print → parse → print.

use oar_ir::{parse, print};

/// Names holding control characters print as `\u{..}` escapes; the lexer once consumed the
/// escape without its closing brace, so a second print gained a `}` per escape (found by
/// the `ir_text` fuzz target: fuzz/regressions/ir_text/print-not-fixed-point).
#[test]
fn unicode_escapes_round_trip() {
    let text = "graph @g(%x: f32[2]) -> (f32[2]) {\n  %w = param \"a\\u{1}\\u{0}}b\\u{1d}c\" : f32[2]\n  %0 = add(%x, %w) : f32[2]\n  return %0\n}\n";
    let g = parse(text).unwrap();
    let printed = print(&g);
    assert_eq!(printed, text);
    assert_eq!(print(&parse(&printed).unwrap()), printed);
    let finding = include_str!("../../fuzz/regressions/ir_text/print-not-fixed-point");
    let once = print(&parse(finding).unwrap());
    assert_eq!(
        print(&parse(&once).unwrap()),
        once,
        "print is a fixed point"
    );
}
