//! `oar plan CTR_MODEL --cluster FILE --throughput T`: the HeterPS placement report from
//! the command line, and its errors (an unpriced cluster, an impossible target).

mod cli_util;
use cli_util::{fails, ok};

const HETERO: &str = "examples/clusters/hetero.toml";

#[test]
fn text_report_names_placement_cost_and_every_method() {
    let out = ok(&[
        "plan",
        "ctr-dnn",
        "--cluster",
        HETERO,
        "--throughput",
        "50000",
        "--rl-iterations",
        "10",
    ]);
    for want in [
        "HeterPS placement of ctr-dnn on hetero",
        "per epoch",
        "exact (DP)",
        "greedy",
        "CPU only",
        "GPU only",
        "RL (LSTM + REINFORCE)",
        "time to schedule",
    ] {
        assert!(out.contains(want), "missing `{want}`:\n{out}");
    }
    let md = ok(&[
        "plan",
        "ctr-dnn",
        "--cluster",
        HETERO,
        "--heterps",
        "--format",
        "md",
        "--rl-iterations",
        "5",
    ]);
    assert!(md.contains("| method | placement |"), "{md}");
}

#[test]
fn unpriced_cluster_and_impossible_target_are_clear_errors() {
    // cpu4.toml prices its devices at 0.
    let err = fails(&[
        "plan",
        "ctr-dnn",
        "--cluster",
        "examples/clusters/cpu4.toml",
        "--throughput",
        "1000",
    ]);
    assert!(err.contains("examples/clusters/cpu4.toml"), "{err}");
    assert!(
        err.contains("`desktop-16c`") && err.contains("price_per_hour"),
        "{err}"
    );
    let err = fails(&[
        "plan",
        "ctr-dnn",
        "--cluster",
        HETERO,
        "--throughput",
        "1e13",
    ]);
    assert!(err.contains("the most any placement reaches"), "{err}");
    let err = fails(&[
        "plan",
        "ernie-3.0-tiny-nope",
        "--cluster",
        HETERO,
        "--heterps",
    ]);
    assert!(err.contains("is not a zoo model"), "{err}");
}
