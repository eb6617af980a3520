//! A person-readable summary of a cluster with its totals (`oar cluster show`).

use super::Cluster;
use std::collections::BTreeMap;
use std::fmt::Write;

fn fmt_tflops(t: f64) -> String {
    if t >= 1000.0 {
        format!("{:.2} PFLOP/s", t / 1000.0)
    } else {
        format!("{t:.1} TFLOP/s")
    }
}

impl Cluster {
    /// Aggregate peak TFLOP/s per precision over all devices, in a fixed precision order.
    pub fn total_peak_tflops(&self) -> Vec<(&'static str, f64)> {
        let order = ["f64", "f32", "tf32", "f16", "bf16", "i8"];
        let mut sums: BTreeMap<&'static str, f64> = BTreeMap::new();
        for g in &self.node_groups {
            let n = (g.nodes as u64 * g.devices_per_node as u64) as f64;
            for (k, v) in g.device.peak_tflops.entries() {
                *sums.entry(k).or_default() += v * n;
            }
        }
        order
            .iter()
            .filter_map(|k| sums.get(k).map(|v| (*k, *v)))
            .collect()
    }

    /// The text `oar cluster show` prints.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "cluster {}: {} nodes, {} devices",
            self.name,
            self.num_nodes(),
            self.num_devices()
        );
        let mut memory_gib = 0.0;
        let mut price = 0.0;
        for g in &self.node_groups {
            let d = &g.device;
            let n = (g.nodes as u64 * g.devices_per_node as u64) as f64;
            memory_gib += d.memory_gib * n;
            price += d.price_per_hour * n;
            let _ = writeln!(
                s,
                "\nnode group {}: {} nodes x {} {} {}",
                g.name,
                g.nodes,
                g.devices_per_node,
                d.kind.name(),
                d.model
            );
            let _ = writeln!(
                s,
                "  device memory   {} GiB at {} GB/s",
                d.memory_gib, d.memory_bandwidth_gbs
            );
            let peaks: Vec<String> = d
                .peak_tflops
                .entries()
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(s, "  peak TFLOP/s    {}", peaks.join(", "));
            let _ = writeln!(s, "  price           ${:.2}/h per device", d.price_per_hour);
            let _ = writeln!(
                s,
                "  intra-node      {}: {} GB/s per device per direction, {} us",
                g.intra_node.kind, g.intra_node.bandwidth_gbs, g.intra_node.latency_us
            );
        }
        let _ = writeln!(
            s,
            "\ninter-node        {}: {} GB/s per device per direction, {} us",
            self.inter_node.kind, self.inter_node.bandwidth_gbs, self.inter_node.latency_us
        );
        let _ = writeln!(s, "\ntotals");
        let _ = writeln!(s, "  devices         {}", self.num_devices());
        let _ = writeln!(s, "  memory          {memory_gib} GiB");
        for (k, v) in self.total_peak_tflops() {
            let _ = writeln!(s, "  peak {k:<10} {}", fmt_tflops(v));
        }
        let _ = writeln!(s, "  price           ${price:.2}/h");
        s
    }
}
