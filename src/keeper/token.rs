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
//! Layout (16 bytes, opaque to proxies): epoch (u32 BE), time bucket (u32 BE), the first
//! 8 bytes of `HMAC-SHA256(secret, "zk token" || epoch || bucket)`.

use std::time::Duration;

use crate::auth::Key;
use crate::time::Instant;
use crate::wire::Token;

/// Mints and checks tokens for one keeper epoch.
#[derive(Debug)]
pub(crate) struct TokenMinter {
    epoch: u32,
    secret: Key,
    granularity_nanos: u64,
    max_age_buckets: u32,
    /// The MAC of each recent bucket, so checking a token costs a comparison, not a MAC.
    cache: Vec<Option<(u32, [u8; 8])>>,
}

/// Whether a token may count.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Freshness {
    /// Minted in this epoch at most `validity` ago; `age` in buckets.
    Fresh { age_buckets: u32 },
    /// Missing, from another epoch, too old, or forged.
    Stale,
}

impl TokenMinter {
    /// A minter whose tokens are valid for `validity`, measured in buckets of `granularity`.
    pub(crate) fn new(
        epoch: u32,
        secret: Key,
        granularity: Duration,
        validity: Duration,
    ) -> TokenMinter {
        let granularity_nanos = u64::try_from(granularity.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1_000_000);
        let validity_nanos = u64::try_from(validity.as_nanos()).unwrap_or(u64::MAX);
        let max_age_buckets =
            u32::try_from(validity_nanos.div_ceil(granularity_nanos)).unwrap_or(u32::MAX);
        let slots = (max_age_buckets as usize + 1).min(4096);
        TokenMinter {
            epoch,
            secret,
            granularity_nanos,
            max_age_buckets,
            cache: vec![None; slots],
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

    /// A token minted now.
    pub(crate) fn mint(&mut self, now: Instant) -> Token {
        let bucket = self.bucket(now);
        let mac = self.mac(bucket);
        let mut bytes = [0u8; 16];
        bytes[0..4].copy_from_slice(&self.epoch.to_be_bytes());
        bytes[4..8].copy_from_slice(&bucket.to_be_bytes());
        bytes[8..16].copy_from_slice(&mac);
        Token(bytes)
    }

    /// Whether `token` counts at `now`.
    pub(crate) fn check(&mut self, token: &Token, now: Instant) -> Freshness {
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
        let expected = self.mac(bucket);
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

    fn mac(&mut self, bucket: u32) -> [u8; 8] {
        let slot = bucket as usize % self.cache.len();
        if let Some((cached, mac)) = self.cache[slot]
            && cached == bucket
        {
            return mac;
        }
        let mut input = [0u8; 16];
        input[0..8].copy_from_slice(b"zk token");
        input[8..12].copy_from_slice(&self.epoch.to_be_bytes());
        input[12..16].copy_from_slice(&bucket.to_be_bytes());
        let tag = self.secret.tag(&input);
        let mut mac = [0u8; 8];
        mac.copy_from_slice(&tag[..8]);
        self.cache[slot] = Some((bucket, mac));
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minter(epoch: u32) -> TokenMinter {
        let secret = Key::new(&[3; 32]).expect("valid length");
        TokenMinter::new(
            epoch,
            secret,
            Duration::from_millis(500),
            Duration::from_secs(3),
        )
    }

    #[test]
    fn a_token_is_fresh_until_its_validity_runs_out() {
        let mut m = minter(1);
        let t = m.mint(Instant::from_millis(1_000));
        assert_eq!(
            m.check(&t, Instant::from_millis(1_000)),
            Freshness::Fresh { age_buckets: 0 }
        );
        assert_eq!(
            m.check(&t, Instant::from_millis(3_999)),
            Freshness::Fresh { age_buckets: 5 }
        );
        assert_eq!(
            m.check(&t, Instant::from_millis(4_000)),
            Freshness::Fresh { age_buckets: 6 }
        );
        assert_eq!(m.check(&t, Instant::from_millis(4_500)), Freshness::Stale);
    }

    #[test]
    fn tokens_of_another_epoch_or_forged_are_stale() {
        let mut old = minter(1);
        let mut new = minter(2);
        let t = old.mint(Instant::ZERO);
        assert_eq!(new.check(&t, Instant::ZERO), Freshness::Stale);
        let mut forged = new.mint(Instant::ZERO);
        forged.0[15] ^= 1;
        assert_eq!(new.check(&forged, Instant::ZERO), Freshness::Stale);
        assert_eq!(new.check(&Token::NONE, Instant::ZERO), Freshness::Stale);
    }
}
