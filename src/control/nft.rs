//! The kernel drop rule (slow path). The director host must never answer VIP
//! traffic itself: with forwarding off it would send ICMP errors, with the VIP
//! local it would send RSTs. A netdev-family ingress chain drops frames to the
//! VIPs; AF_PACKET taps (our workers, bound to ETH_P_ALL) see frames before
//! that hook, so the director still gets them.

use std::io::Write;
use std::net::Ipv4Addr;
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

/// Remove the drop rule (ignores a table that is already gone).
///
/// # Errors
/// `nft` is missing or refused.
pub fn remove(ifname: &str) -> Result<(), NftError> {
    let t = table_name(ifname);
    run(&format!("add table netdev {t}\ndelete table netdev {t}\n"))
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
}
