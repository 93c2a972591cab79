//! Classification: frame bytes -> the flow key and service of a VIP packet, or
//! the named reason it is not forwarded (fast path). Every malformed class has
//! its own reason so tests can assert exactly which counter moved.

use crate::fwd::flow::FlowKey;
use crate::fwd::table::FwdTable;
use crate::io::{pkttype, RxMeta};
use crate::wire::ethernet::{self, EtherType};
use crate::wire::ipv4::{self, Ipv4Error, Protocol};
use crate::wire::{tcp, udp, WireError};

/// Why a frame was not forwarded. The discriminant indexes counter arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Reason {
    /// Too short for Ethernet + a minimal IPv4 header.
    Runt,
    /// EtherType IPv4 but the version nibble is not 4.
    BadVersion,
    /// IHL below 5.
    BadIhl,
    /// Total length below the header or beyond the frame.
    BadTotalLength,
    /// IPv4 options on a VIP packet (not supported, like Katran).
    IpOptions,
    /// A fragment of a VIP datagram.
    Fragment,
    /// The TCP/UDP header is cut short.
    TruncatedL4,
    /// An 802.1Q/802.1ad tagged frame (in the bytes or stripped by the NIC).
    Vlan,
    /// The ring slot cut the frame short.
    Oversize,
    /// Not IPv4 (ARP and others: the kernel and the slow path handle those).
    NotIpv4,
    /// Not addressed to the director's MAC.
    NotForUs,
    /// IPv4, but not to a VIP.
    NotVip,
    /// To a VIP, but no service matches the protocol and port.
    NoService,
    /// The service has no server able to take a new flow.
    NoServer,
    /// The chosen server's MAC is not resolved.
    ServerMacUnknown,
    /// The send failed.
    TxError,
}

impl Reason {
    pub const COUNT: usize = 16;
    /// Every reason, in discriminant order.
    pub const ALL: [Reason; Reason::COUNT] = [
        Reason::Runt,
        Reason::BadVersion,
        Reason::BadIhl,
        Reason::BadTotalLength,
        Reason::IpOptions,
        Reason::Fragment,
        Reason::TruncatedL4,
        Reason::Vlan,
        Reason::Oversize,
        Reason::NotIpv4,
        Reason::NotForUs,
        Reason::NotVip,
        Reason::NoService,
        Reason::NoServer,
        Reason::ServerMacUnknown,
        Reason::TxError,
    ];

    /// The counter name used in `ulvsadm stats` and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Runt => "runt",
            Reason::BadVersion => "bad_version",
            Reason::BadIhl => "bad_ihl",
            Reason::BadTotalLength => "bad_total_length",
            Reason::IpOptions => "ip_options",
            Reason::Fragment => "fragment",
            Reason::TruncatedL4 => "truncated_l4",
            Reason::Vlan => "vlan",
            Reason::Oversize => "oversize",
            Reason::NotIpv4 => "not_ipv4",
            Reason::NotForUs => "not_for_us",
            Reason::NotVip => "not_vip",
            Reason::NoService => "no_service",
            Reason::NoServer => "no_server",
            Reason::ServerMacUnknown => "server_mac_unknown",
            Reason::TxError => "tx_error",
        }
    }

    /// True for frames that are broken, as opposed to merely not ours.
    pub fn is_malformed(self) -> bool {
        matches!(
            self,
            Reason::Runt
                | Reason::BadVersion
                | Reason::BadIhl
                | Reason::BadTotalLength
                | Reason::IpOptions
                | Reason::Fragment
                | Reason::TruncatedL4
                | Reason::Vlan
                | Reason::Oversize
        )
    }
}

/// A VIP packet, ready for the flow table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    pub key: FlowKey,
    /// Index into `FwdTable::services`.
    pub service: usize,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
    /// Offset of the transport header in the frame.
    pub l4_offset: usize,
}

