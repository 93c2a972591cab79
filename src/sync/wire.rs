//! The flow-sync datagram, version 1: pure encoding and decoding (slow path,
//! no I/O, no keys). The layout is described field by field in the module
//! docs of [`crate::sync`] and in `docs/sync-protocol.md`; the offsets below
//! are the single source of both.
//!
//! Untrusted bytes enter only through [`Datagram::new_checked`], which checks
//! the whole datagram (header, length, every record) before any accessor can
//! be used, so a datagram is either wholly well-formed or rejected whole: a
//! receiver never applies half of one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::dataplane::synclink::NoteKind;
use crate::fwd::flow::FlowState;

/// `"ULVS"`: the first four bytes of every datagram.
pub const MAGIC: [u8; 4] = *b"ULVS";
/// The version this code writes and the only one it reads.
pub const VERSION: u8 = 1;
/// Bytes of the header.
pub const HEADER_LEN: usize = 32;
/// Bytes of one flow record.
pub const RECORD_LEN: usize = 68;
/// Bytes of the HMAC-SHA256 trailer (present when the MAC flag is set).
pub const MAC_LEN: usize = 32;
/// Records per datagram at most: 32 + 19 × 68 + 32 = 1356 bytes, which fits
/// a 1500-byte MTU with IPv4 or IPv6 and UDP headers (and a tunnel or two)
/// without fragmentation.
pub const MAX_RECORDS: usize = 19;
/// The largest datagram this version produces or accepts.
pub const MAX_DATAGRAM: usize = HEADER_LEN + MAX_RECORDS * RECORD_LEN + MAC_LEN;
/// Header flag: a 32-byte HMAC-SHA256 follows the records.
pub const FLAG_MAC: u8 = 0x01;

/// Header offsets (all integers big-endian).
mod field {
    use std::ops::Range;
    pub const MAGIC: Range<usize> = 0..4;
    pub const VERSION: usize = 4;
    pub const TYPE: usize = 5;
    pub const FLAGS: usize = 6;
    pub const RESERVED1: usize = 7;
    pub const SENDER: Range<usize> = 8..12;
    pub const COUNT: Range<usize> = 12..14;
    pub const RESERVED2: Range<usize> = 14..16;
    pub const BOOT: Range<usize> = 16..24;
    pub const SEQ: Range<usize> = 24..32;
}

/// Record offsets, relative to the record's first byte.
mod rec {
    use std::ops::Range;
    pub const FAMILY: usize = 0;
    pub const PROTO: usize = 1;
    pub const STATE: usize = 2;
    pub const KIND: usize = 3;
    pub const CLIENT: Range<usize> = 4..20;
    pub const VIP: Range<usize> = 20..36;
    pub const SERVER: Range<usize> = 36..52;
    pub const CLIENT_PORT: Range<usize> = 52..54;
    pub const VIP_PORT: Range<usize> = 54..56;
    pub const SERVER_PORT: Range<usize> = 56..58;
    pub const IDLE_MS: Range<usize> = 58..62;
    pub const CREATOR: Range<usize> = 62..66;
    pub const RESERVED: Range<usize> = 66..68;
}

/// Address family byte of a record.
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// What a datagram says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgType {
    /// 1: flow records.
    Flows,
    /// 2: "send me all your flows" (no records).
    BulkRequest,
    /// 3: "that was all of them" — the end of a bulk transfer (no records).
    BulkDone,
    /// Any other value (rejected by [`Datagram::new_checked`]).
    Unknown(u8),
}

impl From<u8> for MsgType {
    fn from(v: u8) -> Self {
        match v {
            1 => MsgType::Flows,
            2 => MsgType::BulkRequest,
            3 => MsgType::BulkDone,
            x => MsgType::Unknown(x),
        }
    }
}

impl From<MsgType> for u8 {
    fn from(t: MsgType) -> u8 {
        match t {
            MsgType::Flows => 1,
            MsgType::BulkRequest => 2,
            MsgType::BulkDone => 3,
            MsgType::Unknown(x) => x,
        }
    }
}

/// Why a datagram is not a well-formed version-1 datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Another version (counted as `version`, not `malformed`, so a mixed
    /// pair during an upgrade is told apart from garbage).
    #[error("version {0}, this director speaks version {VERSION}")]
    Version(u8),
    /// Anything else; the text names the first problem found.
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

