//! Who may connect to the API. The app containers share a network with
//! the controller and run whatever image they were given, so a peer
//! inside that network's ranges is refused, except the network's gateway:
//! the host's side of the bridge, from which the host's published port
//! (127.0.0.1:9300) is forwarded. Pure: the ranges come in as text, from
//! whichever platform reads them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Text that is not an address range or an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not {what}")]
pub struct ParseError {
    text: String,
    what: &'static str,
}

/// An address range, `172.18.0.0/16` or `fd00:1::/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The range's first address (the bits past the prefix cleared).
    base: IpAddr,
    prefix: u8,
}

impl FromStr for Subnet {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Subnet, ParseError> {
        let error =
            || ParseError { text: text.to_owned(), what: "an address range like 10.0.0.0/8" };
        let (address, prefix) = text.trim().split_once('/').ok_or_else(error)?;
        let address: IpAddr = address.parse().map_err(|_| error())?;
        let prefix: u8 = prefix.parse().map_err(|_| error())?;
        let base = match address {
            IpAddr::V4(a) if prefix <= 32 => {
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(prefix)))
            }
            IpAddr::V6(a) if prefix <= 128 => {
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(prefix)))
            }
            _ => return Err(error()),
        };
        Ok(Subnet { base, prefix })
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl Subnet {
    /// Whether `ip` lies in the range. An IPv4 peer seen through an IPv6
    /// socket (`::ffff:172.18.0.5`) counts as the IPv4 address it is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, ip.to_canonical()) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix) == u32::from(base)
            }
            (IpAddr::V6(base), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix) == u128::from(base)
            }
            _ => false,
        }
    }

    /// The range's first host address: where Docker puts a bridge's
    /// gateway when its configuration names none.
    fn first_host(&self) -> IpAddr {
        match self.base {
            IpAddr::V4(b) => IpAddr::V4(Ipv4Addr::from(u32::from(b).saturating_add(1))),
            IpAddr::V6(b) => IpAddr::V6(Ipv6Addr::from(u128::from(b).saturating_add(1))),
        }
    }
}

/// One range of the app network and its gateway, the one address in it
/// that is let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub subnet: Subnet,
    pub gateway: IpAddr,
}

impl Range {
    /// A range as a platform reports it; with no gateway named, the
    /// range's first host address stands for it.
    pub fn parse(subnet: &str, gateway: Option<&str>) -> Result<Range, ParseError> {
        let subnet: Subnet = subnet.parse()?;
        let gateway = match gateway.map(str::trim).filter(|g| !g.is_empty()) {
            None => subnet.first_host(),
            Some(g) => g
                .parse::<IpAddr>()
                .map_err(|_| ParseError { text: g.to_owned(), what: "a gateway address" })?
                .to_canonical(),
        };
        Ok(Range { subnet, gateway })
    }
}

/// Whether the API lets `peer` in: not when it is inside a range of the
/// app network, unless it is that range's gateway.
pub fn allowed(peer: IpAddr, app: &[Range]) -> bool {
    let peer = peer.to_canonical();
    !app.iter().any(|r| r.subnet.contains(peer) && r.gateway != peer)
}

/// The ranges the API refuses; none for a listener no container reaches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peers {
    refused: Vec<Range>,
}

impl Peers {
    /// Everyone: for a loopback listener, which no container can reach.
    pub fn anyone() -> Peers {
        Peers::default()
    }

    pub fn refusing(ranges: Vec<Range>) -> Peers {
        Peers { refused: ranges }
    }

    pub fn allows(&self, peer: IpAddr) -> bool {
        allowed(peer, &self.refused)
    }

    pub fn ranges(&self) -> &[Range] {
        &self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn check(peer: &str, app: &[(&str, Option<&str>)], expected: bool) {
        let ranges: Vec<Range> = app.iter().map(|(s, g)| Range::parse(s, *g).unwrap()).collect();
        assert_eq!(allowed(ip(peer), &ranges), expected, "{peer} against {app:?}");
    }

    #[test]
    fn refuses_the_app_network_but_its_gateway() {
        let app = [("172.18.0.0/16", Some("172.18.0.1"))];
        check("172.18.0.5", &app, false);
        check("172.18.255.254", &app, false);
        check("172.18.0.1", &app, true);
        check("172.19.0.5", &app, true);
        check("127.0.0.1", &app, true);
        // An IPv4 peer on a dual-stack socket.
        check("::ffff:172.18.0.5", &app, false);
        check("::ffff:172.18.0.1", &app, true);
        // Nothing refused when there is no app network.
        check("172.18.0.5", &[], true);
    }

    #[test]
    fn with_no_gateway_named_the_first_host_is_the_gateway() {
        let app = [("10.1.2.0/24", None)];
        check("10.1.2.1", &app, true);
        check("10.1.2.2", &app, false);
        // A base written with host bits is the same range.
        check("10.1.2.9", &[("10.1.2.77/24", None)], false);
        check("10.1.2.1", &[("10.1.2.77/24", None)], true);
    }

    #[test]
    fn handles_ipv6_and_several_ranges() {
        let app = [("172.20.0.0/16", Some("172.20.0.1")), ("fd00:1::/64", Some("fd00:1::1"))];
        check("fd00:1::42", &app, false);
        check("fd00:1::1", &app, true);
        check("fd00:2::42", &app, true);
        check("172.20.3.4", &app, false);
        check("::1", &app, true);
        // Prefixes at either end.
        check("8.8.8.8", &[("0.0.0.0/0", Some("10.0.0.1"))], false);
        check("10.0.0.1", &[("0.0.0.0/0", Some("10.0.0.1"))], true);
        check("192.168.1.2", &[("192.168.1.2/32", Some("192.168.1.1"))], false);
        check("192.168.1.3", &[("192.168.1.2/32", Some("192.168.1.1"))], true);
    }

    #[test]
    fn refuses_text_that_is_not_a_range() {
        for bad in ["172.18.0.0", "172.18.0.0/33", "fd00::/129", "x/8", "10.0.0.0/-1", ""] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
        assert_eq!("10.1.2.77/24".parse::<Subnet>().unwrap().to_string(), "10.1.2.0/24");
        let e = Range::parse("10.0.0.0/8", Some("gateway")).unwrap_err();
        assert!(e.to_string().contains("gateway"), "{e}");
    }
}
