//! `ulvs-decap`: the userspace IP-in-IP decapsulator for TUN-mode real
//! servers whose kernel has no `ipip` module. It reads protocol-4 packets
//! from a raw socket, keeps those whose inner destination is one of its VIPs,
//! strips the outer header and writes the inner packet to a TUN device, so
//! the kernel receives it as if it had arrived on that interface. Started
//! and stopped by `realserver-setup/ulvs-realserver up|down --mode tun`.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use socket2::{Domain, Protocol, Socket, Type};
use ulvs::cli::decap::Args;

fn run(args: Args) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    let mut tun =
        ulvs::io::sys::open_tun(&args.tun).with_context(|| format!("creating TUN device {}", args.tun))?;
    let sock =
        Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(4))).context("raw IPPROTO_IPIP socket")?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let vips: Vec<u32> = args.vips.iter().map(|v| u32::from(*v)).collect();
    log::info!("decapsulating IP-in-IP for {:?} into {}", args.vips, args.tun);
    let (mut ok, mut ignored, mut bad) = (0u64, 0u64, 0u64);
    let mut buf = vec![0u8; 65536];
    let mut s = &sock;
    while !stop.load(Ordering::Relaxed) {
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading the raw socket"),
        };
        let p = &buf[..n];
        // Outer IPv4 header (raw IPv4 sockets deliver it), then the inner packet.
        if n < 40 || p[0] >> 4 != 4 {
            bad += 1;
            continue;
        }
        let ihl = ((p[0] & 0xf) as usize) * 4;
        let total = u16::from_be_bytes([p[2], p[3]]) as usize;
        if ihl < 20 || total > n || total < ihl + 20 || p[9] != 4 {
            bad += 1;
            continue;
        }
        let inner = &p[ihl..total];
        let dst = u32::from_be_bytes([inner[16], inner[17], inner[18], inner[19]]);
        if inner[0] >> 4 != 4 || !vips.contains(&dst) {
            ignored += 1;
            continue;
        }
        // A TUN write takes one whole packet or fails; it is never partial.
        match tun.write_all(inner) {
            Ok(()) => ok += 1,
            Err(e) => {
                bad += 1;
                log::warn!("writing to {}: {e}", args.tun);
            }
        }
    }
    log::info!("stopping: {ok} packets decapsulated, {ignored} not for our VIPs, {bad} malformed or failed");
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ulvs-decap: {e:#}");
            ExitCode::from(1)
        }
    }
}
