//! Who a proxy is: a cluster name and the address string it names in its heartbeats.
//!
//! A proxy is identified by `(cluster, address)` as carried in the heartbeat, never by the
//! UDP source of the datagram (which NAT can rewrite). Both strings become store keys
//! (`/zerodb/proxy/CLUSTER/status/ADDR`), so they are validated strictly before anything
//! is stored: bounded length, a small alphabet, no `/`, no control characters, and no
//! name that is only `.` or `..`.
//!
//! The alphabets leave out whitespace, so a name with leading or trailing spaces (which
//! would look like another name in a listing or a log) is refused too. A cluster named
//! `.` or `..`, or a proxy whose host is `.` or `..`, would make a key such as
//! `/zerodb/proxy/../status/…` that a path-minded reader resolves to another key, so
//! those are refused by name.

use thiserror::Error;

/// Longest accepted cluster name, in bytes.
pub const MAX_CLUSTER_LEN: usize = 128;
/// Longest accepted proxy address, in bytes (a DNS name of 253 bytes, `[`, `]`, `:65535`).
pub const MAX_PROXY_LEN: usize = 261;

/// Why a cluster name or proxy address was refused. Nothing was stored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdentityError {
    /// The cluster name is empty or longer than [`MAX_CLUSTER_LEN`].
    #[error("cluster name must be 1 to {MAX_CLUSTER_LEN} bytes long")]
    ClusterLength,
    /// The cluster name holds a byte outside `A-Z a-z 0-9 _ - .`.
    #[error("cluster name may only contain ASCII letters, digits, '_', '-' and '.'")]
    ClusterCharacter,
    /// The cluster name is `.` or `..`, which would read as a path step in a store key.
    #[error("cluster name may not be '.' or '..'")]
    ClusterDots,
    /// The proxy address is longer than [`MAX_PROXY_LEN`].
    #[error("proxy address must be at most {MAX_PROXY_LEN} bytes long")]
    ProxyLength,
    /// The proxy address is not `HOST:PORT`.
    #[error("proxy address must be HOST:PORT, such as 10.25.0.11:3000")]
    ProxyShape,
    /// The host part holds a byte outside `A-Z a-z 0-9 . - _ : [ ] %`.
    #[error(
        "proxy host may only contain ASCII letters, digits, '.', '-', '_', ':', '[', ']' and '%'"
    )]
    ProxyCharacter,
    /// The host part is `.` or `..`, which would read as a path step in a store key.
    #[error("proxy host may not be '.' or '..'")]
    ProxyDots,
    /// The port is not a number from 1 to 65535 written without leading zeros.
    #[error("proxy port must be a number from 1 to 65535")]
    ProxyPort,
}

/// Checks a cluster name: 1 to 128 bytes of `A-Z a-z 0-9 _ - .`, and not `.` or `..`.
///
/// Whitespace, `/` and control characters are outside the alphabet, so a name with
/// them, leading or trailing spaces included, is refused; `.` and `..` are refused
/// because they would read as path steps in `/zerodb/proxy/CLUSTER/status/ADDR`.
pub fn validate_cluster(name: &str) -> Result<(), IdentityError> {
    if name.is_empty() || name.len() > MAX_CLUSTER_LEN {
        return Err(IdentityError::ClusterLength);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(IdentityError::ClusterCharacter);
    }
    if is_dots(name) {
        return Err(IdentityError::ClusterDots);
    }
    Ok(())
}

/// Checks a proxy address: `HOST:PORT`, at most 261 bytes.
///
/// The host is a name, an IPv4 address or a bracketed IPv6 address (a zone such as
/// `%eth0` is allowed) but not `.` or `..`; the port is 1 to 65535. Whitespace, `/` and
/// control characters are outside the host's alphabet, so `.`, `..` or an address with
/// leading or trailing spaces is refused. The address is only a name here: nothing is
/// ever sent to it.
pub fn validate_proxy(addr: &str) -> Result<(), IdentityError> {
    if addr.len() > MAX_PROXY_LEN {
        return Err(IdentityError::ProxyLength);
    }
    let (host, port) = addr.rsplit_once(':').ok_or(IdentityError::ProxyShape)?;
    if host.is_empty() || port.is_empty() {
        return Err(IdentityError::ProxyShape);
    }
    if !host.bytes().all(|b| {
        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']' | b'%')
    }) {
        return Err(IdentityError::ProxyCharacter);
    }
    if is_dots(host) {
        return Err(IdentityError::ProxyDots);
    }
    if port.len() > 5 || port.starts_with('0') || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IdentityError::ProxyPort);
    }
    match port.parse::<u32>() {
        Ok(1..=65535) => Ok(()),
        _ => Err(IdentityError::ProxyPort),
    }
}