/// The header fields a sender chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub msg: MsgType,
    /// The sender's id (see the module docs of [`crate::sync`]).
    pub sender: u32,
    /// The sender's boot stamp: unix nanoseconds when its sync thread started.
    pub boot: u64,
    /// Per-boot sequence number, +1 for every datagram sent to any peer.
    pub seq: u64,
}

/// One flow as it travels between directors: addresses, not backend ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// IP protocol number (6 TCP, 17 UDP, ...).
    pub proto: u8,
    /// Never [`FlowState::Empty`].
    pub state: FlowState,
    pub kind: NoteKind,
    /// Client, VIP and server are of one family (the record's family byte).
    pub client: IpAddr,
    pub client_port: u16,
    pub vip: IpAddr,
    /// The flow's destination port (the service port, or any port of an
    /// all-ports service).
    pub vip_port: u16,
    pub server: IpAddr,
    /// The server's configured port (NAT `IP:PORT`), 0 when it has none.
    pub server_port: u16,
    /// Milliseconds since the flow's last packet on the sender.
    pub idle_ms: u32,
    /// Sender id of the director that created the flow.
    pub creator: u32,
}

fn state_to_wire(s: FlowState) -> u8 {
    match s {
        FlowState::Empty => 0,
        FlowState::TcpSyn => 1,
        FlowState::TcpEstablished => 2,
        FlowState::TcpClosing => 3,
        FlowState::Udp => 4,
        FlowState::Other => 5,
    }
}

fn state_from_wire(v: u8) -> Option<FlowState> {
    Some(match v {
        1 => FlowState::TcpSyn,
        2 => FlowState::TcpEstablished,
        3 => FlowState::TcpClosing,
        4 => FlowState::Udp,
        5 => FlowState::Other,
        _ => return None,
    })
}

fn kind_to_wire(k: NoteKind) -> u8 {
    match k {
        NoteKind::New => 0,
        NoteKind::Change => 1,
        NoteKind::Copy => 2,
    }
}

fn kind_from_wire(v: u8) -> Option<NoteKind> {
    Some(match v {
        0 => NoteKind::New,
        1 => NoteKind::Change,
        2 => NoteKind::Copy,
        _ => return None,
    })
}

fn be16(b: &[u8], r: std::ops::Range<usize>) -> u16 {
    let mut a = [0; 2];
    a.copy_from_slice(&b[r]);
    u16::from_be_bytes(a)
}

fn be32(b: &[u8], r: std::ops::Range<usize>) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[r]);
    u32::from_be_bytes(a)
}

fn be64(b: &[u8], r: std::ops::Range<usize>) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[r]);
    u64::from_be_bytes(a)
}

fn slot(family: u8, b: &[u8]) -> Option<IpAddr> {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    match family {
        // IPv4 sits in the slot's first four bytes; the other twelve are
        // zero so that one address has exactly one encoding.
        FAMILY_V4 if a[4..].iter().all(|&x| x == 0) => {
            Some(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])))
        }
        FAMILY_V6 => Some(IpAddr::V6(Ipv6Addr::from(a))),
        _ => None,
    }
}

fn put_slot(b: &mut [u8], a: IpAddr) {
    b.fill(0);
    match a {
        IpAddr::V4(v4) => b[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => b.copy_from_slice(&v6.octets()),
    }
}

fn family_of(a: IpAddr) -> u8 {
    match a {
        IpAddr::V4(_) => FAMILY_V4,
        IpAddr::V6(_) => FAMILY_V6,
    }
}

/// Check one record; `None` when any field is out of its range.
fn decode_record(b: &[u8]) -> Result<Record, &'static str> {
    let family = b[rec::FAMILY];
    if family != FAMILY_V4 && family != FAMILY_V6 {
        return Err("record family is neither 4 nor 6");
    }
    let state = state_from_wire(b[rec::STATE]).ok_or("record state out of 1..=5")?;
    let kind = kind_from_wire(b[rec::KIND]).ok_or("record kind out of 0..=2")?;
    if b[rec::RESERVED].iter().any(|&x| x != 0) {
        return Err("record reserved bytes not zero");
    }
    let bad_addr = "IPv4 address slot with nonzero bytes 4..16";
    Ok(Record {
        proto: b[rec::PROTO],
        state,
        kind,
        client: slot(family, &b[rec::CLIENT]).ok_or(bad_addr)?,
        client_port: be16(b, rec::CLIENT_PORT),
        vip: slot(family, &b[rec::VIP]).ok_or(bad_addr)?,
        vip_port: be16(b, rec::VIP_PORT),
        server: slot(family, &b[rec::SERVER]).ok_or(bad_addr)?,
        server_port: be16(b, rec::SERVER_PORT),
        idle_ms: be32(b, rec::IDLE_MS),
        creator: be32(b, rec::CREATOR),
    })
}

