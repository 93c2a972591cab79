//! The kernel drop rule (slow path). The director host must never answer VIP
//! traffic itself: with forwarding off it would send ICMP errors, with the VIP
//! local it would send RSTs. A netdev-family ingress chain drops frames to the
//! VIPs; AF_PACKET taps (our workers, bound to ETH_P_ALL) see frames before
//! that hook, so the director still gets them.
//!
//! IPv6 has its own table ([`table_name6`], [`ruleset6`]), replaced on its own
//! whenever the IPv6 VIPs, NAT servers or the director's IPv6 addresses
//! change, so the IPv4 rule is never rewritten for an IPv6 change. Its first
//! rule accepts Neighbor Solicitations and Advertisements before any drop:
//! the director's ND socket is bound to EtherType IPv6, and a socket bound
//! to one EtherType sees a frame only after this hook (only `ETH_P_ALL`
//! taps come before it), so a unicast solicitation to a VIP (a router
//! confirming reachability) or a NAT server's answer to the director's
//! solicitation would otherwise never reach it.

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

/// Errors from running `nft`.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run nft (install the nftables package): {0}")]
    Spawn(std::io::Error),
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
}

/// The table name for an interface.
pub fn table_name(ifname: &str) -> String {
    let clean: String = ifname
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("ulvs_{clean}")
}

/// The nft script that (re)creates the drop table atomically. Besides the
/// VIPs, packets from NAT real servers that are not addressed to the
/// director's own address (their replies to clients, which the director
/// forwards itself) are dropped too: with forwarding off the kernel would
/// answer them with ICMP errors.
pub fn ruleset(ifname: &str, vips: &[u32], nat_servers: &[u32], own_ip: Option<u32>) -> String {
    let t = table_name(ifname);
    let mut s = format!("add table netdev {t}\ndelete table netdev {t}\ntable netdev {t} {{\n");
    s.push_str(&format!(
        "  chain ingress {{\n    type filter hook ingress device \"{ifname}\" priority -500; policy accept;\n"
    ));
    if !vips.is_empty() {
        let list: Vec<String> = vips.iter().map(|v| Ipv4Addr::from(*v).to_string()).collect();
        s.push_str(&format!("    ip daddr {{ {} }} counter drop\n", list.join(", ")));
    }
    if !nat_servers.is_empty() {
        let list: Vec<String> = nat_servers
            .iter()
            .map(|v| Ipv4Addr::from(*v).to_string())
            .collect();
        match own_ip {
            Some(ip) => s.push_str(&format!(
                "    ip saddr {{ {} }} ip daddr != {} counter drop\n",
                list.join(", "),
                Ipv4Addr::from(ip)
            )),
            None => s.push_str(&format!("    ip saddr {{ {} }} counter drop\n", list.join(", "))),
        }
    }
    s.push_str("  }\n}\n");
    s
}

/// The IPv6 table's name for an interface.
pub fn table_name6(ifname: &str) -> String {
    table_name(ifname).replacen("ulvs_", "ulvs6_", 1)
}

fn list6(addrs: &[u128]) -> String {
    let v: Vec<String> = addrs.iter().map(|a| Ipv6Addr::from(*a).to_string()).collect();
    v.join(", ")
}

/// The nft script that (re)creates the IPv6 drop table atomically: ND
/// accepted, frames to the IPv6 `vips` dropped, and frames from IPv6 NAT
/// servers dropped unless addressed to one of the director's own
/// addresses `own` or to a multicast group (as for IPv4, their replies to
/// clients are the director's to forward). With no VIP and no NAT server the
/// table is only removed.
pub fn ruleset6(ifname: &str, vips: &[u128], nat_servers: &[u128], own: &[u128]) -> String {
    let t = table_name6(ifname);
    let mut s = format!("add table netdev {t}\ndelete table netdev {t}\n");
    if vips.is_empty() && nat_servers.is_empty() {
        return s;
    }
    s.push_str(&format!(
        "table netdev {t} {{\n  chain ingress {{\n    type filter hook ingress device \"{ifname}\" priority -500; policy accept;\n"
    ));
    s.push_str("    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept\n");
    if !vips.is_empty() {
        s.push_str(&format!("    ip6 daddr {{ {} }} counter drop\n", list6(vips)));
    }
    if !nat_servers.is_empty() {
        let mut keep = list6(own);
        if !keep.is_empty() {
            keep.push_str(", ");
        }
        keep.push_str("ff00::/8");
        s.push_str(&format!(
            "    ip6 saddr {{ {} }} ip6 daddr != {{ {keep} }} counter drop\n",
            list6(nat_servers)
        ));
    }
    s.push_str("  }\n}\n");
    s
}

