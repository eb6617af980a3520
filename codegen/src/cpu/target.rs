//! The CPU code is generated for: the host as LLVM and Linux describe it, or a CPU named by
//! the user (cross-compiling an object file or executable for another x86 machine).

use super::CpuError;
use crate::kernel::CpuModel;
use inkwell::targets::{
    CodeModel, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple,
};
use inkwell::OptimizationLevel;
use std::path::Path;

/// An LLVM target machine for one CPU.
pub struct CpuTarget {
    pub machine: TargetMachine,
    pub cpu: String,
    /// Empty: the CPU's own features.
    pub features: String,
}

fn native() -> Result<TargetTriple, CpuError> {
    Target::initialize_native(&InitializationConfig::default()).map_err(CpuError::Target)?;
    Ok(TargetMachine::get_default_triple())
}

/// The host CPU: LLVM's name and features for it, cache sizes from
/// `/sys/devices/system/cpu/cpu0/cache` (typical sizes where that is unreadable).
pub fn host_cpu() -> Result<CpuModel, CpuError> {
    native()?;
    let name = TargetMachine::get_host_cpu_name().to_string();
    let features = TargetMachine::get_host_cpu_features().to_string();
    let mut cpu = CpuModel::named(&name, &features);
    let caches = read_caches(Path::new("/sys/devices/system/cpu/cpu0/cache"));
    if let Some(b) = caches.l1d {
        cpu.l1d_bytes = b;
    }
    if let Some(b) = caches.l2 {
        cpu.l2_bytes = b;
    }
    if let Some(b) = caches.l3_per_core {
        cpu.l3_bytes_per_core = b;
    }
    Ok(cpu)
}

/// A target machine for `cpu` (the host's triple: oar generates x86-64 code for the
/// machine it runs on or another x86-64 CPU).
pub fn target_machine(cpu: &CpuModel) -> Result<CpuTarget, CpuError> {
    let triple = native()?;
    let target = Target::from_triple(&triple).map_err(|e| CpuError::Target(e.to_string()))?;
    let machine = target
        .create_target_machine(
            &triple,
            &cpu.name,
            &cpu.features,
            OptimizationLevel::Aggressive,
            RelocMode::PIC,
            CodeModel::Default,
        )
        .ok_or_else(|| CpuError::Target(format!("no target machine for {}", triple)))?;
    Ok(CpuTarget {
        machine,
        cpu: cpu.name.clone(),
        features: cpu.features.clone(),
    })
}

/// Checks a user-supplied CPU name: LLVM takes an unknown name with only a warning on
/// stderr and falls back to baseline code, so a typo must fail here instead.
pub fn check_cpu_name(name: &str) -> Result<(), CpuError> {
    native()?;
    let host = TargetMachine::get_host_cpu_name().to_string();
    if name == host || CpuModel::is_known(name) {
        Ok(())
    } else {
        Err(CpuError::Target(format!(
            "unknown CPU `{name}`; this host is `{host}`, others known: {}",
            CpuModel::known_names().join(", ")
        )))
    }
}

/// Checks the form of a user-supplied LLVM feature list (`+avx512f,-avx512bw`): LLVM
/// ignores a malformed entry with only a warning on stderr.
pub fn check_features(features: &str) -> Result<(), CpuError> {
    for f in features.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let name = f.strip_prefix(['+', '-']).unwrap_or("");
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
        if !ok {
            return Err(CpuError::Target(format!(
                "target feature `{f}`: expected `+name` or `-name`, e.g. `+avx512f`"
            )));
        }
    }
    Ok(())
}

#[derive(Debug, Default, PartialEq)]
struct Caches {
    l1d: Option<u64>,
    l2: Option<u64>,
    l3_per_core: Option<u64>,
}

/// Linux's cache description: `indexN/{level,type,size,shared_cpu_list}`.
fn read_caches(dir: &Path) -> Caches {
    let mut c = Caches::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return c;
    };
    for e in entries.flatten() {
        let p = e.path();
        let read = |f: &str| std::fs::read_to_string(p.join(f)).ok();
        let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size"))
        else {
            continue;
        };
        let Some(bytes) = parse_size(size.trim()) else {
            continue;
        };
        let sharers = read("shared_cpu_list")
            .map(|s| count_cpus(s.trim()))
            .unwrap_or(1)
            .max(1);
        match (level.trim(), kind.trim()) {
            ("1", "Data") => c.l1d = Some(bytes),
            ("2", "Unified" | "Data") => c.l2 = Some(bytes),
            ("3", "Unified") => c.l3_per_core = Some(bytes / sharers),
            _ => {}
        }
    }
    c
}

/// `32K`, `1M`, `1024` (bytes).
fn parse_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok().map(|n| n * mult)
}

/// CPUs in a list such as `0-3,8,10-11`.
fn count_cpus(list: &str) -> u64 {
    list.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('-') {
            Some((a, b)) => match (a.parse::<u64>(), b.parse::<u64>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 1,
            },
            None => 1,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_lists_must_be_signed_names() {
        assert!(check_features("+avx512f,-avx512bw").is_ok());
        assert!(check_features("").is_ok());
        let e = check_features("+avx2,avx512f").unwrap_err().to_string();
        assert!(e.contains("`avx512f`") && e.contains("+name"), "{e}");
        assert!(check_features("+").is_err());
    }

    #[test]
    fn sysfs_cache_sizes_parse() {
        assert_eq!(parse_size("32K"), Some(32 << 10));
        assert_eq!(parse_size("1M"), Some(1 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(count_cpus("0-3,8,10-11"), 7);
        assert_eq!(count_cpus("0"), 1);
    }

    #[test]
    fn caches_come_from_a_sysfs_tree() {
        let dir = std::env::temp_dir().join(format!("oar-caches-{}", std::process::id()));
        let put = |i: usize, level: &str, kind: &str, size: &str, shared: &str| {
            let d = dir.join(format!("index{i}"));
            std::fs::create_dir_all(&d).expect("temp dir");
            for (f, v) in [
                ("level", level),
                ("type", kind),
                ("size", size),
                ("shared_cpu_list", shared),
            ] {
                std::fs::write(d.join(f), format!("{v}\n")).expect("temp file");
            }
        };
        put(0, "1", "Data", "48K", "0");
        put(1, "1", "Instruction", "32K", "0");
        put(2, "2", "Unified", "2048K", "0");
        put(3, "3", "Unified", "32768K", "0-7");
        let c = read_caches(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            c,
            Caches {
                l1d: Some(48 << 10),
                l2: Some(2 << 20),
                l3_per_core: Some(4 << 20),
            }
        );
        assert_eq!(read_caches(Path::new("/nonexistent")), Caches::default());
    }
}