/// A checked view of a received datagram.
#[derive(Debug)]
pub struct Datagram<'a> {
    buf: &'a [u8],
}

impl<'a> Datagram<'a> {
    /// Check everything that needs no key: length, magic, version, type,
    /// flags, reserved bytes, record count against the length, and every
    /// record's fields.
    ///
    /// # Errors
    /// [`WireError::Version`] for another version (when magic and length
    /// of the header are right), else [`WireError::Malformed`].
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        if buf.len() < HEADER_LEN {
            return Err(WireError::Malformed("shorter than the 32-byte header"));
        }
        if buf[field::MAGIC] != MAGIC {
            return Err(WireError::Malformed("magic is not \"ULVS\""));
        }
        if buf[field::VERSION] != VERSION {
            return Err(WireError::Version(buf[field::VERSION]));
        }
        let msg = MsgType::from(buf[field::TYPE]);
        let flags = buf[field::FLAGS];
        if flags & !FLAG_MAC != 0 {
            return Err(WireError::Malformed("unknown flag bits"));
        }
        if buf[field::RESERVED1] != 0 || buf[field::RESERVED2].iter().any(|&x| x != 0) {
            return Err(WireError::Malformed("header reserved bytes not zero"));
        }
        let count = be16(buf, field::COUNT) as usize;
        match msg {
            MsgType::Unknown(_) => return Err(WireError::Malformed("unknown message type")),
            MsgType::Flows if count == 0 || count > MAX_RECORDS => {
                return Err(WireError::Malformed(
                    "flows message with 0 or more than 19 records",
                ))
            }
            MsgType::BulkRequest | MsgType::BulkDone if count != 0 => {
                return Err(WireError::Malformed("bulk message with records"))
            }
            _ => {}
        }
        let mac = if flags & FLAG_MAC != 0 { MAC_LEN } else { 0 };
        if buf.len() != HEADER_LEN + count * RECORD_LEN + mac {
            return Err(WireError::Malformed("length does not match the record count"));
        }
        for i in 0..count {
            let at = HEADER_LEN + i * RECORD_LEN;
            decode_record(&buf[at..at + RECORD_LEN]).map_err(WireError::Malformed)?;
        }
        Ok(Datagram { buf })
    }

    pub fn header(&self) -> Header {
        Header {
            msg: MsgType::from(self.buf[field::TYPE]),
            sender: be32(self.buf, field::SENDER),
            boot: be64(self.buf, field::BOOT),
            seq: be64(self.buf, field::SEQ),
        }
    }

    /// Number of records.
    pub fn count(&self) -> usize {
        be16(self.buf, field::COUNT) as usize
    }

    /// The trailing MAC, if the flag says there is one.
    pub fn mac(&self) -> Option<&'a [u8]> {
        (self.buf[field::FLAGS] & FLAG_MAC != 0).then(|| &self.buf[self.buf.len() - MAC_LEN..])
    }

    /// Everything the MAC covers: the header and the records.
    pub fn signed(&self) -> &'a [u8] {
        let end = HEADER_LEN + self.count() * RECORD_LEN;
        &self.buf[..end]
    }

    /// The records (all checked by `new_checked`).
    pub fn records(&self) -> impl Iterator<Item = Record> + 'a {
        let buf = self.buf;
        (0..self.count()).filter_map(move |i| {
            let at = HEADER_LEN + i * RECORD_LEN;
            decode_record(&buf[at..at + RECORD_LEN]).ok()
        })
    }
}

/// Why a record cannot be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("client, VIP and server are not all of one address family")]
    MixedFamilies,
    #[error("a flow in state Empty is not a flow")]
    EmptyState,
}

