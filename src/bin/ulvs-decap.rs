//! `ulvs-decap`: the userspace decapsulator for TUN-mode real servers whose
//! kernel has no `ipip` (IPv4) or `ip6_tunnel` (IPv6) module. It reads
//! IP-in-IP packets (protocol 4) from a raw IPv4 socket and IPv6-in-IPv6
//! packets (next header 41) from a raw IPv6 socket, keeps those whose inner
//! destination is one of its VIPs, and writes the inner packet to a TUN
//! device, so the kernel receives it as if it had arrived on that interface.
//! Started and stopped by `realserver-setup/ulvs-realserver up|down --mode tun`.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use socket2::{Domain, Protocol, Socket, Type};
use ulvs::cli::decap::Args;

/// What to do with one packet read from a raw socket.
#[derive(Debug, PartialEq, Eq)]
enum Verdict<'a> {
    /// The inner packet, to be written to the TUN device as it is.
    Inner(&'a [u8]),
    /// Well-formed, but its inner destination is not one of our VIPs.
    NotOurs,
    /// Too short, lengths that disagree, or an inner packet of another family.
    Malformed,
}

/// An IP-in-IP packet as a raw IPv4 socket delivers it: the outer IPv4
/// header, then the inner IPv4 packet (trailing bytes beyond the outer total
/// length cut off).
fn decap4<'a>(p: &'a [u8], vips: &[Ipv4Addr]) -> Verdict<'a> {
    if p.len() < 40 || p[0] >> 4 != 4 {
        return Verdict::Malformed;
    }
    let ihl = ((p[0] & 0xf) as usize) * 4;
    let total = u16::from_be_bytes([p[2], p[3]]) as usize;
    if ihl < 20 || total > p.len() || total < ihl + 20 || p[9] != 4 {
        return Verdict::Malformed;
    }
    let inner = &p[ihl..total];
    if inner[0] >> 4 != 4 {
        return Verdict::Malformed;
    }
    let dst = Ipv4Addr::new(inner[16], inner[17], inner[18], inner[19]);
    if vips.contains(&dst) {
        Verdict::Inner(inner)
    } else {
        Verdict::NotOurs
    }
}

/// An IPv6-in-IPv6 packet as a raw IPv6 socket for next header 41 delivers
/// it: the payload after the outer header and its extension headers, which
/// is the whole inner IPv6 packet. The inner payload length must fit; bytes
/// after it are cut off; a jumbogram (payload length 0) is refused, as the
/// director never sends one.
fn decap6<'a>(p: &'a [u8], vips: &[Ipv6Addr]) -> Verdict<'a> {
    if p.len() < 40 || p[0] >> 4 != 6 {
        return Verdict::Malformed;
    }
    let plen = u16::from_be_bytes([p[4], p[5]]) as usize;
    if plen == 0 || 40 + plen > p.len() {
        return Verdict::Malformed;
    }
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&p[24..40]);
    if vips.contains(&Ipv6Addr::from(dst)) {
        Verdict::Inner(&p[..40 + plen])
    } else {
        Verdict::NotOurs
    }
}

/// Packets of one family: decapsulated, not for us, malformed or not written.
#[derive(Default)]
struct Counts {
    ok: u64,
    ignored: u64,
    bad: u64,
}

/// Reads `sock` until `stop`, handing each packet to `decap` and its inner
/// packet to `tun`.
fn pump(
    sock: Socket,
    mut tun: File,
    tun_name: &str,
    stop: &AtomicBool,
    decap: impl for<'a> Fn(&'a [u8]) -> Verdict<'a>,
) -> Result<Counts> {
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut c = Counts::default();
    let mut buf = vec![0u8; 65536];
    let mut s = &sock;
    while !stop.load(Ordering::Relaxed) {
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(e).context("reading the raw socket"),
        };
        match decap(&buf[..n]) {
            // A TUN write takes one whole packet or fails; it is never partial.
            Verdict::Inner(inner) => match tun.write_all(inner) {
                Ok(()) => c.ok += 1,
                Err(e) => {
                    c.bad += 1;
                    log::warn!("writing to {tun_name}: {e}");
                }
            },
            Verdict::NotOurs => c.ignored += 1,
            Verdict::Malformed => c.bad += 1,
        }
    }
    Ok(c)
}

