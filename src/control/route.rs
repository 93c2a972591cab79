//! The default gateway of the director's interface read from
//! `/proc/net/route` (slow path): the fallback when netlink cannot be opened
//! (`control::netlink` follows the routing table live otherwise).

/// The default gateway (host-order IPv4) of `ifname` in the text of
/// `/proc/net/route`, if any.
pub fn default_gateway(proc_net_route: &str, ifname: &str) -> Option<u32> {
    for line in proc_net_route.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[0] != ifname {
            continue;
        }
        let dest = u32::from_str_radix(f[1], 16).ok()?;
        let gw = u32::from_str_radix(f[2], 16).ok()?;
        let flags = u32::from_str_radix(f[3], 16).ok()?;
        let mask = u32::from_str_radix(f[7], 16).ok()?;
        // RTF_UP | RTF_GATEWAY, 0.0.0.0/0. The file holds network byte order
        // printed as a little-endian integer.
        if dest == 0 && mask == 0 && flags & 0x3 == 0x3 {
            return Some(u32::from_be(gw.to_le()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t010012C6\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t000012C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";

    #[test]
    fn finds_the_default_gateway() {
        assert_eq!(default_gateway(SAMPLE, "eth0"), Some(0xc612_0001));
        assert_eq!(default_gateway(SAMPLE, "eth1"), None);
        assert_eq!(default_gateway("Iface\n", "eth0"), None);
    }
}
