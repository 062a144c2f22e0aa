//! The simulated proxies of one sender thread: who they are, what their next heartbeat
//! says, and what an answer from the keeper changes.
//!
//! No socket and no clock here: the sender passes the instant in, so this part is the
//! same against the keeper and against the sink.

use std::time::Instant;

use hdrhistogram::Histogram;

use crate::auth::Key;
use crate::wire::{self, AckStatus, EncodeError, Heartbeat, Message, ProxyStatus, Token};

/// The port every simulated proxy claims (only a name: nothing is sent to it).
const PORT: u16 = 3306;
/// Most proxies the identities can name: `10.A.B.C` holds 2^24 addresses.
pub(crate) const MAX_PROXIES: usize = 1 << 24;
/// Largest round-trip time the histogram holds, in microseconds (a minute: anything
/// slower is recorded as this).
const RTT_MAX_US: u64 = 60_000_000;
/// Send instants remembered per proxy, at most: an answer to one of a proxy's latest
/// heartbeats is timed. One (the latest) is not enough under overload, where a proxy
/// sends again many times before the keeper's answer to an earlier one comes back.
const MAX_SEND_HISTORY: usize = 32;
/// Send instants remembered in all, at most (fewer per proxy in large fleets, whose
/// proxies each send less often).
const SEND_HISTORY_BUDGET: usize = 1 << 21;

/// The identity of proxy `index`: `10.(i>>16).(i>>8 & 255).(i & 255):3306`.
pub(crate) fn proxy_name(index: usize) -> String {
    format!(
        "10.{}.{}.{}:{PORT}",
        (index >> 16) & 255,
        (index >> 8) & 255,
        index & 255
    )
}

/// How far a simulated proxy has come with the keeper.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Stage {
    /// No `Ack(ready)` yet.
    Unregistered,
    /// Registered: the keeper acknowledged a `ready` heartbeat.
    Ready,
    /// The keeper acknowledged an `up` heartbeat.
    Up,
}

/// One simulated proxy.
#[derive(Clone, Copy, Debug)]
struct SimProxy {
    /// The seq of the latest heartbeat sent (0: none yet).
    seq: u64,
    /// The latest non-zero slot the keeper handed out.
    slot: u32,
    stage: Stage,
}

/// When a heartbeat was sent: its seq, and microseconds since the fleet's epoch.
#[derive(Clone, Copy, Debug, Default)]
struct SendMark {
    /// 0: none (seqs start at 1), or already answered.
    seq: u64,
    at_us: u64,
}

/// What one sender thread counted during one phase.
#[derive(Debug)]
pub(crate) struct ShardStats {
    /// Datagrams the kernel accepted for sending.
    pub(crate) sent: u64,
    /// Sends that failed for another reason than a full buffer.
    pub(crate) send_errors: u64,
    /// `Ack`s received.
    pub(crate) acked: u64,
    /// `Challenge`s received.
    pub(crate) challenges: u64,
    /// Other valid answers (`Restart`, `Superseded`, ...).
    pub(crate) other: u64,
    /// Datagrams that failed to open with the key.
    pub(crate) invalid: u64,
    /// Round-trip times of answers to a proxy's latest heartbeat, in microseconds.
    pub(crate) rtt: Histogram<u64>,
}

impl ShardStats {
    pub(crate) fn new() -> ShardStats {
        ShardStats {
            sent: 0,
            send_errors: 0,
            acked: 0,
            challenges: 0,
            other: 0,
            invalid: 0,
            // Constant bounds that the crate accepts (low >= 1, high >= 2 * low, 3 digits).
            rtt: Histogram::new_with_bounds(1, RTT_MAX_US, 3).expect("valid constant bounds"),
        }
    }

    /// Adds `other`'s counts to these.
    pub(crate) fn merge(&mut self, other: &ShardStats) {
        self.sent += other.sent;
        self.send_errors += other.send_errors;
        self.acked += other.acked;
        self.challenges += other.challenges;
        self.other += other.other;
        self.invalid += other.invalid;
        // Both histograms have the same bounds, and saturating records never exceed them.
        let _ = self.rtt.add(&other.rtt);
    }
}

/// The proxies of one sender thread, and what they share: the key, the cluster, the
/// latest token and config version.
///
/// The keeper's token is not tied to a proxy, so the latest one received by the thread
/// serves all its proxies.
#[derive(Debug)]
pub(crate) struct Fleet {
    key: Key,
    cluster: String,
    /// Incarnation of proxy 0; proxy `i` has `base + i`, so an answer maps back.
    base_incarnation: u64,
    /// Global index of this thread's first proxy.
    first: usize,
    names: Vec<String>,
    proxies: Vec<SimProxy>,
    /// `history` send marks per proxy, proxy-major, slot `seq % history`.
    marks: Vec<SendMark>,
    history: usize,
    /// The zero of `SendMark::at_us`.
    epoch: Instant,
    token: Token,
    config_version: u64,
    lost_after_ms: Option<u32>,
    /// Next proxy to send for, round-robin.
    cursor: usize,
    /// The first `paused` proxies send nothing (the lost probe).
    paused: usize,
    /// Whether round trips are recorded (only in the timed phase).
    record_rtt: bool,
    /// This phase's counts.
    pub(crate) stats: ShardStats,
}