fn run(args: Args) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for v in &args.vips {
        match v {
            IpAddr::V4(a) => v4.push(*a),
            IpAddr::V6(a) => v6.push(*a),
        }
    }
    let tun =
        ulvs::io::sys::open_tun(&args.tun).with_context(|| format!("creating TUN device {}", args.tun))?;
    // Both sockets first: a failure leaves nothing half started.
    let sock4 = match v4.is_empty() {
        true => None,
        false => Some(
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(4)))
                .context("raw IPPROTO_IPIP socket")?,
        ),
    };
    let sock6 = match v6.is_empty() {
        true => None,
        false => Some(
            Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(41)))
                .context("raw IPv6 socket for next header 41 (IPv6-in-IPv6)")?,
        ),
    };
    log::info!(
        "decapsulating IP-in-IP for {v4:?} and IPv6-in-IPv6 for {v6:?} into {}",
        args.tun
    );
    // One thread per family: each blocks on its own socket, both write whole
    // packets to the same TUN device.
    let mut threads = Vec::new();
    if let Some(sock) = sock4 {
        let (tun, stop, name) = (tun.try_clone()?, stop.clone(), args.tun.clone());
        threads.push((
            "IP-in-IP",
            std::thread::spawn(move || pump(sock, tun, &name, &stop, |p| decap4(p, &v4))),
        ));
    }
    if let Some(sock) = sock6 {
        let (tun, stop, name) = (tun.try_clone()?, stop.clone(), args.tun.clone());
        threads.push((
            "IPv6-in-IPv6",
            std::thread::spawn(move || pump(sock, tun, &name, &stop, |p| decap6(p, &v6))),
        ));
    }
    let mut failed = None;
    for (what, t) in threads {
        match t.join() {
            Ok(Ok(c)) => log::info!(
                "stopping: {what}: {} packets decapsulated, {} not for our VIPs, {} malformed or failed",
                c.ok,
                c.ignored,
                c.bad
            ),
            Ok(Err(e)) => {
                // the other family stops too, then the error is reported
                stop.store(true, Ordering::Relaxed);
                failed.get_or_insert(e.context(what));
            }
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                failed.get_or_insert(anyhow::anyhow!("{what} thread panicked"));
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);

    /// An inner IPv6 TCP segment client -> dst:80, built by etherparse.
    fn inner6(dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
        let client = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
        let b = PacketBuilder::ipv6(client.octets(), dst.octets(), 64).tcp(40000, 80, 1, 1000);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    fn inner4(dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ipv4([198, 18, 1, 2], dst.octets(), 64).udp(40000, 53);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    /// The outer IPv4 header of an IP-in-IP packet (as a raw socket hands it
    /// over) in front of `inner`, by etherparse.
    fn outer4(inner: &[u8]) -> Vec<u8> {
        let mut h = etherparse::Ipv4Header::new(
            inner.len() as u16,
            64,
            etherparse::IpNumber::IPV4,
            [198, 18, 0, 2],
            [198, 18, 0, 11],
        )
        .unwrap();
        h.header_checksum = h.calc_header_checksum();
        let mut v = h.to_bytes().to_vec();
        v.extend_from_slice(inner);
        v
    }

    #[test]
    fn decap6_hands_over_the_inner_packet_parsed_back_by_etherparse() {
        let inner = inner6(VIP6, b"GET / HTTP/1.1\r\n\r\n");
        let Verdict::Inner(out) = decap6(&inner, &[VIP6]) else {
            panic!("not decapsulated")
        };
        assert_eq!(out, &inner[..]);
        let p = etherparse::SlicedPacket::from_ip(out).unwrap();
        match p.net.unwrap() {
            etherparse::NetSlice::Ipv6(ip) => assert_eq!(ip.header().destination_addr(), VIP6),
            _ => panic!("not IPv6"),
        }
    }

    #[test]
    fn decap6_cuts_trailing_bytes_after_the_inner_payload_length() {
        let inner = inner6(VIP6, b"x");
        let mut p = inner.clone();
        p.extend_from_slice(&[0xee; 7]);
        assert_eq!(decap6(&p, &[VIP6]), Verdict::Inner(&inner[..]));
    }

    #[test]
    fn decap6_ignores_other_destinations() {
        let other = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2);
        assert_eq!(decap6(&inner6(other, b"x"), &[VIP6]), Verdict::NotOurs);
    }

    #[test]
    fn decap6_refuses_malformed_inner_packets() {
        let good = inner6(VIP6, b"hello");
        // truncated: shorter than a header, and shorter than its payload length
        assert_eq!(decap6(&good[..39], &[VIP6]), Verdict::Malformed);
        assert_eq!(decap6(&good[..good.len() - 1], &[VIP6]), Verdict::Malformed);
        // an IPv4 packet inside next header 41
        assert_eq!(decap6(&inner4(VIP4, b"hello"), &[VIP6]), Verdict::Malformed);
        // a jumbogram's payload length 0
        let mut jumbo = good.clone();
        jumbo[4] = 0;
        jumbo[5] = 0;
        assert_eq!(decap6(&jumbo, &[VIP6]), Verdict::Malformed);
    }

    #[test]
    fn decap4_hands_over_the_inner_packet() {
        let inner = inner4(VIP4, b"query");
        let mut p = outer4(&inner);
        assert_eq!(decap4(&p, &[VIP4]), Verdict::Inner(&inner[..]));
        p.extend_from_slice(&[0; 5]); // bytes past the outer total length
        assert_eq!(decap4(&p, &[VIP4]), Verdict::Inner(&inner[..]));
    }

    #[test]
    fn decap4_ignores_other_destinations_and_refuses_malformed() {
        let inner = inner4(Ipv4Addr::new(198, 18, 100, 9), b"query");
        assert_eq!(decap4(&outer4(&inner), &[VIP4]), Verdict::NotOurs);
        let good = outer4(&inner4(VIP4, b"query"));
        assert_eq!(decap4(&good[..good.len() - 1], &[VIP4]), Verdict::Malformed);
        let mut not_ipip = good.clone();
        not_ipip[9] = 17;
        assert_eq!(decap4(&not_ipip, &[VIP4]), Verdict::Malformed);
        // IPv6 inside protocol 4
        let mut p = outer4(&inner6(VIP6, b"x"));
        assert_eq!(decap4(&p, &[VIP4]), Verdict::Malformed);
        p.truncate(10);
        assert_eq!(decap4(&p, &[VIP4]), Verdict::Malformed);
    }
}
