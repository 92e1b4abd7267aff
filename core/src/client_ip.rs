//! Resolves the client address of a request.
//!
//! The client is the socket peer unless the peer is a configured trusted proxy. Only
//! then are `X-Forwarded-For` (or, without it, `Forwarded`) read, right to left,
//! skipping further trusted proxies; the first untrusted address is the client. A
//! client that sends its own `X-Forwarded-For` through an untrusted path therefore
//! cannot choose the address that access policies and rate limits see.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// A list of trusted proxy networks.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
}

impl TrustedProxies {
    /// Creates the list from parsed networks.
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self { networks }
    }

    /// Returns whether `address` belongs to a trusted proxy.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.networks
            .iter()
            .any(|network| network.contains(&address))
    }

    /// Returns whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// Resolves the client address of a request that arrived from `peer`.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let hops = forwarded_for_hops(headers);
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop {
                Some(address) => {
                    client = canonical(*address);
                    if !self.contains(client) {
                        return client;
                    }
                }
                // An unreadable hop ends the chain of trust at the last known address.
                None => return client,
            }
        }
        client
    }
}

/// Parses an address (`10.0.0.1`) or a CIDR block (`10.0.0.0/8`); host bits of a block
/// are cleared, so `10.1.2.3/8` means `10.0.0.0/8`.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    if let Ok(network) = text.parse::<IpNet>() {
        return Ok(network.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("invalid address or CIDR block {text:?}"))
}

/// Treats an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) as the IPv4 address, which
/// is how a dual-stack socket reports IPv4 peers.
pub fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Returns the hops of `X-Forwarded-For`, or of `Forwarded` when there is no
/// `X-Forwarded-For`, left to right. Unreadable hops are `None`.
fn forwarded_for_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let x_forwarded_for = headers.get_all("x-forwarded-for");
    if x_forwarded_for.iter().next().is_some() {
        return x_forwarded_for
            .iter()
            .flat_map(|value| {
                let text = value.to_str().unwrap_or("\u{0}");
                text.split(',').map(|hop| parse_hop(hop.trim()))
            })
            .collect();
    }
    headers
        .get_all(http::header::FORWARDED)
        .iter()
        .flat_map(|value| {
            let text = value.to_str().unwrap_or("\u{0}");
            text.split(',').map(forwarded_element_for)
        })
        .collect()
}

/// Extracts the `for=` address of one `Forwarded` element.
fn forwarded_element_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        parse_hop(value.trim().trim_matches('"'))
    })
}

/// Parses one hop: `1.2.3.4`, `1.2.3.4:567`, `2001:db8::1` or `[2001:db8::1]:567`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(address) = hop.parse::<IpAddr>() {
        return Some(address);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (inside, _) = rest.split_once(']')?;
        return inside.parse().ok();
    }
    let (host, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            entries
                .iter()
                .map(|entry| parse_network(entry).unwrap())
                .collect(),
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_ignores_forwarded_for() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let spoofed = headers(&[("x-forwarded-for", "1.1.1.1")]);
        assert_eq!(
            trusted.client_address(ip("203.0.113.9"), &spoofed),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn trusted_peer_uses_rightmost_untrusted_hop() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let chain = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.2")]);
        assert_eq!(
            trusted.client_address(ip("10.0.0.1"), &chain),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn repeated_header_lines_join_in_order() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let chain = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-for", "10.0.0.3"),
        ]);
        assert_eq!(
            trusted.client_address(ip("10.0.0.1"), &chain),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn all_trusted_hops_yield_leftmost() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let chain = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.8")]);
        assert_eq!(
            trusted.client_address(ip("10.0.0.1"), &chain),
            ip("10.0.0.9")
        );
    }

    #[test]
    fn garbage_hop_stops_at_last_trusted() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let chain = headers(&[("x-forwarded-for", "198.51.100.7, not-an-ip, 10.0.0.2")]);
        assert_eq!(
            trusted.client_address(ip("10.0.0.1"), &chain),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn forwarded_header_used_without_xff() {
        let trusted = proxies(&["10.0.0.1"]);
        let chain = headers(&[(
            "forwarded",
            "for=\"[2001:db8::7]:4711\";proto=https, for=10.0.0.1",
        )]);
        assert_eq!(
            trusted.client_address(ip("10.0.0.1"), &chain),
            ip("2001:db8::7")
        );
    }

    #[test]
    fn hop_with_port_parses() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let chain = headers(&[("x-forwarded-for", "198.51.100.7:5555")]);
        assert_eq!(
            trusted.client_address(ip("10.0.0.1"), &chain),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn mapped_ipv4_peer_matches_ipv4_network() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let chain = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(
            trusted.client_address(ip("::ffff:10.0.0.1"), &chain),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn rejects_invalid_entry() {
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("proxy.internal").is_err());
        assert_eq!(
            parse_network("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
    }
}