/// Classify one received frame against the published table.
///
/// # Errors
/// The [`Reason`] the frame is not forwarded.
#[inline]
pub fn classify(frame: &[u8], meta: &RxMeta, table: &FwdTable) -> Result<Classified, Reason> {
    if meta.vlan_tci.is_some() {
        return Err(Reason::Vlan);
    }
    if meta.truncated {
        return Err(Reason::Oversize);
    }
    let eth = ethernet::Frame::new_checked(frame).map_err(|_| Reason::Runt)?;
    if meta.pkttype != pkttype::HOST {
        return Err(Reason::NotForUs);
    }
    match eth.ethertype() {
        EtherType::Ipv4 => {}
        EtherType::Vlan => return Err(Reason::Vlan),
        _ => return Err(Reason::NotIpv4),
    }
    let ip = ipv4::Packet::new_checked(eth.payload()).map_err(|e| match e {
        Ipv4Error::Truncated => Reason::Runt,
        Ipv4Error::BadVersion => Reason::BadVersion,
        Ipv4Error::BadIhl => Reason::BadIhl,
        Ipv4Error::BadTotalLength => Reason::BadTotalLength,
    })?;
    let dst = ip.dst();
    if !table.is_vip(dst) {
        return Err(Reason::NotVip);
    }
    if ip.header_len() != ipv4::MIN_HEADER_LEN {
        return Err(Reason::IpOptions);
    }
    if ip.is_fragment() {
        return Err(Reason::Fragment);
    }
    let proto = ip.protocol();
    let l4 = ip.payload();
    let (sport, dport, flags) = match proto {
        Protocol::Tcp => {
            let t = tcp::Segment::new_checked(l4).map_err(|e| match e {
                WireError::Truncated | WireError::Malformed => Reason::TruncatedL4,
            })?;
            (t.src_port(), t.dst_port(), t.flags())
        }
        Protocol::Udp => {
            let u = udp::Datagram::new_checked(l4).map_err(|_| Reason::TruncatedL4)?;
            (u.src_port(), u.dst_port(), 0)
        }
        _ => return Err(Reason::NoService),
    };
    let proto_num: u8 = proto.into();
    let service = table.find_service(dst, proto_num, dport).ok_or(Reason::NoService)?;
    Ok(Classified {
        key: FlowKey {
            src: ip.src(),
            dst,
            sport,
            dport,
            proto: proto_num,
        },
        service,
        tcp_flags: flags,
        l4_offset: ethernet::HEADER_LEN + ip.header_len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fwd::table::{Mode, ServiceFwd};

    pub(crate) fn table() -> FwdTable {
        let mut t = FwdTable::empty([2, 0, 0, 0, 0, 2]);
        t.services.push(ServiceFwd {
            vip: 0xc612_6401,
            port: 80,
            proto: 6,
            mode: Mode::Dr,
            maglev: vec![0; 7],
            members: vec![0],
        });
        t.sort();
        t
    }

    fn syn() -> Vec<u8> {
        crate::dataplane::rewrite::tests::tcp_frame(0xc612_0102, 0xc612_6401, 40000, 80, tcp::SYN)
    }

    #[test]
    fn vip_tcp_syn() {
        let c = classify(&syn(), &RxMeta::default(), &table()).unwrap();
        assert_eq!(c.key.sport, 40000);
        assert_eq!(c.key.dport, 80);
        assert_eq!(c.key.proto, 6);
        assert_eq!(c.tcp_flags, tcp::SYN);
        assert_eq!(c.l4_offset, 34);
    }

    #[test]
    fn each_reason() {
        let t = table();
        let m = RxMeta::default();
        let f = syn();
        let err = |b: &[u8], m: &RxMeta| classify(b, m, &t).unwrap_err();
        assert_eq!(err(&f[..10], &m), Reason::Runt);
        assert_eq!(err(&f[..30], &m), Reason::Runt);
        let mut b = f.clone();
        b[14] = 0x65;
        assert_eq!(err(&b, &m), Reason::BadVersion);
        b[14] = 0x44;
        assert_eq!(err(&b, &m), Reason::BadIhl);
        let mut b = f.clone();
        b[16..18].copy_from_slice(&1000u16.to_be_bytes());
        assert_eq!(err(&b, &m), Reason::BadTotalLength);
        let mut b = f.clone();
        b[14] = 0x46;
        assert_eq!(err(&b, &m), Reason::IpOptions);
        let mut b = f.clone();
        b[20] = 0x20;
        assert_eq!(err(&b, &m), Reason::Fragment);
        let mut b = f.clone();
        b[16..18].copy_from_slice(&28u16.to_be_bytes());
        assert_eq!(err(&b, &m), Reason::TruncatedL4);
        let mut b = f.clone();
        b[12..14].copy_from_slice(&[0x81, 0]);
        assert_eq!(err(&b, &m), Reason::Vlan);
        let vm = RxMeta {
            vlan_tci: Some(10),
            ..m
        };
        assert_eq!(err(&f, &vm), Reason::Vlan);
        let mut b = f.clone();
        b[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(err(&b, &m), Reason::NotIpv4);
        let om = RxMeta {
            pkttype: pkttype::OTHERHOST,
            ..m
        };
        assert_eq!(err(&f, &om), Reason::NotForUs);
        let mut b = f.clone();
        b[33] = 2;
        assert_eq!(err(&b, &m), Reason::NotVip);
        let mut b = f.clone();
        b[36..38].copy_from_slice(&443u16.to_be_bytes());
        assert_eq!(err(&b, &m), Reason::NoService);
    }

    #[test]
    fn names_are_unique_and_ordered() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let mut names: Vec<_> = Reason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Reason::COUNT);
    }
}
