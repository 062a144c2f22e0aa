//! Where the etcd store keeps each fact: the key layout of one root.

use super::super::record;
use crate::keeper::Status;

/// The private prefix's marker segment: a root's segments may not start with `.`, so no
/// root's private keys can fall under another root's sections.
const MARKER: &str = ".zk";

/// The keys of one root. Status keys are `{root}/{cluster}/status/{proxy}`; everything
/// else lives under the private prefix `/zerokeeper{root}/.zk/`, in sections.
#[derive(Clone, Debug)]
pub(super) struct Keys {
    root: String,
    private: String,
}

/// Why a root was refused.
pub(super) fn check_root(root: &str) -> Result<(), String> {
    let refuse = |why: &str| {
        Err(format!(
            "the etcd root {root:?} {why} (a root is like /zerodb/proxy: one or more \
             segments of letters, digits, '_', '-' and '.', none starting with '.', at most \
             200 bytes, no trailing '/')"
        ))
    };
    if root.len() > 200 {
        return refuse("is too long");
    }
    let Some(rest) = root.strip_prefix('/') else {
        return refuse("does not start with '/'");
    };
    for segment in rest.split('/') {
        if segment.is_empty() {
            return refuse("has an empty segment");
        }
        if segment.starts_with('.') {
            return refuse("has a segment starting with '.'");
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return refuse("has a character outside letters, digits, '_', '-' and '.'");
        }
    }
    Ok(())
}

impl Keys {
    /// The keys of `root`, which [`check_root`] accepted.
    pub(super) fn new(root: &str) -> Keys {
        Keys {
            root: root.to_owned(),
            private: format!("/zerokeeper{root}/{MARKER}/"),
        }
    }

    /// The root, as configured.
    pub(super) fn root(&self) -> &str {
        &self.root
    }

    /// The prefix of everything but the status keys.
    pub(super) fn private(&self) -> &str {
        &self.private
    }

    /// `{root}/{cluster}/status/{proxy}`, whose value is the plain status.
    pub(super) fn status(&self, cluster: &str, proxy: &str) -> Vec<u8> {
        format!("{}/{cluster}/status/{proxy}", self.root).into_bytes()
    }

    /// The prefix of every status key (and of anything else under the root).
    pub(super) fn status_scan(&self) -> Vec<u8> {
        format!("{}/", self.root).into_bytes()
    }

