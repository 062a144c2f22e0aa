//! The keeper's answers: what waits to be sent, and its encoding into the driver's buffer.
//!
//! Answers are queued as [`Pending`] and encoded only in [`Keeper::poll_transmit`], into
//! the driver's buffer, so answering allocates nothing. Every answer is bounded by the
//! size of the datagram it answers (no amplification).

use std::sync::Arc;

use crate::auth::KeyIndex;
use crate::configdoc::{CHUNK_SIZE, ConfigVersion};
use crate::keeper::transition::Stamp;
use crate::keeper::{Keeper, KeeperConfig, Status, Transmit};
use crate::seal::ChunkSealer;
use crate::time::Instant;
use crate::wire::{self, AckStatus, ConfigId, Message, Token, Trailer, Version};

use std::net::SocketAddr;

/// Most (cluster, config, key) sealers kept at once; past that the cache starts over.
pub(crate) const MAX_SEALERS: usize = 256;

/// An answer waiting to be encoded.
#[derive(Debug)]
pub(crate) struct Pending {
    to: SocketAddr,
    key: KeyIndex,
    /// The protocol version of the datagram answered, and so of the answer.
    version: Version,
    /// The size of the datagram answered: the answer may not be larger.
    budget: usize,
    answer: Answer,
}

#[derive(Debug)]
pub(crate) enum Answer {
    Ack {
        stamp: Stamp,
        status: AckStatus,
        config_version: u64,
        config: ConfigId,
        slot: u32,
        token: Token,
    },
    Challenge {
        stamp: Stamp,
        token: Token,
    },
    Restart {
        stamp: Stamp,
    },
    Leave {
        stamp: Stamp,
    },
    Superseded {
        stamp: Stamp,
        winner: u64,
    },
    Chunk {
        stamp: Stamp,
        /// The cluster's name (sealed chunks' keys are the cluster's own).
        cluster: Arc<str>,
        config: Arc<ConfigVersion>,
        index: u32,
    },
}

/// Where and how to answer the datagram being handled.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reply {
    pub(crate) to: SocketAddr,
    pub(crate) key: KeyIndex,
    pub(crate) version: Version,
    pub(crate) budget: usize,
    pub(crate) stamp: Stamp,
    /// The config id the datagram reports running (version 2; [`ConfigId::NONE`]
    /// otherwise).
    pub(crate) config: ConfigId,
    /// Answer with an `Ack` whatever else holds (a `ConfigReject` is always acked).
    pub(crate) must_ack: bool,
}

impl Reply {
    /// `answer`, to this reply's address, within its budget.
    pub(crate) fn with(self, answer: Answer) -> Pending {
        self.within(self.budget, answer)
    }

    /// `answer`, to this reply's address, within `budget` bytes.
    pub(crate) fn within(self, budget: usize, answer: Answer) -> Pending {
        Pending {
            to: self.to,
            key: self.key,
            version: self.version,
            budget,
            answer,
        }
    }
}

impl Keeper {
    /// Queues `answer` to be sent.
    pub(crate) fn answer(&mut self, reply: Reply, answer: Answer) {
        self.pending.push_back(reply.with(answer));
    }

    /// Queues an `Ack` in the record's status.
    pub(crate) fn ack(&mut self, reply: Reply, slot: u32, status: Status, now: Instant) {
        let ack = self.ack_for(reply, slot, ack_status(status), now);
        self.pending.push_back(ack);
    }

    /// Acknowledges a registration (or a new life) once it is durable: a proxy told it is
    /// registered must still be after a keeper crash.
    pub(crate) fn ack_registration(&mut self, reply: Reply, slot: u32, now: Instant) {
        let ack = self.ack_for(reply, slot, AckStatus::Ready, now);
        self.answer_when_durable(ack);
    }

    pub(crate) fn ack_for(
        &mut self,
        reply: Reply,
        slot: u32,
        status: AckStatus,
        now: Instant,
    ) -> Pending {
        let (config_version, config) = self
            .registry
            .get(slot)
            .map(|r| {
                let c = &self.registry.cluster(r.cluster).config;
                (c.version, c.id)
            })
            .unwrap_or((0, ConfigId::NONE));
        let token = self.tokens.mint(now, reply.to);
        reply.with(Answer::Ack {
            stamp: reply.stamp,
            status,
            config_version,
            config,
            slot,
            token,
        })
    }

    /// An `Ack(gone)`: the sender is not (or no longer) registered.
    pub(crate) fn gone(&mut self, reply: Reply, now: Instant) -> Answer {
        let token = self.tokens.mint(now, reply.to);
        Answer::Ack {
            stamp: reply.stamp,
            status: AckStatus::Gone,
            config_version: 0,
            config: ConfigId::NONE,
            slot: 0,
            token,
        }
    }

    /// Answers `reply`'s request with a `Challenge` carrying a fresh token for its
    /// source, unless that source has had its challenges for this interval
    /// ([`DropReason::ChallengeLimited`](crate::keeper::DropReason::ChallengeLimited)).
    pub(crate) fn challenge(
        &mut self,
        reply: Reply,
        now: Instant,
    ) -> Result<crate::keeper::Outcome, crate::keeper::DropReason> {
        if !self.challenges.allow(reply.to, now) {
            return Err(crate::keeper::DropReason::ChallengeLimited);
        }
        let token = self.tokens.mint(now, reply.to);
        self.answer(
            reply,
            Answer::Challenge {
                stamp: reply.stamp,
                token,
            },
        );
        Ok(crate::keeper::Outcome::Challenged)
    }