impl Fleet {
    /// Proxies `first .. first + count`, none registered.
    pub(crate) fn new(
        key: Key,
        cluster: &str,
        base_incarnation: u64,
        first: usize,
        count: usize,
    ) -> Fleet {
        let proxy = SimProxy {
            seq: 0,
            slot: 0,
            stage: Stage::Unregistered,
        };
        let history = (SEND_HISTORY_BUDGET / count.max(1)).clamp(1, MAX_SEND_HISTORY);
        Fleet {
            key,
            cluster: cluster.to_owned(),
            base_incarnation,
            first,
            names: (first..first + count).map(proxy_name).collect(),
            proxies: vec![proxy; count],
            marks: vec![SendMark::default(); count * history],
            history,
            epoch: Instant::now(),
            token: Token::NONE,
            config_version: 0,
            lost_after_ms: None,
            cursor: 0,
            paused: 0,
            record_rtt: false,
            stats: ShardStats::new(),
        }
    }

    /// Marks every proxy `up` with a made-up slot and token, for the sink, which reads
    /// nothing: the datagrams are then exactly as large as against a keeper.
    pub(crate) fn pretend_registered(&mut self) {
        self.token = Token([0x5a; 16]);
        for (i, p) in self.proxies.iter_mut().enumerate() {
            p.stage = Stage::Up;
            p.slot = u32::try_from(i + 1).unwrap_or(u32::MAX);
        }
    }

    /// Number of proxies.
    pub(crate) fn len(&self) -> usize {
        self.proxies.len()
    }

    /// Identity of local proxy `local`.
    pub(crate) fn name(&self, local: usize) -> &str {
        &self.names[local]
    }

    /// The latest `lost_after_ms` an `Ack` gave.
    pub(crate) fn lost_after_ms(&self) -> Option<u32> {
        self.lost_after_ms
    }

    /// Stops the first `count` proxies from sending (0: all send).
    pub(crate) fn pause_first(&mut self, count: usize) {
        self.paused = count.min(self.proxies.len());
    }

    /// Whether answers to latest heartbeats are timed.
    pub(crate) fn set_record_rtt(&mut self, on: bool) {
        self.record_rtt = on;
    }

    /// This phase's counts, replaced by zeros for the next phase.
    pub(crate) fn take_stats(&mut self) -> ShardStats {
        std::mem::replace(&mut self.stats, ShardStats::new())
    }

