//! Specification versions: parsing, the set this plugin speaks, and which verbs each allows.

use std::fmt;

use super::error::{CniError, Code};

/// The specification version this plugin implements.
pub const CURRENT: &str = "1.1.0";

/// Every version accepted in `cniVersion`. 0.1.0 and 0.2.0 (no rich results, no
/// chaining) are not offered: p4lb needs `prevResult` and typed interfaces.
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A parsed `major.minor.patch` version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const V0_4_0: Version = Version::new(0, 4, 0);
    pub const V1_0_0: Version = Version::new(1, 0, 0);
    pub const V1_1_0: Version = Version::new(1, 1, 0);

    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// Parses "1.1.0". An empty string is 0.1.0, as the specification's first version
    /// had no `cniVersion` field.
    pub fn parse(text: &str) -> Result<Self, CniError> {
        if text.is_empty() {
            return Ok(Version::new(0, 1, 0));
        }
        let mut parts = text.split('.');
        let mut next = |what: &str| -> Result<u32, CniError> {
            match parts.next() {
                None => Ok(0),
                Some(p) => p.parse::<u32>().map_err(|_| {
                    CniError::new(Code::DecodingFailure, "invalid cniVersion")
                        .details(format!("{what} part of {text:?} is not a number"))
                }),
            }
        };
        let v = Version::new(next("major")?, next("minor")?, next("patch")?);
        if parts.next().is_some() {
            return Err(CniError::new(Code::DecodingFailure, "invalid cniVersion")
                .details(format!("{text:?} has too many parts")));
        }
        Ok(v)
    }

    /// Parses and checks the version against [`SUPPORTED`].
    pub fn negotiate(text: &str) -> Result<Self, CniError> {
        let v = Version::parse(text)?;
        if SUPPORTED.iter().any(|s| Version::parse(s).ok() == Some(v)) {
            Ok(v)
        } else {
            Err(
                CniError::new(Code::IncompatibleVersion, "incompatible CNI versions").details(
                    format!(
                        "config is {text:?}, plugin supports [{}]",
                        SUPPORTED.join(", ")
                    ),
                ),
            )
        }
    }

    /// Results before 1.0.0 carry `version` in every IP entry.
    pub fn has_ip_version_field(self) -> bool {
        self < Version::V1_0_0
    }

    /// Route attributes (mtu, advmss, priority, table, scope) and interface mtu,
    /// socketPath and pciID arrived with 1.1.0.
    pub fn has_extended_fields(self) -> bool {
        self >= Version::V1_1_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        assert!(Version::parse("0.3.1").unwrap() < Version::parse("0.4.0").unwrap());
        assert_eq!(Version::parse("1.1").unwrap(), Version::V1_1_0);
        assert_eq!(Version::parse("").unwrap(), Version::new(0, 1, 0));
        assert_eq!(
            Version::parse("1.x.0").unwrap_err().code,
            Code::DecodingFailure as u32
        );
        assert_eq!(
            Version::parse("1.0.0.0").unwrap_err().code,
            Code::DecodingFailure as u32
        );
    }

    #[test]
    fn negotiation_accepts_only_supported() {
        for v in SUPPORTED {
            assert_eq!(Version::negotiate(v).unwrap().to_string(), *v);
        }
        for bad in ["0.1.0", "0.2.0", "", "2.0.0", "1.2.0"] {
            assert_eq!(
                Version::negotiate(bad).unwrap_err().code,
                Code::IncompatibleVersion as u32,
                "{bad}"
            );
        }
    }
}