/// Install or replace the IPv6 drop table (see [`ruleset6`]).
///
/// # Errors
/// `nft` is missing or refused the ruleset.
pub fn install6(ifname: &str, vips: &[u128], nat_servers: &[u128], own: &[u128]) -> Result<(), NftError> {
    run(&ruleset6(ifname, vips, nat_servers, own))
}

fn run(script: &str) -> Result<(), NftError> {
    let mut child = Command::new("nft")
        .arg("-f")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(NftError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(NftError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Install or replace the drop rule for `vips` on `ifname`.
///
/// # Errors
/// `nft` is missing or refused the ruleset.
pub fn install(ifname: &str, vips: &[u32], nat_servers: &[u32], own_ip: Option<u32>) -> Result<(), NftError> {
    run(&ruleset(ifname, vips, nat_servers, own_ip))
}

/// Remove the drop rules of both families (ignores tables already gone).
///
/// # Errors
/// `nft` is missing or refused.
pub fn remove(ifname: &str) -> Result<(), NftError> {
    let (t, t6) = (table_name(ifname), table_name6(ifname));
    run(&format!(
        "add table netdev {t}\ndelete table netdev {t}\nadd table netdev {t6}\ndelete table netdev {t6}\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_shape() {
        let s = ruleset("eth0", &[0xc612_6401, 0xc612_6402], &[], None);
        assert!(s.starts_with("add table netdev ulvs_eth0\ndelete table netdev ulvs_eth0\n"));
        assert!(s.contains("hook ingress device \"eth0\" priority -500"));
        assert!(s.contains("ip daddr { 198.18.100.1, 198.18.100.2 } counter drop"));
        assert!(!ruleset("eth0", &[], &[], None).contains("daddr"));
        let n = ruleset("eth0", &[0xc612_6401], &[0xc612_000b], Some(0xc612_0002));
        assert!(n.contains("ip saddr { 198.18.0.11 } ip daddr != 198.18.0.2 counter drop"));
        assert_eq!(table_name("veth-a.1"), "ulvs_veth_a_1");
    }

    fn a(s: &str) -> u128 {
        u128::from(s.parse::<Ipv6Addr>().unwrap())
    }

    #[test]
    fn ipv6_script_shape() {
        let s = ruleset6("eth0", &[a("2001:db8:100::1")], &[], &[a("2001:db8::2")]);
        assert!(s.starts_with(
            "add table netdev ulvs6_eth0\ndelete table netdev ulvs6_eth0\ntable netdev ulvs6_eth0 {"
        ));
        assert!(s.contains("hook ingress device \"eth0\" priority -500"));
        let nd = s
            .find("icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept")
            .unwrap();
        let drop = s.find("ip6 daddr { 2001:db8:100::1 } counter drop").unwrap();
        assert!(nd < drop, "ND is accepted before the VIP drop");
        assert!(!s.contains("saddr"));
        let n = ruleset6(
            "eth0",
            &[],
            &[a("2001:db8::11"), a("2001:db8::12")],
            &[a("2001:db8::2"), a("fe80::2")],
        );
        assert!(n.contains("ip6 saddr { 2001:db8::11, 2001:db8::12 } ip6 daddr != { 2001:db8::2, fe80::2, ff00::/8 } counter drop"));
        assert!(!n.contains("daddr {"));
        let n = ruleset6("eth0", &[], &[a("2001:db8::11")], &[]);
        assert!(n.contains("ip6 daddr != { ff00::/8 }"));
        // Nothing IPv6 to protect: the table is only removed.
        assert_eq!(
            ruleset6("eth0", &[], &[], &[a("2001:db8::2")]),
            "add table netdev ulvs6_eth0\ndelete table netdev ulvs6_eth0\n"
        );
    }
}
