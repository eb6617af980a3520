//! What the supervisor changes in the rank command between starts: `--resume` from the last
//! checkpoint, `--dp` for the world size it chose (a `--plan auto` command re-plans for it
//! itself), and that choice itself (the ranks the slots file offers, within
//! `--min-ranks`/`--max-ranks`, dividing the global `--batch`).
//!
//! The command is the user's `oar` argument list; flags are found both as `--flag VALUE`
//! and `--flag=VALUE`, the forms clap accepts.

use std::path::Path;

/// The value of `flag` in `cmd` (the last one, as clap keeps the last of a repeated flag).
pub fn flag_value(cmd: &[String], flag: &str) -> Option<String> {
    let eq = format!("{flag}=");
    let mut found = None;
    let mut it = cmd.iter();
    while let Some(a) = it.next() {
        if a == flag {
            found = it.next().cloned();
        } else if let Some(v) = a.strip_prefix(&eq) {
            found = Some(v.to_string());
        }
    }
    found
}

/// `cmd` without any `flag VALUE` / `flag=VALUE`.
pub fn without_flag(cmd: &[String], flag: &str) -> Vec<String> {
    let eq = format!("{flag}=");
    let mut out = Vec::with_capacity(cmd.len());
    let mut it = cmd.iter();
    while let Some(a) = it.next() {
        if a == flag {
            it.next();
        } else if !a.starts_with(&eq) {
            out.push(a.clone());
        }
    }
    out
}

/// `cmd` with `flag` set to `value` (replacing any it had).
pub fn with_flag(cmd: &[String], flag: &str, value: &str) -> Vec<String> {
    let mut out = without_flag(cmd, flag);
    out.extend([flag.to_string(), value.to_string()]);
    out
}

/// The command a (re)start runs: resuming from `checkpoints` (the `--save` root) when it
/// holds one — dropping the user's own `--resume` and `--weights`, which the checkpoint
/// replaces — and with `--dp world` when the command trains data-parallel or `world > 1`.
/// A `--plan auto` command is left to plan for the world itself (the same planner call as
/// its first start, for the new size).
pub fn rank_command(cmd: &[String], resume: Option<&Path>, world: u64) -> Vec<String> {
    let mut out = cmd.to_vec();
    if let Some(dir) = resume {
        out = without_flag(&out, "--weights");
        out = with_flag(&out, "--resume", &dir.display().to_string());
    }
    let trains = out.first().is_some_and(|c| c == "train");
    let planned = flag_value(&out, "--plan").is_some();
    if trains && !planned && (world > 1 || flag_value(&out, "--dp").is_some()) {
        out = with_flag(&out, "--dp", &world.to_string());
    }
    out
}

/// The ranks a slots file offers: one whole number (whitespace around it allowed).
pub fn read_slots(path: &Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the slots file {}: {e}", path.display()))?;
    text.trim().parse::<u64>().map_err(|_| {
        format!(
            "the slots file {} should hold one whole number, not {:?}",
            path.display(),
            text.trim()
        )
    })
}

/// The world size to run: the largest `w` in `min..=min(max, available)` that divides the
/// global `batch` (each rank takes an equal shard; oar train does not accumulate gradients
/// across micro-batches, so a `w` that does not divide it cannot keep the global batch).
/// `None` when no size qualifies.
pub fn choose_world(min: u64, max: u64, available: u64, batch: Option<u64>) -> Option<u64> {
    let top = max.min(available);
    (min.max(1)..=top)
        .rev()
        .find(|w| batch.is_none_or(|b| b.is_multiple_of(*w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn flags_read_and_rewrite_in_both_spellings() {
        let c = v("train m --save ck --dp=4 --batch 12");
        assert_eq!(flag_value(&c, "--save").as_deref(), Some("ck"));
        assert_eq!(flag_value(&c, "--dp").as_deref(), Some("4"));
        assert_eq!(flag_value(&c, "--resume"), None);
        assert_eq!(
            with_flag(&c, "--dp", "3").join(" "),
            "train m --save ck --batch 12 --dp 3"
        );
        let r = rank_command(
            &v("train m --weights w --save ck --dp 4"),
            Some(Path::new("ck")),
            3,
        );
        assert_eq!(r.join(" "), "train m --save ck --resume ck --dp 3");
        // Not a training command, or one process without --dp: left as it is.
        assert_eq!(rank_command(&v("run x"), None, 2).join(" "), "run x");
        assert_eq!(rank_command(&v("train m"), None, 1).join(" "), "train m");
        // --plan auto re-plans for the world on its own: no --dp beside it.
        assert_eq!(
            rank_command(&v("train m --plan auto --cluster c.toml"), None, 3).join(" "),
            "train m --plan auto --cluster c.toml"
        );
    }

    #[test]
    fn the_world_divides_the_batch_within_the_bounds() {
        assert_eq!(choose_world(2, 4, 4, Some(12)), Some(4));
        assert_eq!(choose_world(2, 4, 3, Some(12)), Some(3));
        // 3 does not divide 8: the largest divisor below it.
        assert_eq!(choose_world(2, 4, 3, Some(8)), Some(2));
        assert_eq!(choose_world(3, 4, 2, Some(12)), None);
        assert_eq!(choose_world(1, 8, 5, None), Some(5));
        assert_eq!(choose_world(2, 4, 9, Some(12)), Some(4));
    }

    #[test]
    fn slots_files_hold_one_number() {
        let d = std::env::temp_dir().join(format!("oar-slots-{}", std::process::id()));
        std::fs::write(&d, " 3\n").expect("write");
        assert_eq!(read_slots(&d), Ok(3));
        std::fs::write(&d, "three").expect("write");
        assert!(read_slots(&d).is_err_and(|e| e.contains("one whole number")));
        let _ = std::fs::remove_file(&d);
    }
}