/// Write one record into `b` (exactly [`RECORD_LEN`] bytes).
///
/// # Errors
/// Mixed address families or an empty state.
///
/// # Panics
/// When `b` is not [`RECORD_LEN`] bytes long.
pub fn put_record(b: &mut [u8], r: &Record) -> Result<(), EncodeError> {
    assert_eq!(b.len(), RECORD_LEN);
    let family = family_of(r.client);
    if family_of(r.vip) != family || family_of(r.server) != family {
        return Err(EncodeError::MixedFamilies);
    }
    if r.state == FlowState::Empty {
        return Err(EncodeError::EmptyState);
    }
    b[rec::FAMILY] = family;
    b[rec::PROTO] = r.proto;
    b[rec::STATE] = state_to_wire(r.state);
    b[rec::KIND] = kind_to_wire(r.kind);
    put_slot(&mut b[rec::CLIENT], r.client);
    put_slot(&mut b[rec::VIP], r.vip);
    put_slot(&mut b[rec::SERVER], r.server);
    b[rec::CLIENT_PORT].copy_from_slice(&r.client_port.to_be_bytes());
    b[rec::VIP_PORT].copy_from_slice(&r.vip_port.to_be_bytes());
    b[rec::SERVER_PORT].copy_from_slice(&r.server_port.to_be_bytes());
    b[rec::IDLE_MS].copy_from_slice(&r.idle_ms.to_be_bytes());
    b[rec::CREATOR].copy_from_slice(&r.creator.to_be_bytes());
    b[rec::RESERVED].fill(0);
    Ok(())
}

/// Builds one datagram at a time in a reused buffer: [`Builder::start`],
/// [`Builder::push`] records until it says full, then [`Builder::finish`]
/// with the MAC function.
#[derive(Debug)]
pub struct Builder {
    buf: Vec<u8>,
    count: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    pub fn new() -> Self {
        Builder {
            buf: Vec::with_capacity(MAX_DATAGRAM),
            count: 0,
        }
    }

    /// Begin a datagram (dropping any unfinished one).
    pub fn start(&mut self, h: &Header, mac: bool) {
        self.buf.clear();
        self.buf.resize(HEADER_LEN, 0);
        let b = &mut self.buf;
        b[field::MAGIC].copy_from_slice(&MAGIC);
        b[field::VERSION] = VERSION;
        b[field::TYPE] = h.msg.into();
        b[field::FLAGS] = if mac { FLAG_MAC } else { 0 };
        b[field::SENDER].copy_from_slice(&h.sender.to_be_bytes());
        b[field::BOOT].copy_from_slice(&h.boot.to_be_bytes());
        b[field::SEQ].copy_from_slice(&h.seq.to_be_bytes());
        self.count = 0;
    }

    /// Records in the datagram so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// True when no further record fits.
    pub fn is_full(&self) -> bool {
        self.count >= MAX_RECORDS
    }

    /// Append a record.
    ///
    /// # Errors
    /// As [`put_record`]; the datagram is unchanged then.
    ///
    /// # Panics
    /// When the datagram is full.
    pub fn push(&mut self, r: &Record) -> Result<(), EncodeError> {
        assert!(!self.is_full(), "datagram full");
        let at = self.buf.len();
        self.buf.resize(at + RECORD_LEN, 0);
        if let Err(e) = put_record(&mut self.buf[at..], r) {
            self.buf.truncate(at);
            return Err(e);
        }
        self.count += 1;
        Ok(())
    }

