//! Freshness tokens: the keeper's proof that a request was sent recently.
//!
//! Every keeper answer carries a token, and every request echoes the latest token its
//! sender received. A request counts only if its token is recent; otherwise it gets a
//! `Challenge` with a fresh token and nothing else happens (the cookie check of DTLS,
//! QUIC Retry and WireGuard). Together with `(incarnation, seq)` ordering this defeats
//! replays even when the keeper has forgotten a proxy's last seq: after a keeper restart
//! (the epoch changes) and after a tombstone expires (the token is older than the
//! tombstone's lifetime).
//!
//! A token is bound to the address it was sent to: a request counts only if its token
//! was minted for the address it comes from. A datagram captured and replayed from a
//! spoofed source is stale there, and gets only a `Challenge` no larger than itself, so
//! the keeper reflects nothing to a third party (as DTLS cookies and QUIC's address
//! validation). A proxy whose address changes (a NAT rebinding) is challenged once.
//!
//! Layout (16 bytes, opaque to proxies): epoch (u32 BE), time bucket (u32 BE), then
//! `SipHash-2-4(k, epoch || bucket || address)` (u64 BE), where `k` is 16 bytes of this
//! run's random token secret and the address is its family byte (4 or 6), the IP's
//! bytes and the port (BE). SipHash is a keyed PRF made for short inputs: minting and
//! checking cost about 20 ns each, so every answer's token is bound to its address and
//! every request's checked against its source, with no cache.

use std::hash::Hasher;
use std::net::SocketAddr;
use std::time::Duration;

use siphasher::sip::SipHasher24;

use crate::time::Instant;
use crate::wire::Token;

/// Mints and checks tokens for one keeper epoch.
#[derive(Debug)]
pub(crate) struct TokenMinter {
    epoch: u32,
    key: [u8; 16],
    granularity_nanos: u64,
    max_age_buckets: u32,
}

/// Whether a token may count.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Freshness {
    /// Minted in this epoch at most `validity` ago, for this address; `age` in buckets.
    Fresh { age_buckets: u32 },
    /// Missing, from another epoch, too old, minted for another address, or forged.
    Stale,
}

impl TokenMinter {
    /// A minter keyed by `secret` (this run's random bytes) whose tokens are valid for
    /// `validity`, measured in buckets of `granularity`.
    pub(crate) fn new(
        epoch: u32,
        secret: &[u8; 32],
        granularity: Duration,
        validity: Duration,
    ) -> TokenMinter {
        let granularity_nanos = u64::try_from(granularity.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1_000_000);
        let validity_nanos = u64::try_from(validity.as_nanos()).unwrap_or(u64::MAX);
        let max_age_buckets =
            u32::try_from(validity_nanos.div_ceil(granularity_nanos)).unwrap_or(u32::MAX);
        // The token key is its own purpose's: derived, so no other use of the secret
        // shares it.
        let derived = crate::auth::derive(secret, "token");
        let mut key = [0u8; 16];
        key.copy_from_slice(&derived[..16]);
        TokenMinter {
            epoch,
            key,
            granularity_nanos,
            max_age_buckets,
        }
    }

    /// The epoch whose tokens this minter makes.
    pub(crate) fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The epoch a token names (whether or not it is genuine).
    pub(crate) fn epoch_of(token: &Token) -> u32 {
        let t = &token.0;
        u32::from_be_bytes([t[0], t[1], t[2], t[3]])
    }

    /// Whether `token` was minted in a later bucket than the moment `at` (a token that
    /// counts is genuine, so its bucket is the keeper's own).
    pub(crate) fn minted_after(&self, token: &Token, at: Instant) -> bool {
        let t = &token.0;
        let minted = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
        // Buckets wrap (see `check`): later means less than half the range ahead.
        let ahead = minted.wrapping_sub(self.bucket(at));
        ahead != 0 && ahead < u32::MAX / 2
    }

    /// The largest age, in buckets, a token may have and still count.
    pub(crate) fn max_age_buckets(&self) -> u32 {
        self.max_age_buckets
    }

    /// A token minted now, for an answer to `to`.
    pub(crate) fn mint(&self, now: Instant, to: SocketAddr) -> Token {
        let bucket = self.bucket(now);
        let mut bytes = [0u8; 16];
        bytes[0..4].copy_from_slice(&self.epoch.to_be_bytes());
        bytes[4..8].copy_from_slice(&bucket.to_be_bytes());
        bytes[8..16].copy_from_slice(&self.mac(bucket, to).to_be_bytes());
        Token(bytes)
    }