    /// Local indexes of the proxies that have not reached `stage`, lowest first.
    pub(crate) fn behind(&self, stage: Stage) -> impl Iterator<Item = usize> + '_ {
        self.proxies
            .iter()
            .enumerate()
            .filter(move |(_, p)| p.stage < stage)
            .map(|(i, _)| i)
    }

    /// Whether local proxy `local` has reached `stage`.
    pub(crate) fn reached(&self, local: usize, stage: Stage) -> bool {
        self.proxies[local].stage >= stage
    }

    /// The next proxy that sends, round-robin over those not paused; `None` if all are.
    pub(crate) fn next_sender(&mut self) -> Option<usize> {
        let n = self.proxies.len();
        if self.paused >= n {
            return None;
        }
        if self.cursor < self.paused || self.cursor >= n {
            self.cursor = self.paused;
        }
        let local = self.cursor;
        self.cursor += 1;
        Some(local)
    }

    /// Encodes the next heartbeat of local proxy `local` into `out`: seq + 1, the
    /// proxy's slot, the thread's token and config version. Returns its length.
    pub(crate) fn encode(
        &mut self,
        local: usize,
        status: ProxyStatus,
        now: Instant,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let at_us = self.micros(now);
        let p = &mut self.proxies[local];
        p.seq += 1;
        self.marks[local * self.history + (p.seq % self.history as u64) as usize] =
            SendMark { seq: p.seq, at_us };
        let heartbeat = Heartbeat {
            cluster: &self.cluster,
            proxy: &self.names[local],
            incarnation: self.base_incarnation + (self.first + local) as u64,
            seq: p.seq,
            status,
            config_version: self.config_version,
            slot: p.slot,
            token: self.token,
        };
        wire::encode(&Message::Heartbeat(heartbeat), &self.key, out)
    }

    /// Takes in one datagram received from the keeper at `now`.
    pub(crate) fn handle(&mut self, datagram: &[u8], now: Instant) {
        let Ok(message) = wire::open(datagram, &self.key) else {
            self.stats.invalid += 1;
            return;
        };
        match message {
            Message::Ack(ack) => {
                self.stats.acked += 1;
                self.token = ack.token;
                self.config_version = ack.config_version;
                self.lost_after_ms = Some(ack.lost_after_ms);
                let Some(local) = self.local(ack.incarnation) else {
                    return;
                };
                let p = &mut self.proxies[local];
                if ack.slot != 0 {
                    p.slot = ack.slot;
                }
                match ack.status {
                    AckStatus::Ready => p.stage = p.stage.max(Stage::Ready),
                    AckStatus::Up => p.stage = Stage::Up,
                    AckStatus::Gone => {}
                }
                // Only an answer to one of the latest heartbeats has a known send
                // instant; its mark is cleared so that a duplicate is not timed again.
                let now_us = self.micros(now);
                let mark = &mut self.marks
                    [local * self.history + (ack.seq % self.history as u64) as usize];
                if mark.seq == ack.seq && mark.seq != 0 {
                    mark.seq = 0;
                    if self.record_rtt {
                        let rtt = now_us.saturating_sub(mark.at_us).max(1);
                        self.stats.rtt.saturating_record(rtt);
                    }
                }
            }
            Message::Challenge(challenge) => {
                self.stats.challenges += 1;
                self.token = challenge.token;
            }
            _ => self.stats.other += 1,
        }
    }

    /// Microseconds from the fleet's epoch to `at`.
    fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    /// The local index of the proxy with `incarnation`, if it is one of this thread's.
    fn local(&self, incarnation: u64) -> Option<usize> {
        let global = usize::try_from(incarnation.checked_sub(self.base_incarnation)?).ok()?;
        let local = global.checked_sub(self.first)?;
        (local < self.proxies.len()).then_some(local)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::wire::Ack;

    fn fleet() -> Fleet {
        Fleet::new(
            Key::new(&[3; 32]).expect("valid"),
            "bench",
            1_000_000,
            100,
            4,
        )
    }

    #[test]
    fn identities_spread_the_index_over_three_octets() {
        assert_eq!(proxy_name(0), "10.0.0.0:3306");
        assert_eq!(proxy_name(0x01_02_03), "10.1.2.3:3306");
        assert_eq!(proxy_name(MAX_PROXIES - 1), "10.255.255.255:3306");
        assert!(crate::identity::validate_proxy(&proxy_name(70_000)).is_ok());
    }

    fn ack(f: &Fleet, incarnation: u64, seq: u64, status: AckStatus) -> Vec<u8> {
        let ack = Ack {
            incarnation,
            seq,
            status,
            interval_ms: 1000,
            lost_after_ms: 10_000,
            config_version: 7,
            slot: 42,
            token: Token([9; 16]),
        };
        wire::encode_to_vec(&Message::Ack(ack), &f.key).expect("fits")
    }

    #[test]
    fn an_ack_registers_its_proxy_and_its_round_trip_is_timed_once() {
        let mut f = fleet();
        f.set_record_rtt(true);
        let t0 = Instant::now();
        let mut buf = [0u8; wire::MAX_DATAGRAM];
        f.encode(2, ProxyStatus::Ready, t0, &mut buf).expect("fits");
        let bytes = ack(&f, 1_000_102, 1, AckStatus::Ready);
        f.handle(&bytes, t0 + Duration::from_micros(250));
        assert!(f.reached(2, Stage::Ready));
        assert_eq!(f.behind(Stage::Ready).collect::<Vec<_>>(), vec![0, 1, 3]);
        assert_eq!(f.stats.rtt.len(), 1);
        assert_eq!(f.lost_after_ms(), Some(10_000));
        // A second copy of the answer is not timed twice.
        f.handle(&bytes, t0 + Duration::from_micros(900));
        assert_eq!(f.stats.rtt.len(), 1);
        assert_eq!(f.stats.acked, 2);
    }

    #[test]
    fn an_answer_to_an_earlier_heartbeat_is_timed_from_that_heartbeat() {
        let mut f = fleet();
        f.set_record_rtt(true);
        let t0 = Instant::now();
        let mut buf = [0u8; wire::MAX_DATAGRAM];
        for i in 0..3 {
            f.encode(0, ProxyStatus::Up, t0 + Duration::from_millis(i), &mut buf)
                .expect("fits");
        }
        // The keeper answers seq 1 after the proxy has sent seq 2 and 3.
        f.handle(
            &ack(&f, 1_000_100, 1, AckStatus::Up),
            t0 + Duration::from_millis(5),
        );
        assert_eq!(f.stats.rtt.len(), 1);
        assert!(f.stats.rtt.equivalent(f.stats.rtt.max(), 5_000));
        // An answer for another thread's proxy changes nothing here but the token.
        f.handle(
            &ack(&f, 1_000_000, 1, AckStatus::Up),
            t0 + Duration::from_millis(6),
        );
        assert_eq!(f.stats.rtt.len(), 1);
        assert!(!f.reached(1, Stage::Up));
    }

    #[test]
    fn paused_proxies_are_skipped_round_robin() {
        let mut f = fleet();
        f.pause_first(2);
        let order: Vec<_> = (0..5).filter_map(|_| f.next_sender()).collect();
        assert_eq!(order, vec![2, 3, 2, 3, 2]);
        f.pause_first(10);
        assert_eq!(f.next_sender(), None);
    }
}