    /// Set the count and, when the datagram was started with `mac`, append
    /// `sign(header and records)`. Returns the bytes to send.
    pub fn finish(&mut self, sign: impl FnOnce(&[u8]) -> [u8; MAC_LEN]) -> &[u8] {
        self.buf[field::COUNT].copy_from_slice(&(self.count as u16).to_be_bytes());
        if self.buf[field::FLAGS] & FLAG_MAC != 0 {
            let m = sign(&self.buf);
            self.buf.extend_from_slice(&m);
        }
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec4() -> Record {
        Record {
            proto: 6,
            state: FlowState::TcpEstablished,
            kind: NoteKind::New,
            client: "198.18.1.10".parse().unwrap(),
            client_port: 40000,
            vip: "198.18.100.1".parse().unwrap(),
            vip_port: 80,
            server: "198.18.0.11".parse().unwrap(),
            server_port: 0,
            idle_ms: 1234,
            creator: 0xc612_0002,
        }
    }

    fn hdr() -> Header {
        Header {
            msg: MsgType::Flows,
            sender: 0xc612_0002,
            boot: 0x0102_0304_0506_0708,
            seq: 9,
        }
    }

    /// The exact bytes of one datagram, written out by hand from the
    /// documented layout: the doc and the code cannot drift apart silently.
    #[test]
    fn bytes_match_the_documented_layout() {
        let mut b = Builder::new();
        b.start(&hdr(), false);
        b.push(&rec4()).unwrap();
        let out = b.finish(|_| unreachable!()).to_vec();
        let mut want = vec![
            b'U', b'L', b'V', b'S', 1, 1, 0, 0, // magic, version, type, flags, reserved
            0xc6, 0x12, 0x00, 0x02, 0, 1, 0, 0, // sender, count, reserved
            1, 2, 3, 4, 5, 6, 7, 8, // boot
            0, 0, 0, 0, 0, 0, 0, 9, // seq
            4, 6, 2, 0, // family, proto, state, kind
        ];
        want.extend([198, 18, 1, 10]);
        want.extend([0; 12]);
        want.extend([198, 18, 100, 1]);
        want.extend([0; 12]);
        want.extend([198, 18, 0, 11]);
        want.extend([0; 12]);
        want.extend([0x9c, 0x40, 0, 80, 0, 0]); // ports 40000, 80, 0
        want.extend([0, 0, 0x04, 0xd2]); // idle 1234
        want.extend([0xc6, 0x12, 0x00, 0x02, 0, 0]); // creator, reserved
        assert_eq!(out, want);
        assert_eq!(out.len(), HEADER_LEN + RECORD_LEN);
    }

    #[test]
    fn mac_flag_appends_the_signature_over_header_and_records() {
        let mut b = Builder::new();
        b.start(&hdr(), true);
        b.push(&rec4()).unwrap();
        let mut covered = Vec::new();
        let out = b
            .finish(|s| {
                covered = s.to_vec();
                [0xab; MAC_LEN]
            })
            .to_vec();
        assert_eq!(covered.len(), HEADER_LEN + RECORD_LEN);
        assert_eq!(&out[..covered.len()], &covered[..]);
        assert_eq!(out[6], FLAG_MAC);
        let d = Datagram::new_checked(&out).unwrap();
        assert_eq!(d.mac(), Some(&[0xab; MAC_LEN][..]));
        assert_eq!(d.signed(), &covered[..]);
    }

    #[test]
    fn bulk_messages_have_no_records() {
        let mut b = Builder::new();
        for msg in [MsgType::BulkRequest, MsgType::BulkDone] {
            b.start(&Header { msg, ..hdr() }, false);
            let out = b.finish(|_| unreachable!()).to_vec();
            assert_eq!(out.len(), HEADER_LEN);
            let d = Datagram::new_checked(&out).unwrap();
            assert_eq!(d.header().msg, msg);
            assert_eq!(d.records().count(), 0);
        }
    }

    fn good() -> Vec<u8> {
        let mut b = Builder::new();
        b.start(&hdr(), false);
        b.push(&rec4()).unwrap();
        b.finish(|_| unreachable!()).to_vec()
    }

    #[test]
    fn each_malformation_is_rejected() {
        let m = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut d = good();
            f(&mut d);
            Datagram::new_checked(&d).unwrap_err()
        };
        assert!(matches!(m(&|d| d.truncate(31)), WireError::Malformed(_)));
        assert!(matches!(m(&|d| d[0] = b'X'), WireError::Malformed(_)));
        assert_eq!(m(&|d| d[4] = 2), WireError::Version(2));
        assert!(matches!(m(&|d| d[5] = 9), WireError::Malformed(_)));
        assert!(
            matches!(m(&|d| d[5] = 2), WireError::Malformed(_)),
            "bulk with records"
        );
        assert!(matches!(m(&|d| d[6] = 2), WireError::Malformed(_)));
        assert!(matches!(m(&|d| d[7] = 1), WireError::Malformed(_)));
        assert!(matches!(m(&|d| d[15] = 1), WireError::Malformed(_)));
        assert!(
            matches!(m(&|d| d[13] = 2), WireError::Malformed(_)),
            "count > records"
        );
        assert!(
            matches!(m(&|d| d[13] = 0), WireError::Malformed(_)),
            "flows with 0"
        );
        assert!(matches!(m(&|d| d.push(0)), WireError::Malformed(_)));
        assert!(
            matches!(m(&|d| d[6] = FLAG_MAC), WireError::Malformed(_)),
            "flag without MAC"
        );
        assert!(matches!(m(&|d| d[32] = 5), WireError::Malformed(_)), "family");
        assert!(
            matches!(m(&|d| d[34] = 0), WireError::Malformed(_)),
            "state Empty"
        );
        assert!(matches!(m(&|d| d[34] = 6), WireError::Malformed(_)), "state");
        assert!(matches!(m(&|d| d[35] = 3), WireError::Malformed(_)), "kind");
        assert!(
            matches!(m(&|d| d[32 + 10] = 1), WireError::Malformed(_)),
            "v4 slot tail"
        );
        assert!(
            matches!(m(&|d| d[32 + 67] = 1), WireError::Malformed(_)),
            "reserved"
        );
        assert!(Datagram::new_checked(&good()).is_ok());
    }