    /// The (cluster, proxy) of a status key: a key under the root of exactly three
    /// segments, the middle one `status`. Anything else under the root is not ours.
    pub(super) fn parse_status<'k>(&self, key: &'k [u8]) -> Option<(&'k [u8], &'k [u8])> {
        let rest = key.strip_prefix(self.status_scan().as_slice())?;
        let slash = rest.iter().position(|&b| b == b'/')?;
        let (cluster, rest) = rest.split_at(slash);
        let proxy = rest.strip_prefix(b"/status/")?;
        (!proxy.contains(&b'/')).then_some((cluster, proxy))
    }

    fn section(&self, name: &str) -> Vec<u8> {
        format!("{}{name}/", self.private).into_bytes()
    }

    /// A meta entry (`schema`, `epoch`, `generation`, `revision`, `materialised`, `writer`).
    pub(super) fn meta(&self, name: &str) -> Vec<u8> {
        let mut key = self.section("meta");
        key.extend_from_slice(name.as_bytes());
        key
    }

    /// The prefix of the meta entries.
    pub(super) fn meta_scan(&self) -> Vec<u8> {
        self.section("meta")
    }

    /// A proxy's record: the section, then the cluster escaped, then the proxy.
    pub(super) fn proxy(&self, cluster: &str, proxy: &str) -> Vec<u8> {
        let mut key = self.proxies();
        record::push_proxy_key(&mut key, cluster, proxy);
        key
    }

    /// The prefix of the proxy records.
    pub(super) fn proxies(&self) -> Vec<u8> {
        self.section("proxies")
    }

    /// A config version's pointer (its value is the revision of the blob holding it).
    pub(super) fn config(&self, cluster: &str, version: u64) -> Vec<u8> {
        let mut key = self.configs();
        record::push_config_key(&mut key, cluster, version);
        key
    }

    /// The prefix of the config pointers.
    pub(super) fn configs(&self) -> Vec<u8> {
        self.section("configs")
    }

    /// A cluster's settings: the section, then the cluster escaped.
    pub(super) fn settings(&self, cluster: &str) -> Vec<u8> {
        let mut key = self.clusters();
        record::push_cluster(&mut key, cluster);
        key
    }

    /// The prefix of the clusters' settings.
    pub(super) fn clusters(&self) -> Vec<u8> {
        self.section("clusters")
    }

    /// The header of the blob made by the change of `revision`; its parts follow it.
    pub(super) fn blob(&self, revision: u64) -> Vec<u8> {
        let mut key = self.blobs();
        key.extend_from_slice(format!("{revision:020}").as_bytes());
        key
    }

    /// A part of the blob of `revision`.
    pub(super) fn blob_part(&self, revision: u64, part: u32) -> Vec<u8> {
        let mut key = self.blob(revision);
        key.extend_from_slice(format!("/{part:06}").as_bytes());
        key
    }

    /// The prefix of the blobs.
    pub(super) fn blobs(&self) -> Vec<u8> {
        self.section("blob")
    }

    /// The log entry of `revision`.
    pub(super) fn log(&self, revision: u64) -> Vec<u8> {
        let mut key = self.section("log");
        key.extend_from_slice(format!("{revision:020}").as_bytes());
        key
    }

    /// The prefix of the log.
    pub(super) fn logs(&self) -> Vec<u8> {
        self.section("log")
    }

    /// The audit entry of the change of `revision`.
    pub(super) fn audit(&self, revision: u64) -> Vec<u8> {
        let mut key = self.section("audit");
        key.extend_from_slice(format!("{revision:020}").as_bytes());
        key
    }

    /// The prefix of the audit.
    pub(super) fn audits(&self) -> Vec<u8> {
        self.section("audit")
    }

    /// The revision at the end of a log, audit or blob header key under `prefix`.
    pub(super) fn revision_of(prefix: &[u8], key: &[u8]) -> Option<u64> {
        let digits = key.strip_prefix(prefix)?;
        if digits.len() != 20 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    }
}

/// The first key after every key that starts with `prefix` (etcd's range end of a prefix).
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xFF: etcd reads `\0` as "to the end of the keyspace".
    vec![0]
}

/// The value of a status key.
pub(super) fn status_value(status: Status) -> &'static [u8] {
    status.as_str().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_keys_are_the_seeds_and_parse_back() {
        let keys = Keys::new("/zerodb/proxy");
        let key = keys.status("test_cluster", "10.0.0.1:3307");
        assert_eq!(key, b"/zerodb/proxy/test_cluster/status/10.0.0.1:3307");
        assert_eq!(
            keys.parse_status(&key),
            Some((&b"test_cluster"[..], &b"10.0.0.1:3307"[..]))
        );
        for other in [
            &b"/zerodb/proxy/c/config"[..],
            b"/zerodb/proxy/c/status/a/b",
            b"/zerodb/proxy/x/c/status/a",
            b"/zerodb/proxyz/c/status/a",
        ] {
            assert_eq!(keys.parse_status(other), None, "{other:?}");
        }
    }

    #[test]
    fn roots_that_could_collide_are_refused() {
        for good in ["/zerodb/proxy", "/a", "/a.b/c-d/e_f"] {
            assert_eq!(check_root(good), Ok(()), "{good}");
        }
        for bad in ["", "/", "zerodb", "/a/", "/a//b", "/a/.zk", "/a b", "/é"] {
            assert!(check_root(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn private_sections_of_nested_roots_never_overlap() {
        let outer = Keys::new("/a");
        let inner = Keys::new("/a/proxies");
        assert!(!inner.meta("epoch").starts_with(&outer.proxies()));
        assert!(!inner.proxies().starts_with(&outer.proxies()));
        assert_eq!(outer.private(), "/zerokeeper/a/.zk/");
    }

    #[test]
    fn prefix_ends_are_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xFF"), b"b");
        assert_eq!(prefix_end(b"\xFF"), b"\0");
    }
}