    /// Whether `token`, in a request from `from`, counts at `now`.
    pub(crate) fn check(&self, token: &Token, now: Instant, from: SocketAddr) -> Freshness {
        let t = &token.0;
        let epoch = Self::epoch_of(token);
        let bucket = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
        if epoch != self.epoch {
            return Freshness::Stale;
        }
        // Buckets wrap after 2^32 granules (about 50 days at 1 ms, 68 years at 500 ms);
        // the wrapping distance is still the age.
        let age = self.bucket(now).wrapping_sub(bucket);
        if age > self.max_age_buckets {
            return Freshness::Stale;
        }
        let expected = self.mac(bucket, from).to_be_bytes();
        // Constant-time comparison: the tag is a secret-derived value.
        let diff = expected
            .iter()
            .zip(&t[8..16])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            Freshness::Fresh { age_buckets: age }
        } else {
            Freshness::Stale
        }
    }

    fn bucket(&self, now: Instant) -> u32 {
        // Truncation is the wrap documented in `check`.
        (now.as_nanos() / self.granularity_nanos) as u32
    }

    fn mac(&self, bucket: u32, address: SocketAddr) -> u64 {
        let mut hasher = SipHasher24::new_with_key(&self.key);
        hasher.write(&self.epoch.to_be_bytes());
        hasher.write(&bucket.to_be_bytes());
        match address {
            SocketAddr::V4(a) => {
                hasher.write(&[4]);
                hasher.write(&a.ip().octets());
            }
            SocketAddr::V6(a) => {
                hasher.write(&[6]);
                hasher.write(&a.ip().octets());
            }
        }
        hasher.write(&address.port().to_be_bytes());
        hasher.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minter(epoch: u32) -> TokenMinter {
        TokenMinter::new(
            epoch,
            &[3; 32],
            Duration::from_millis(500),
            Duration::from_secs(3),
        )
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("an address")
    }

    const A: &str = "127.0.0.1:4000";

    #[test]
    fn a_token_is_fresh_until_its_validity_runs_out() {
        let m = minter(1);
        let t = m.mint(Instant::from_millis(1_000), addr(A));
        assert_eq!(
            m.check(&t, Instant::from_millis(1_000), addr(A)),
            Freshness::Fresh { age_buckets: 0 }
        );
        assert_eq!(
            m.check(&t, Instant::from_millis(3_999), addr(A)),
            Freshness::Fresh { age_buckets: 5 }
        );
        assert_eq!(
            m.check(&t, Instant::from_millis(4_000), addr(A)),
            Freshness::Fresh { age_buckets: 6 }
        );
        assert_eq!(
            m.check(&t, Instant::from_millis(4_500), addr(A)),
            Freshness::Stale
        );
    }

    #[test]
    fn tokens_of_another_epoch_or_forged_are_stale() {
        let old = minter(1);
        let new = minter(2);
        let t = old.mint(Instant::ZERO, addr(A));
        assert_eq!(new.check(&t, Instant::ZERO, addr(A)), Freshness::Stale);
        let mut forged = new.mint(Instant::ZERO, addr(A));
        forged.0[15] ^= 1;
        assert_eq!(new.check(&forged, Instant::ZERO, addr(A)), Freshness::Stale);
        assert_eq!(
            new.check(&Token::NONE, Instant::ZERO, addr(A)),
            Freshness::Stale
        );
    }

    #[test]
    fn a_token_counts_only_from_the_address_it_was_sent_to() {
        let m = minter(1);
        let t = m.mint(Instant::ZERO, addr(A));
        assert_eq!(
            m.check(&t, Instant::ZERO, addr(A)),
            Freshness::Fresh { age_buckets: 0 }
        );
        for other in [
            "127.0.0.1:4001",
            "127.0.0.2:4000",
            "[::1]:4000",
            "[::ffff:127.0.0.1]:4000",
        ] {
            assert_eq!(
                m.check(&t, Instant::ZERO, addr(other)),
                Freshness::Stale,
                "{other}"
            );
        }
        // Another run's secret makes other tokens for the same address.
        let other_run = TokenMinter::new(
            1,
            &[4; 32],
            Duration::from_millis(500),
            Duration::from_secs(3),
        );
        assert_eq!(
            other_run.check(&t, Instant::ZERO, addr(A)),
            Freshness::Stale
        );
    }
}
