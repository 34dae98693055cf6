//! `clonecloud link`: the link emulator as a process between a device and a clone server.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use clonecloud_linkem::{Link, Shape};
use clonecloud_partition::Network;

/// Emulate a network link on loopback: connections to --listen reach --to with the network's
/// bandwidth, round-trip time and loss (user-space: delay cannot come from `tc` here). Give
/// devices the --listen address as their --clone.
#[derive(Debug, Args)]
pub struct Opts {
    /// Address to listen on (port 0 picks one; the address is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: String,
    /// The clone server's address.
    #[arg(long, value_name = "HOST:PORT")]
    to: String,
    /// `wifi`, `3g`, or `BW_MBIT,RTT_MS`: the same figures the partitions are chosen for.
    #[arg(long, value_name = "wifi|3g|BW_MBIT,RTT_MS")]
    network: String,
    /// Device-to-clone bandwidth, Mbit/s, if it differs from the network's.
    #[arg(long, value_name = "MBIT")]
    up: Option<f64>,
    /// Probability (0 to 1) that a 1448-byte segment is lost and arrives a retransmission
    /// timeout late.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    loss: f64,
}

pub fn run(opts: Opts) -> anyhow::Result<ExitCode> {
    let network = Network::parse(&opts.network).map_err(anyhow::Error::msg)?;
    let shape = Shape { up_mbit: opts.up.unwrap_or(network.mbit), down_mbit: network.mbit, rtt_ms: network.rtt_ms, loss: opts.loss };
    shape.validate()?;
    let link = Link::start(&opts.listen, &opts.to, shape).with_context(|| format!("cannot emulate a link from {} to {}", opts.listen, opts.to))?;
    eprintln!("link to {}: {} Mbit/s up, {} Mbit/s down, {} ms round trip, loss {}", opts.to, shape.up_mbit, shape.down_mbit, shape.rtt_ms, shape.loss);
    // Scripts read the address (port 0 picks one) from this line, the only one on stdout.
    println!("listening on {}", link.addr());
    loop {
        std::thread::park();
    }
}
