//! Where wxhub may send an account's pushes: push-route targets and the relay URL are
//! chosen by owners, so wxhub refuses to reach the hub's own network through them (request
//! forgery). A target must be https (http only to a loopback host); its host must not be a
//! literal non-public address, and when it is a name, the delivery connects only to the
//! public addresses it resolves to (`gateway::routes::GuardedResolver`) — unless the
//! operator allows the host (`--push-allow-host`, for development: loopback).
//!
//! The check of the literal part is here, so the tenancy layer refuses such a target when
//! it is entered, and the gateway applies the same rule when it delivers.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use crate::settings::https_or_loopback_http;

/// Whether `ip` is an address of the public internet: not loopback, private, link-local,
/// unique-local, shared (CGNAT), documentation, benchmarking, multicast, reserved or
/// unspecified — the cloud metadata addresses (169.254.169.254, fd00:ec2::254) among them.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let o = v6.octets();
                return is_public_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard-only 100::/64
                || s[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible ::/96
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_unspecified()
        || o[0] == 0 // 0.0.0.0/8
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, the metadata address among them
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || ip.is_documentation()
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || ip.is_multicast()
        || o[0] >= 240) // reserved and broadcast
}

/// Hosts the operator allows on any address, lower-cased.
#[derive(Debug, Clone, Default)]
pub struct AllowList(Arc<HashSet<String>>);

impl AllowList {
    pub fn new(hosts: &[String]) -> Self {
        AllowList(Arc::new(
            hosts
                .iter()
                .map(|h| h.trim().trim_matches(['[', ']']).to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
        ))
    }

    /// Whether `host` (as written in a URL) may be reached on any address.
    pub fn allows(&self, host: &str) -> bool {
        self.0
            .contains(&host.trim_matches(['[', ']']).to_ascii_lowercase())
    }
}

/// Why a target was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub &'static str);

/// Checks what name resolution cannot see: the scheme, and a literal address in the URL
/// (which is connected to without resolution).
pub fn check_target(allow: &AllowList, url: &str) -> Result<url::Url, Refused> {
    let parsed = url::Url::parse(url).map_err(|_| Refused("the target is not a URL"))?;
    if !https_or_loopback_http(&parsed) {
        return Err(Refused(
            "the target must be https (http only to a loopback host)",
        ));
    }
    let host = parsed.host_str().unwrap_or_default();
    if allow.allows(host) {
        return Ok(parsed);
    }
    let literal = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    };
    if let Some(ip) = literal
        && !is_public(ip)
    {
        return Err(Refused("the target's address is not a public address"));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["203.205.254.1", "8.8.8.8", "2402:4e00::1", "::ffff:8.8.8.8"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn literal_targets_are_checked_and_allowed_hosts_pass() {
        let none = AllowList::new(&[]);
        assert!(check_target(&none, "http://127.0.0.1:8080/p").is_err());
        assert!(check_target(&none, "https://10.0.0.1/p").is_err());
        assert!(check_target(&none, "https://[fd00:ec2::254]/p").is_err());
        assert!(check_target(&none, "https://169.254.169.254/latest").is_err());
        assert!(check_target(&none, "http://owner.example/p").is_err());
        assert!(check_target(&none, "https://owner.example/p").is_ok());
        assert!(check_target(&none, "https://8.8.8.8/p").is_ok());
        let local = AllowList::new(&["127.0.0.1".to_owned(), "LOCALHOST".to_owned()]);
        assert!(check_target(&local, "http://127.0.0.1:8080/p").is_ok());
        assert!(check_target(&local, "http://localhost:8080/p").is_ok());
        assert!(check_target(&local, "https://10.0.0.1/p").is_err());
    }
}
