//! The client address of a request, behind trusted reverse proxies (`SLIPWAY_TRUSTED_PROXIES`).
//!
//! Behind a reverse proxy every request's peer is the proxy, so a per-IP budget
//! ([`crate::limits`]) would be one budget shared by every client. A proxy says who its client
//! was by appending that address to `X-Forwarded-For`; but the client can send the header too,
//! with whatever it likes in it. So the header is read only when the peer is a proxy the operator
//! listed, and only from the right: each trusted proxy appends the address it saw, so walking
//! right to left past trusted hops, the first address that is *not* a trusted proxy is the
//! client. Entries left of it were written by that client (or by proxies it chose) and are
//! ignored: spoofing them changes nothing.
//!
//! Default: no trusted proxy, the header is ignored and the peer address is the client.
//! Matching is on canonical addresses (`::ffff:10.0.0.5` is `10.0.0.5`), so a dual-stack
//! listener needs no IPv4-mapped entries in the list.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use axum::http::HeaderMap;

/// The header a proxy appends its client's address to.
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// An address block: `10.0.0.0/8`, `fd00::/8`, or one address (`127.0.0.1` is `/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` (canonicalised) is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `addr` or `addr/prefix`; host bits under the prefix are dropped (`10.1.2.3/8` is `10.0.0.0/8`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not an IP address or CIDR block");
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let addr = if prefix.is_none() { addr.to_canonical() } else { addr };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        let net = match addr {
            IpAddr::V4(a) => {
                IpAddr::V4((u32::from(a) & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)).into())
            }
            IpAddr::V6(a) => IpAddr::V6(
                (u128::from(a) & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)).into(),
            ),
        };
        Ok(Self { net, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// The proxies whose `X-Forwarded-For` is believed (`SLIPWAY_TRUSTED_PROXIES`); empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Whether no proxy is trusted (the header is ignored).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client of a request from `peer`: `peer` itself unless it is a trusted proxy; then the
    /// right-most `X-Forwarded-For` entry that is not a trusted proxy. An entry that is not an
    /// address stops the walk at the last trusted hop (nothing left of it can be believed); if
    /// every entry is a trusted proxy, the left-most one is the client.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        // Several header lines are one list, in order (RFC 9110 §5.3).
        let hops: Vec<Option<IpAddr>> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .flat_map(|v| v.to_str().map_or_else(|_| vec![None], |v| v.split(',').map(parse_hop).collect()))
            .collect();
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            match hop {
                Some(ip) if self.contains(ip) => client = ip,
                Some(ip) => return ip,
                None => break,
            }
        }
        client
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    /// A comma- or space-separated list of addresses and CIDR blocks.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// One `X-Forwarded-For` entry: an address, or an address with a port (some proxies add one).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn blocks_parse_and_match() {
        let proxies: TrustedProxies = "10.0.0.0/8, 192.168.1.7 fd00::/8".parse().unwrap();
        assert!(proxies.contains(ip("10.200.3.4")));
        assert!(proxies.contains(ip("::ffff:10.0.0.5")), "IPv4-mapped peers of a dual-stack listener");
        assert!(proxies.contains(ip("192.168.1.7")));
        assert!(!proxies.contains(ip("192.168.1.8")));
        assert!(proxies.contains(ip("fd12::1")));
        assert!(!proxies.contains(ip("11.0.0.1")));
        assert_eq!("10.1.2.3/8".parse::<Cidr>().unwrap().to_string(), "10.0.0.0/8");
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        assert!("::/0".parse::<Cidr>().unwrap().contains(ip("2001:db8::1")));
        for bad in ["10.0.0.0/33", "::/129", "proxy.internal", "10.0.0.0/", "10.0.0/8"] {
            assert!(bad.parse::<TrustedProxies>().is_err(), "{bad}");
        }
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
    }

    #[test]
    fn the_header_is_ignored_by_default_and_from_untrusted_peers() {
        let spoofed = xff(&["203.0.113.9"]);
        assert_eq!(TrustedProxies::default().client_ip(ip("198.51.100.1"), &spoofed), ip("198.51.100.1"));
        let proxies: TrustedProxies = "10.0.0.1".parse().unwrap();
        assert_eq!(proxies.client_ip(ip("198.51.100.1"), &spoofed), ip("198.51.100.1"), "not our proxy");
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_entry_is_the_client() {
        let proxies: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let peer = ip("10.0.0.1");
        // The proxy appended the client it saw; what the client wrote to the left is ignored.
        assert_eq!(proxies.client_ip(peer, &xff(&["1.1.1.1, 2.2.2.2, 203.0.113.7"])), ip("203.0.113.7"));
        // Chained trusted proxies are skipped, across header lines too.
        assert_eq!(proxies.client_ip(peer, &xff(&["6.6.6.6, 203.0.113.7", "10.1.1.1"])), ip("203.0.113.7"));
        // Ports and IPv6 forms some proxies write.
        assert_eq!(proxies.client_ip(peer, &xff(&["203.0.113.7:5123"])), ip("203.0.113.7"));
        assert_eq!(proxies.client_ip(peer, &xff(&["[2001:db8::7]:443"])), ip("2001:db8::7"));
        assert_eq!(proxies.client_ip(peer, &xff(&["2001:db8::7"])), ip("2001:db8::7"));
        // No header: the proxy itself (as without the setting).
        assert_eq!(proxies.client_ip(peer, &HeaderMap::new()), peer);
        // Garbage stops the walk at the last trusted hop; nothing left of it is believed.
        assert_eq!(proxies.client_ip(peer, &xff(&["203.0.113.7, unknown, 10.2.2.2"])), ip("10.2.2.2"));
        assert_eq!(proxies.client_ip(peer, &xff(&["unknown"])), peer);
        // Every hop trusted (an internal caller): the left-most.
        assert_eq!(proxies.client_ip(peer, &xff(&["10.9.9.9, 10.2.2.2"])), ip("10.9.9.9"));
    }
}