    /// Encodes the next datagram to send into `buf` (at least
    /// [`wire::MAX_DATAGRAM`] bytes) and says where it goes.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(p) = self.pending.pop_front() {
            let sealed = match &p.answer {
                Answer::Chunk {
                    cluster,
                    config,
                    index,
                    ..
                } if p.version == Version::V2 => Some(self.seal(p.key, cluster, config, *index)),
                _ => None,
            };
            match self.encode(&p.answer, p.key, p.version, sealed.as_ref(), buf) {
                Ok(len) if len <= p.budget => {
                    self.stats.sent += 1;
                    return Some(Transmit {
                        destination: p.to,
                        len,
                    });
                }
                _ => {
                    // Ruled out by the protocol's sizes; never send more than was received.
                    self.stats.oversized_answers += 1;
                    tracing::error!(to = %p.to, budget = p.budget, "answer larger than its request not sent");
                }
            }
        }
        None
    }

    /// Chunk `index` of `config` sealed for `cluster` under the key at `key`, and the
    /// config's keyed digest under it (`docs/PROTOCOL.md` §17.6). The keyed digest and
    /// the sealer of a (config, key) are computed once, on its first chunk.
    fn seal(
        &mut self,
        key: KeyIndex,
        cluster: &Arc<str>,
        config: &ConfigVersion,
        index: u32,
    ) -> ([u8; 32], Vec<u8>) {
        // Two clusters may hold the same config (the initial one): the cluster is part
        // of the key.
        let cache_key = (cluster.clone(), config.id, key);
        if !self.sealers.contains_key(&cache_key) {
            // Bounded: clusters pulling at once times keys; old configs' entries go.
            if self.sealers.len() >= MAX_SEALERS {
                self.sealers.clear();
            }
            let secret = self.keys.get(key);
            let keyed = secret.keyed_digest(&config.bytes);
            let sealer = ChunkSealer::new(&secret.config_key(
                cluster,
                &config.id.0,
                &keyed,
                CHUNK_SIZE as u32,
            ));
            self.sealers.insert(cache_key.clone(), (keyed, sealer));
        }
        let plain = config.chunk(index).unwrap_or_default();
        match self.sealers.get(&cache_key) {
            Some((keyed, sealer)) => (*keyed, sealer.seal(index, plain)),
            None => ([0; 32], Vec::new()),
        }
    }

    fn encode(
        &self,
        answer: &Answer,
        key: KeyIndex,
        version: Version,
        sealed: Option<&([u8; 32], Vec<u8>)>,
        buf: &mut [u8],
    ) -> Result<usize, wire::EncodeError> {
        let key = self.keys.get(key);
        let mut trailer = Trailer {
            term: self.terms.current,
            config: ConfigId::NONE,
        };
        let message = match answer {
            Answer::Ack {
                stamp,
                status,
                config_version,
                config,
                slot,
                token,
            } => {
                trailer.config = *config;
                Message::Ack(wire::Ack {
                    incarnation: stamp.incarnation,
                    seq: stamp.seq,
                    status: *status,
                    interval_ms: KeeperConfig::millis(self.config.heartbeat_interval),
                    lost_after_ms: KeeperConfig::millis(self.config.lost_after),
                    config_version: *config_version,
                    slot: *slot,
                    token: *token,
                })
            }
            Answer::Challenge { stamp, token } => Message::Challenge(wire::Challenge {
                incarnation: stamp.incarnation,
                seq: stamp.seq,
                token: *token,
            }),
            Answer::Restart { stamp } => Message::Restart(wire::Restart {
                incarnation: stamp.incarnation,
                seq: stamp.seq,
            }),
            Answer::Leave { stamp } => Message::Leave(wire::Leave {
                incarnation: stamp.incarnation,
                seq: stamp.seq,
            }),
            Answer::Superseded { stamp, winner } => Message::Superseded(wire::Superseded {
                incarnation: stamp.incarnation,
                seq: stamp.seq,
                winner: *winner,
            }),
            Answer::Chunk {
                stamp,
                config,
                index,
                ..
            } => {
                let mut chunk = chunk_header(*stamp, config, *index);
                trailer.config = config.id;
                match sealed {
                    // Version 2: sealed, its digest keyed.
                    Some((keyed, bytes)) => {
                        chunk.digest = *keyed;
                        chunk.bytes = bytes;
                        Message::SealedChunk(chunk)
                    }
                    None => {
                        chunk.bytes = config.chunk(*index).unwrap_or_default();
                        Message::ConfigChunk(chunk)
                    }
                }
            }
        };
        wire::encode_framed(version, &message, trailer, key, buf)
    }
}

fn ack_status(status: Status) -> AckStatus {
    match status {
        Status::Ready => AckStatus::Ready,
        // An ack only ever answers a heartbeat, which makes a lost proxy up.
        Status::Up | Status::Lost => AckStatus::Up,
    }
}

/// The header of a chunk of `config` (its bytes filled in when encoded).
pub(crate) fn chunk_header(
    stamp: Stamp,
    config: &ConfigVersion,
    index: u32,
) -> wire::ConfigChunk<'static> {
    wire::ConfigChunk {
        incarnation: stamp.incarnation,
        seq: stamp.seq,
        version: config.version,
        index,
        total: config.total_chunks(),
        size: u32::try_from(config.bytes.len()).unwrap_or(u32::MAX),
        digest: config.digest,
        bytes: &[],
    }
}
