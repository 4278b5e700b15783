//! Parsing and formatting of the textual addresses the API carries.

use std::net::Ipv4Addr;

use crate::error::{Error, Result};

/// Parses a dotted IPv4 address; `field` names the request field for the error.
pub fn parse_ipv4(field: &str, s: &str) -> Result<Ipv4Addr> {
    let t = s.trim();
    if t.is_empty() {
        return Err(Error::invalid(format!(
            "{field}: an IPv4 address is required"
        )));
    }
    t.parse::<Ipv4Addr>()
        .map_err(|_| Error::invalid(format!("{field}: {s:?} is not an IPv4 address")))
}

/// Parses an optional IPv4 address (empty = none).
pub fn parse_opt_ipv4(field: &str, s: &str) -> Result<Option<Ipv4Addr>> {
    if s.trim().is_empty() {
        Ok(None)
    } else {
        parse_ipv4(field, s).map(Some)
    }
}

/// Parses a MAC address written as six colon- or dash-separated hex octets.
pub fn parse_mac(field: &str, s: &str) -> Result<[u8; 6]> {
    let bad = || {
        Error::invalid(format!(
            "{field}: {s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"
        ))
    };
    let parts: Vec<&str> = s.trim().split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || p.len() > 2 {
            return Err(bad());
        }
        mac[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(mac)
}

/// Formats a MAC address as lower-case colon-separated hex.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The MAC as a u64 (48 bits used).
pub fn mac_u64(mac: &[u8; 6]) -> u64 {
    mac.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(
            parse_ipv4("ip", "10.0.0.1").unwrap(),
            Ipv4Addr::new(10, 0, 0, 1)
        );
        assert!(parse_ipv4("ip", "10.0.0").is_err());
        assert!(parse_ipv4("ip", "").is_err());
        assert!(parse_ipv4("ip", "10.0.0.256").is_err());
        assert_eq!(
            parse_mac("mac", "02:42:AC:11:00:02").unwrap(),
            [2, 0x42, 0xac, 0x11, 0, 2]
        );
        assert!(parse_mac("mac", "02:42:ac:11:00").is_err());
        assert!(parse_mac("mac", "02:42:ac:11:00:zz").is_err());
        assert!(parse_mac("mac", "02:42:ac:11:00:123").is_err());
        assert_eq!(
            format_mac(&[2, 0x42, 0xac, 0x11, 0, 2]),
            "02:42:ac:11:00:02"
        );
        assert_eq!(mac_u64(&[0, 0, 0, 0, 1, 2]), 0x102);
    }
}