    #[test]
    fn encode_refuses_what_it_could_not_decode() {
        let mut r = rec4();
        r.server = "2001:db8::1".parse().unwrap();
        let mut b = Builder::new();
        b.start(&hdr(), false);
        assert_eq!(b.push(&r), Err(EncodeError::MixedFamilies));
        r = rec4();
        r.state = FlowState::Empty;
        assert_eq!(b.push(&r), Err(EncodeError::EmptyState));
        assert_eq!(b.count(), 0);
    }

    fn arb_addr(v6: bool) -> BoxedStrategy<IpAddr> {
        if v6 {
            any::<[u8; 16]>().prop_map(|a| IpAddr::V6(a.into())).boxed()
        } else {
            any::<[u8; 4]>().prop_map(|a| IpAddr::V4(a.into())).boxed()
        }
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        any::<bool>().prop_flat_map(|v6| {
            (
                (arb_addr(v6), arb_addr(v6), arb_addr(v6)),
                any::<(u8, u16, u16, u16, u32, u32)>(),
                1u8..=5,
                0u8..=2,
            )
                .prop_map(|((c, v, s), (proto, cp, vp, sp, idle, creator), st, k)| Record {
                    proto,
                    state: state_from_wire(st).unwrap(),
                    kind: kind_from_wire(k).unwrap(),
                    client: c,
                    client_port: cp,
                    vip: v,
                    vip_port: vp,
                    server: s,
                    server_port: sp,
                    idle_ms: idle,
                    creator,
                })
        })
    }

    proptest! {
        #[test]
        fn round_trip(
            recs in proptest::collection::vec(arb_record(), 1..=MAX_RECORDS),
            sender: u32, boot: u64, seq: u64, mac: bool,
        ) {
            let h = Header { msg: MsgType::Flows, sender, boot, seq };
            let mut b = Builder::new();
            b.start(&h, mac);
            for r in &recs {
                b.push(r).unwrap();
            }
            prop_assert!(b.is_full() == (recs.len() == MAX_RECORDS));
            let out = b.finish(|_| [7; MAC_LEN]).to_vec();
            prop_assert!(out.len() <= MAX_DATAGRAM);
            let d = Datagram::new_checked(&out).unwrap();
            prop_assert_eq!(d.header(), h);
            prop_assert_eq!(d.mac().is_some(), mac);
            prop_assert_eq!(d.records().collect::<Vec<_>>(), recs);
        }

        /// Any bytes: either rejected or every accessor works.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
            if let Ok(d) = Datagram::new_checked(&bytes) {
                let _ = d.header();
                let _ = d.mac();
                prop_assert_eq!(d.records().count(), d.count());
            }
        }

        /// Flipping any byte of a good datagram either leaves it valid (a
        /// free field) or yields an error; decoding never panics.
        #[test]
        fn flips_never_panic(at in 0usize..(HEADER_LEN + RECORD_LEN), x in 1u8..=255) {
            let mut d = good();
            d[at] ^= x;
            if let Ok(v) = Datagram::new_checked(&d) {
                prop_assert_eq!(v.records().count(), 1);
            }
        }
    }
}
