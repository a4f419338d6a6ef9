//! Kernel counters as metrics: the pinned `STATS`/`VIPS` maps read at scrape time.
use std::path::PathBuf;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::counter::ConstCounter,
};

use crate::dataplane::inspect;

/// Reads the pinned maps under `bpffs` on every scrape.
#[derive(Debug)]
pub struct XdpCollector {
    pub bpffs: PathBuf,
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
        Ok(())
    }
}