/// `.` and `..` are path steps, not names.
fn is_dots(name: &str) -> bool {
    matches!(name, "." | "..")
}

/// The seed's key for a proxy's status: `/zerodb/proxy/CLUSTER/status/ADDR`.
pub fn status_key(cluster: &str, proxy: &str) -> String {
    format!("/zerodb/proxy/{cluster}/status/{proxy}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_identities_are_valid() {
        assert_eq!(validate_cluster("test_cluster"), Ok(()));
        for addr in [
            "10.25.0.11:3000",
            "proxy-1.db.internal:3306",
            "[::1]:3000",
            "[fe80::1%eth0]:1",
        ] {
            assert_eq!(validate_proxy(addr), Ok(()), "{addr}");
        }
    }

    #[test]
    fn identities_that_would_corrupt_a_store_key_are_refused() {
        assert_eq!(validate_cluster(""), Err(IdentityError::ClusterLength));
        assert_eq!(
            validate_cluster("a/b"),
            Err(IdentityError::ClusterCharacter)
        );
        assert_eq!(
            validate_cluster("a\nb"),
            Err(IdentityError::ClusterCharacter)
        );
        assert_eq!(
            validate_cluster(&"c".repeat(129)),
            Err(IdentityError::ClusterLength)
        );
        assert_eq!(validate_proxy("10.25.0.11"), Err(IdentityError::ProxyShape));
        assert_eq!(validate_proxy(":3000"), Err(IdentityError::ProxyShape));
        assert_eq!(
            validate_proxy("a/b:3000"),
            Err(IdentityError::ProxyCharacter)
        );
        assert_eq!(
            validate_proxy("a\u{7}:3000"),
            Err(IdentityError::ProxyCharacter)
        );
        assert_eq!(
            validate_proxy("a->up:3000"),
            Err(IdentityError::ProxyCharacter)
        );
        assert_eq!(validate_proxy("a:0"), Err(IdentityError::ProxyPort));
        assert_eq!(validate_proxy("a:03000"), Err(IdentityError::ProxyPort));
        assert_eq!(validate_proxy("a:65536"), Err(IdentityError::ProxyPort));
        assert_eq!(
            validate_proxy(&format!("{}:1", "h".repeat(300))),
            Err(IdentityError::ProxyLength)
        );
    }

    #[test]
    fn dot_names_and_surrounding_whitespace_are_refused_as_ambiguous_keys() {
        assert_eq!(validate_cluster("."), Err(IdentityError::ClusterDots));
        assert_eq!(validate_cluster(".."), Err(IdentityError::ClusterDots));
        assert_eq!(
            validate_cluster(" test_cluster"),
            Err(IdentityError::ClusterCharacter)
        );
        assert_eq!(
            validate_cluster("test_cluster "),
            Err(IdentityError::ClusterCharacter)
        );
        // Dots inside a longer name are ordinary.
        assert_eq!(validate_cluster("..."), Ok(()));
        assert_eq!(validate_cluster("eu.west-1"), Ok(()));
        assert_eq!(validate_proxy("."), Err(IdentityError::ProxyShape));
        assert_eq!(validate_proxy(".."), Err(IdentityError::ProxyShape));
        assert_eq!(validate_proxy(".:3000"), Err(IdentityError::ProxyDots));
        assert_eq!(validate_proxy("..:3000"), Err(IdentityError::ProxyDots));
        assert_eq!(
            validate_proxy(" 10.25.0.11:3000"),
            Err(IdentityError::ProxyCharacter)
        );
        assert_eq!(
            validate_proxy("10.25.0.11:3000 "),
            Err(IdentityError::ProxyPort)
        );
    }

    #[test]
    fn status_key_matches_the_seed_format() {
        assert_eq!(
            status_key("test_cluster", "10.25.0.11:3000"),
            "/zerodb/proxy/test_cluster/status/10.25.0.11:3000"
        );
    }
}
