//! `oar cluster list`, `oar cluster show PRESET|FILE` and `oar cluster calibrate`.

use clap::{Subcommand, ValueEnum};
use oar::ir::cluster::{Cluster, PRESETS};

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Format {
    Text,
    Json,
    Toml,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// List the built-in presets.
    List,
    /// Show a preset or a cluster file (TOML or JSON) with its totals.
    Show {
        /// A preset name (see `oar cluster list`) or a .toml/.json file.
        spec: String,
        /// Override the number of nodes in every node group.
        #[arg(long)]
        nodes: Option<u32>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Measure this machine (GEMM efficiency by shape, memory bandwidth, MPI all-reduce
    /// α/β) and write a cluster file the planner reads.
    Calibrate(super::calibrate::CalibrateArgs),
    /// One rank of the calibration's all-reduce timing (started by `calibrate` under mpirun).
    #[command(hide = true)]
    CalibrateRank {
        #[arg(long, default_value_t = 16 << 20)]
        max_bytes: usize,
    },
}

pub fn run(c: ClusterCommand) -> anyhow::Result<()> {
    match c {
        ClusterCommand::List => {
            let mut out = String::new();
            for p in PRESETS {
                let aliases = if p.aliases.is_empty() {
                    String::new()
                } else {
                    format!(" (alias: {})", p.aliases.join(", "))
                };
                out.push_str(&format!("{:<16} {}{}\n", p.name, p.description, aliases));
            }
            super::common::emit(&out, None)
        }
        ClusterCommand::Show {
            spec,
            nodes,
            format,
        } => {
            let mut cluster = Cluster::resolve(&spec)?;
            if let Some(n) = nodes {
                anyhow::ensure!(n > 0, "--nodes must be at least 1");
                cluster = cluster.with_nodes(n);
            }
            let out = match format {
                Format::Text => cluster.summary(),
                Format::Json => serde_json::to_string_pretty(&cluster)? + "\n",
                Format::Toml => cluster.to_toml(),
            };
            super::common::emit(&out, None)
        }
        ClusterCommand::Calibrate(a) => super::calibrate::run(a),
        ClusterCommand::CalibrateRank { max_bytes } => super::calibrate::rank_main(max_bytes),
    }
}
