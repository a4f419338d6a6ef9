//! Kernel counters and state as metrics: the pinned maps read at scrape time (`STATS` by
//! VIP and reason, the number of `FLOWS` entries, live `PENALTY` entries, each node's share
//! of the live `MAGLEV` half).
use std::{path::PathBuf, sync::Mutex};

use lb_common::{FLOWS, FlowKey, FlowValue, MAGLEV_SIZE, NO_NODE, PENALTY, SourceKey};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

use crate::dataplane::{inspect, kernel};

/// Slots per node index of the live Maglev half, as [`inspect::maglev_distribution`] gives.
type Distribution = Vec<(u32, u32)>;

/// Reads the pinned maps under `bpffs` on every scrape.
#[derive(Debug)]
pub struct XdpCollector {
    pub bpffs: PathBuf,
    /// The Maglev distribution last read (65537 lookups), with the rebuild count and live
    /// half it was read at: read again only after this process wrote a new table.
    maglev: Mutex<Option<((u64, u32), Distribution)>>,
}

impl XdpCollector {
    pub fn new(bpffs: PathBuf) -> Self {
        Self {
            bpffs,
            maglev: Mutex::new(None),
        }
    }

    fn maglev_distribution(&self, cfg: &lb_common::Config) -> Option<Distribution> {
        let at = (super::maglev_rebuilds(), cfg.maglev_active);
        let mut cache = self
            .maglev
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((read_at, dist)) = cache.as_ref()
            && *read_at == at
            && cfg.steering == 1
        {
            return Some(dist.clone());
        }
        let dist = inspect::maglev_distribution(&self.bpffs, cfg).ok()?;
        *cache = Some((at, dist.clone()));
        Some(dist)
    }
}

impl Collector for XdpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Unreadable maps (not attached yet, or removed) expose nothing rather than failing
        // the whole scrape.
        let Ok(vips) = inspect::read_vip_counters(&self.bpffs) else {
            return Ok(());
        };
        for (name, help, pick) in [
            (
                "ebpf_lb_xdp_packets",
                "Packets to a VIP seen by lb_xdp, by VIP and reason",
                0,
            ),
            (
                "ebpf_lb_xdp_bytes",
                "Bytes to a VIP seen by lb_xdp, by VIP and reason",
                1,
            ),
        ] {
            let counter = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            for v in &vips {
                let vip = inspect::vip_label(&v.key);
                for (reason, c) in &v.counters {
                    let labels = [("vip", vip.clone()), ("reason", reason.name().to_owned())];
                    let value = if pick == 0 { c.packets } else { c.bytes };
                    ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        self.encode_state(&mut encoder)
    }
}

impl XdpCollector {
    /// The state gauges; a map that cannot be read leaves its family out.
    fn encode_state(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let bpffs = &self.bpffs;
        if let Ok(flows) = inspect::scan::<FlowKey, FlowValue>(bpffs, FLOWS, 0) {
            let g = ConstGauge::new(flows.total as i64);
            g.encode(encoder.encode_descriptor(
                "ebpf_lb_flow_entries",
                "Entries in the FLOWS table (flows pinned to a node)",
                None,
                g.metric_type(),
            )?)?;
        }
        let now = kernel::monotonic_ns();
        if let Ok(penalty) =
            inspect::scan::<SourceKey, u64>(bpffs, PENALTY, lb_common::PENALTY_ENTRIES as usize)
        {
            let g = ConstGauge::new(inspect::active_penalties(&penalty, now) as i64);
            g.encode(encoder.encode_descriptor(
                "ebpf_lb_penalty_box_entries",
                "Sources in the XDP penalty box whose penalty has not expired",
                None,
                g.metric_type(),
            )?)?;
        }
        let Ok(cfg) = inspect::read_config(bpffs) else {
            return Ok(());
        };
        let (Ok(nodes), Some(dist)) = (inspect::read_nodes(bpffs), self.maglev_distribution(&cfg))
        else {
            return Ok(());
        };
        let g = ConstGauge::new(0.0f64);
        let mut family = encoder.encode_descriptor(
            "ebpf_lb_maglev_nodes",
            "Nodes in the live Maglev table and the share of new flows each gets (0 to 1); \
             empty when steering is off",
            None,
            g.metric_type(),
        )?;
        for (idx, slots) in dist.iter().filter(|(idx, _)| *idx != NO_NODE) {
            let node = nodes.iter().find(|(i, _)| i == idx).map_or_else(
                || format!("#{idx}"),
                |(_, n)| inspect::node_addr(n).to_string(),
            );
            let share = f64::from(*slots) / f64::from(MAGLEV_SIZE);
            ConstGauge::new(share).encode(family.encode_family(&[("node", node)])?)?;
        }
        Ok(())
    }
}
