//! The wire protocol: every byte of every datagram between proxies and the keeper.
//!
//! ```text
//! offset  size  field
//! 0       2     magic "ZK" (0x5A 0x4B)
//! 2       1     protocol version (1 or 2, see [`Version`])
//! 3       1     message kind (see [`Kind`])
//! 4       4     key id, big-endian (see [`crate::auth::KeyId`])
//! 8       n     body: the kind's struct, postcard-encoded
//! 8+n     t     version 2 only: the trailer (see [`Trailer`]), 8 or 16 bytes by kind
//! 8+n+t   16    tag: HMAC-SHA256(secret, …) in version 1, HMAC-SHA256(K("mac"), …) in
//!               version 2, over bytes 0 .. 8+n+t, first 16 bytes
//! ```
//!
//! Version 2 is version 1 with a fixed-size trailer after the body (the leadership
//! term, and the config identity in the kinds that name a config) and a tag under a key
//! derived from the secret. Both versions are read side by side; an answer goes out in
//! the version of the datagram it answers.
//!
//! A datagram is at most [`MAX_DATAGRAM`] bytes. Decoding is total: any defect (size,
//! magic, version, kind, key, tag, body, trailing bytes) gives a [`WireError`], never a
//! panic, and nothing is allocated (strings and byte fields borrow from the datagram).
//! postcard accepts over-long varints (`80 00` reads as 0), so one message can have more
//! than one valid encoding; that is harmless because the tag covers the bytes exactly as
//! received and the keeper never re-encodes what it received.
//! `docs/PROTOCOL.md` documents every byte for implementers in other languages.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::auth::{Key, KeyId, TAG_LEN};

/// The two bytes every datagram starts with.
pub const MAGIC: [u8; 2] = *b"ZK";
/// The newest protocol version this build speaks (it reads and answers version 1 too).
pub const VERSION: u8 = Version::V2 as u8;

/// A protocol version: the byte at offset 2 of every datagram.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord, Default)]
pub enum Version {
    /// The first version: no term, configs named by their number.
    V1 = 1,
    /// Version 2: a trailer with the leadership term and the config identity, and a tag
    /// under `K("mac")` (see `docs/PROTOCOL.md` §17).
    #[default]
    V2 = 2,
}

impl Version {
    /// The version with this byte, if this build speaks it.
    pub fn from_byte(byte: u8) -> Option<Version> {
        match byte {
            1 => Some(Version::V1),
            2 => Some(Version::V2),
            _ => None,
        }
    }

    /// Its byte on the wire.
    pub fn byte(self) -> u8 {
        self as u8
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.byte())
    }
}

/// The identity of a config version on the wire (version 2): 8 bytes the keeper chooses
/// and stores with the version, opaque to agents (`docs/PROTOCOL.md` §17.3). A keeper with
/// a store key names the versions it makes [`ConfigId::keyed`]; without one (and for
/// every cluster's initial version), [`ConfigId::of`].
///
/// Agents compare ids for equality, never for order, so a keeper restored from an older
/// backup, whose next version number the fleet has already run with other bytes, still
/// gets its config pulled.
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Hash, Default, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct ConfigId(pub [u8; 8]);

impl ConfigId {
    /// No config (a proxy that runs none, an `Ack(gone)`).
    pub const NONE: ConfigId = ConfigId([0; 8]);

    /// The id of config `version` whose bytes have SHA-256 `digest`.
    pub fn of(version: u64, digest: &[u8; 32]) -> ConfigId {
        let full = Sha256::new()
            .chain_update(b"zerokeeper config id")
            .chain_update(version.to_be_bytes())
            .chain_update(digest)
            .finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&full[..8]);
        ConfigId(id)
    }

    /// The id of `cluster`'s config `version` whose bytes have SHA-256 `digest`, under a
    /// deployment's secret: the first 8 bytes of `HMAC-SHA256(key, "zerokeeper config id
    /// v2" || len(cluster) (u8) || cluster || version BE8 || digest)`. Nothing on the wire
    /// is then a function of the config's bytes alone, so a captured id cannot be used to
    /// test guesses of a credential offline.
    pub fn keyed(key: &ConfigIdKey, cluster: &str, version: u64, digest: &[u8; 32]) -> ConfigId {
        use hmac::Mac;
        let mut mac = key.0.clone();
        mac.update(b"zerokeeper config id v2");
        // Cluster names are at most 128 bytes (validated).
        mac.update(&[u8::try_from(cluster.len()).unwrap_or(u8::MAX)]);
        mac.update(cluster.as_bytes());
        mac.update(&version.to_be_bytes());
        mac.update(digest);
        let full = mac.finalize().into_bytes();
        let mut id = [0u8; 8];
        id.copy_from_slice(&full[..8]);
        ConfigId(id)
    }

    /// Whether this is [`ConfigId::NONE`].
    pub fn is_none(&self) -> bool {
        *self == ConfigId::NONE
    }
}

/// The secret [`ConfigId::keyed`] names config versions under: derived from the store key
/// (`StoreKeys::config_id_key`), so the same on every keeper of a deployment.
#[derive(Clone)]
pub struct ConfigIdKey(hmac::Hmac<Sha256>);

impl ConfigIdKey {
    /// A key from 32 secret bytes.
    pub fn new(secret: &[u8; 32]) -> ConfigIdKey {
        ConfigIdKey(
            <hmac::Hmac<Sha256> as hmac::KeyInit>::new_from_slice(secret)
                .expect("HMAC takes keys of any length"),
        )
    }
}

impl std::fmt::Debug for ConfigIdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigIdKey(..)")
    }
}

impl std::fmt::Display for ConfigId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// What version 2 adds after every body, in this order:
///
/// - `config` ([`ConfigId`], 8 raw bytes), only in the kinds that name a config
///   (`Heartbeat`, `Unregister`, `ConfigRequest`, `Ack`, `ConfigChunk`): in a request
///   the config the process runs (or pulls), in an answer the cluster's current one;
/// - `term` (u64, 8 bytes big-endian), in every kind: in an answer the leadership term
///   it was sent under, in a request the largest term the agent has accepted.
///
/// Both are zero in a version 1 datagram, which has no trailer.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub struct Trailer {
    /// The leadership term (0: none).
    pub term: u64,
    /// The config identity, in the kinds that carry one ([`ConfigId::NONE`] otherwise).
    pub config: ConfigId,
}

impl Trailer {
    /// A version 1 datagram's: no term, no config id.
    pub const NONE: Trailer = Trailer {
        term: 0,
        config: ConfigId::NONE,
    };

    /// Its length in a version 2 datagram of `kind`.
    pub fn len(kind: Kind) -> usize {
        if kind.names_config() { 16 } else { 8 }
    }

    fn write(&self, kind: Kind, out: &mut [u8]) {
        let mut at = 0;
        if kind.names_config() {
            out[..8].copy_from_slice(&self.config.0);
            at = 8;
        }
        out[at..at + 8].copy_from_slice(&self.term.to_be_bytes());
    }

    fn read(kind: Kind, bytes: &[u8]) -> Trailer {
        let mut trailer = Trailer::NONE;
        let mut at = 0;
        if kind.names_config() {
            trailer.config.0.copy_from_slice(&bytes[..8]);
            at = 8;
        }
        let mut term = [0u8; 8];
        term.copy_from_slice(&bytes[at..at + 8]);
        trailer.term = u64::from_be_bytes(term);
        trailer
    }
}
/// Length of the fixed header.
pub const HEADER_LEN: usize = 8;
/// Largest datagram either side sends or accepts (fits a 1280-byte IPv6 MTU with room).
pub const MAX_DATAGRAM: usize = 1200;
/// Smallest possible datagram: a header and a tag around an empty body.
pub const MIN_DATAGRAM: usize = HEADER_LEN + TAG_LEN;
/// Largest value of an `Ack`'s `interval_ms` and `lost_after_ms` (about 35 minutes).
///
/// Keeping both below 2^21 keeps each within three varint bytes, which is what makes an
/// `Ack` never larger than the heartbeat it answers (see `docs/PROTOCOL.md`).
pub const MAX_TIMING_MS: u32 = (1 << 21) - 1;

/// The message kind byte. Kinds below 0x80 travel from a proxy to the keeper, kinds from
/// 0x80 up from the keeper to a proxy, so a datagram reflected back at its sender is
/// refused by kind.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    /// Proxy → keeper: "I am alive, in this status".
    Heartbeat = 0x01,
    /// Proxy → keeper: "delete me"; the same body as a heartbeat.
    Unregister = 0x02,
    /// Proxy → keeper: "send me these chunks of this config version".
    ConfigRequest = 0x03,
    /// Proxy → keeper (version 2 only): a heartbeat that also says "I could not apply
    /// this config, and here is why" (`docs/PROTOCOL.md` §17.4).
    ConfigReject = 0x05,
    /// Keeper → proxy: "heard you; here is the timing, the config version, a fresh token".
    Ack = 0x81,
    /// Keeper → proxy: "your freshness token is stale; send again with this one".
    Challenge = 0x82,
    /// Keeper → proxy: "you are not in the registry: restart and register again".
    Restart = 0x83,
    /// Keeper → proxy: "a newer process holds your identity: stop".
    Superseded = 0x84,
    /// Keeper → proxy: one chunk of a config version.
    ConfigChunk = 0x85,
    /// Keeper → proxy (version 2 only): "an operator removed this process: stop and exit".
    Leave = 0x87,
    /// Keeper → proxy (version 2 only): a config chunk sealed with AES-256-GCM under a
    /// key of its config's own, its digest keyed (`docs/PROTOCOL.md` §17.6).
    SealedChunk = 0x89,
}

impl Kind {
    /// The kind with this byte, if there is one.
    pub fn from_byte(byte: u8) -> Option<Kind> {
        Some(match byte {
            0x01 => Kind::Heartbeat,
            0x02 => Kind::Unregister,
            0x03 => Kind::ConfigRequest,
            0x05 => Kind::ConfigReject,
            0x81 => Kind::Ack,
            0x82 => Kind::Challenge,
            0x83 => Kind::Restart,
            0x84 => Kind::Superseded,
            0x85 => Kind::ConfigChunk,
            0x87 => Kind::Leave,
            0x89 => Kind::SealedChunk,
            _ => return None,
        })
    }

    /// Whether proxies send this kind (the keeper accepts only these).
    pub fn is_from_proxy(self) -> bool {
        (self as u8) < 0x80
    }

    /// Whether a version 2 trailer of this kind carries a [`ConfigId`].
    pub fn names_config(self) -> bool {
        matches!(
            self,
            Kind::Heartbeat
                | Kind::Unregister
                | Kind::ConfigRequest
                | Kind::ConfigReject
                | Kind::Ack
                | Kind::ConfigChunk
                | Kind::SealedChunk
        )
    }
}

/// The status a proxy reports in its heartbeat.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum ProxyStatus {
    /// Started, registering, pulling config or initialising (postcard variant 0).
    Ready,
    /// Initialised and serving (variant 1).
    Up,
    /// Failed to start for a known reason: delete me now (variant 2).
    Down,
}

/// What the keeper holds for the incarnation an `Ack` answers.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum AckStatus {
    /// Registered and `ready` (postcard variant 0).
    Ready,
    /// `up` (variant 1).
    Up,
    /// Deleted: the answer to `down` and `unregister`; stop retransmitting (variant 2).
    Gone,
}

/// The keeper's freshness token: 16 opaque bytes a proxy echoes in every request.
///
/// All zeros means "no token yet". Only the keeper interprets it (see
/// `keeper::token`); on the wire it is 16 raw bytes.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub struct Token(pub [u8; 16]);

impl Token {
    /// The token a proxy sends before it has received one.
    pub const NONE: Token = Token([0; 16]);
}

/// Serialises a `u64` as 8 big-endian bytes instead of a varint.
///
/// Used for fields whose size must not depend on their value, so that an answer's size
/// is bounded by its request's.
mod fixed_u64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&value.to_be_bytes(), s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        <[u8; 8]>::deserialize(d).map(u64::from_be_bytes)
    }
}

/// Serialises a `u32` as 4 big-endian bytes instead of a varint.
mod fixed_u32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &u32, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&value.to_be_bytes(), s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        <[u8; 4]>::deserialize(d).map(u32::from_be_bytes)
    }
}

/// Body of a `Heartbeat` and of an `Unregister`.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct Heartbeat<'a> {
    /// The cluster the proxy belongs to.
    pub cluster: &'a str,
    /// The proxy's identity: the address it serves on, such as `10.25.0.11:3000`.
    pub proxy: &'a str,
    /// The process's incarnation: its start time in microseconds, +1 per in-process restart.
    pub incarnation: u64,
    /// Sequence number, +1 per datagram within one incarnation.
    pub seq: u64,
    /// The status the proxy reports.
    pub status: ProxyStatus,
    /// The config version the proxy runs (0: none yet). 8 bytes, big-endian.
    #[serde(with = "fixed_u64")]
    pub config_version: u64,
    /// The slot the keeper handed out in its last `Ack` (0: none). 4 bytes, big-endian.
    #[serde(with = "fixed_u32")]
    pub slot: u32,
    /// The latest freshness token received from the keeper.
    pub token: Token,
}

/// Body of a `ConfigRequest`: asks for chunks `first_index ..` of a config version.
///
/// The keeper answers with as many chunks as fit in the request's own size, so a proxy
/// pads the request (`padding`) to the size of the answer it wants.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct ConfigRequest<'a> {
    /// The cluster the proxy belongs to.
    pub cluster: &'a str,
    /// The proxy's identity.
    pub proxy: &'a str,
    /// The process's incarnation.
    pub incarnation: u64,
    /// Sequence number, shared with heartbeats.
    pub seq: u64,
    /// The slot from the last `Ack` (0: none). 4 bytes, big-endian.
    #[serde(with = "fixed_u32")]
    pub slot: u32,
    /// The latest freshness token received.
    pub token: Token,
    /// The config version being pulled.
    pub version: u64,
    /// Index of the first chunk wanted.
    pub first_index: u32,
    /// Most chunks wanted.
    pub count: u32,
    /// Ignored bytes that make the request as large as the answer it asks for.
    pub padding: &'a [u8],
}

/// Longest reason a `ConfigReject` carries, in bytes.
pub const MAX_REJECT_REASON: usize = 200;

/// Body of a `ConfigReject`: a heartbeat's fields (it counts as the proxy's heartbeat),
/// then the config the proxy could not apply and why.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct ConfigReject<'a> {
    /// The heartbeat it is, field for field.
    pub heartbeat: Heartbeat<'a>,
    /// The id of the config rejected (the trailer names the one the process still runs).
    pub rejected: ConfigId,
    /// Why, in one line: at most [`MAX_REJECT_REASON`] bytes, no control characters.
    pub reason: &'a str,
}

impl ConfigReject<'_> {
    /// Whether `reason` may travel in a `ConfigReject`.
    pub fn valid_reason(reason: &str) -> bool {
        reason.len() <= MAX_REJECT_REASON && !reason.chars().any(char::is_control)
    }
}

/// `reason` cut to what a `ConfigReject` carries: control characters become spaces and
/// the text is cut at a character boundary within [`MAX_REJECT_REASON`] bytes.
pub fn reject_reason(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len().min(MAX_REJECT_REASON));
    for c in reason.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_REJECT_REASON {
            break;
        }
        out.push(c);
    }
    out
}

/// Body of an `Ack`.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ack {
    /// Incarnation of the datagram answered.
    pub incarnation: u64,
    /// Sequence number of the datagram answered.
    pub seq: u64,
    /// What the keeper now holds for that incarnation.
    pub status: AckStatus,
    /// How often the proxy should send heartbeats, in milliseconds.
    pub interval_ms: u32,
    /// How long without a heartbeat before the keeper marks an `up` proxy `lost`, in ms.
    pub lost_after_ms: u32,
    /// The cluster's current config version. 8 bytes, big-endian.
    #[serde(with = "fixed_u64")]
    pub config_version: u64,
    /// The proxy's slot, to echo in later requests. 4 bytes, big-endian.
    #[serde(with = "fixed_u32")]
    pub slot: u32,
    /// A fresh token.
    pub token: Token,
}

/// Body of a `Challenge`: the request was not counted; send again with this token.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct Challenge {
    /// Incarnation of the datagram answered.
    pub incarnation: u64,
    /// Sequence number of the datagram answered.
    pub seq: u64,
    /// A fresh token.
    pub token: Token,
}

/// Body of a `Restart`.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct Restart {
    /// Incarnation of the heartbeat answered: only that process restarts.
    pub incarnation: u64,
    /// Sequence number of the heartbeat answered.
    pub seq: u64,
}

/// Body of a `Superseded`.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct Superseded {
    /// Incarnation of the datagram answered: the one that must stop.
    pub incarnation: u64,
    /// Sequence number of the datagram answered.
    pub seq: u64,
    /// The newer incarnation that holds the identity.
    pub winner: u64,
}

/// Body of a `Leave` (version 2 only): an operator removed the process answered, which
/// must stop serving and exit rather than register again.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct Leave {
    /// Incarnation of the heartbeat answered: that process, or an earlier life, was
    /// removed.
    pub incarnation: u64,
    /// Sequence number of the heartbeat answered.
    pub seq: u64,
}

/// Body of a `ConfigChunk`.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct ConfigChunk<'a> {
    /// Incarnation of the request answered.
    pub incarnation: u64,
    /// Sequence number of the request answered.
    pub seq: u64,
    /// The config version this chunk belongs to (the current one, whatever was asked).
    pub version: u64,
    /// This chunk's index, from 0.
    pub index: u32,
    /// How many chunks the version has.
    pub total: u32,
    /// The whole config's size in bytes.
    pub size: u32,
    /// SHA-256 of the whole config.
    pub digest: [u8; 32],
    /// This chunk's bytes: [`crate::configdoc::CHUNK_SIZE`] bytes except in the last chunk.
    pub bytes: &'a [u8],
}

/// One decoded datagram.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Message<'a> {
    /// A heartbeat.
    Heartbeat(Heartbeat<'a>),
    /// An unregister request (a heartbeat's body under another kind).
    Unregister(Heartbeat<'a>),
    /// A config request.
    ConfigRequest(ConfigRequest<'a>),
    /// A heartbeat that rejects a config (version 2 only).
    ConfigReject(ConfigReject<'a>),
    /// An acknowledgement.
    Ack(Ack),
    /// A freshness challenge.
    Challenge(Challenge),
    /// A restart command.
    Restart(Restart),
    /// A superseded notice.
    Superseded(Superseded),
    /// A removal notice (version 2 only).
    Leave(Leave),
    /// A config chunk.
    ConfigChunk(ConfigChunk<'a>),
    /// A sealed config chunk: a chunk's body whose `digest` is the keyed digest and whose
    /// `bytes` are the sealed bytes (ciphertext and GCM tag; version 2 only).
    SealedChunk(ConfigChunk<'a>),
}

impl Message<'_> {
    /// The kind byte this message is sent under.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Heartbeat(_) => Kind::Heartbeat,
            Message::Unregister(_) => Kind::Unregister,
            Message::ConfigRequest(_) => Kind::ConfigRequest,
            Message::ConfigReject(_) => Kind::ConfigReject,
            Message::Ack(_) => Kind::Ack,
            Message::Challenge(_) => Kind::Challenge,
            Message::Restart(_) => Kind::Restart,
            Message::Superseded(_) => Kind::Superseded,
            Message::Leave(_) => Kind::Leave,
            Message::ConfigChunk(_) => Kind::ConfigChunk,
            Message::SealedChunk(_) => Kind::SealedChunk,
        }
    }
}

/// The fixed header, read before anything is authenticated.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Header {
    /// The protocol version.
    pub version: Version,
    /// The message kind.
    pub kind: Kind,
    /// The key the sender used.
    pub key_id: KeyId,
}

/// Why a datagram was refused. Decoding never changes any state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WireError {
    /// Shorter than a header and a tag.
    #[error("datagram of {0} bytes is shorter than the minimum of {MIN_DATAGRAM}")]
    Truncated(usize),
    /// Longer than [`MAX_DATAGRAM`].
    #[error("datagram of {0} bytes is longer than the maximum of {MAX_DATAGRAM}")]
    Oversized(usize),
    /// Does not start with `ZK`.
    #[error("bad magic")]
    BadMagic,
    /// Another protocol version.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// A kind byte no version-1 message has.
    #[error("unknown message kind {0:#04x}")]
    UnknownKind(u8),
    /// The key id names no key the receiver holds.
    #[error("unknown key id {:08x}", .0.0)]
    UnknownKey(KeyId),
    /// The tag does not match: forged, corrupted, or another key.
    #[error("authentication tag does not match")]
    BadTag,
    /// The body is not a valid encoding of the kind's struct.
    #[error("malformed body")]
    Malformed,
    /// The body decoded with bytes left over.
    #[error("{0} trailing bytes after the body")]
    TrailingBytes(usize),
    /// A valid message of a kind the receiver never accepts (for example an `Ack` sent
    /// to the keeper).
    #[error("message kind {0:?} is not accepted here")]
    UnexpectedKind(Kind),
}

/// Why a message could not be encoded. A bug in the caller, never caused by input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The message does not fit in [`MAX_DATAGRAM`] bytes (or in the buffer given).
    #[error("message does not fit in {0} bytes")]
    TooLarge(usize),
}

/// Reads and checks the fixed header and the datagram's size.
pub fn parse_header(datagram: &[u8]) -> Result<Header, WireError> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(WireError::Oversized(datagram.len()));
    }
    if datagram.len() < MIN_DATAGRAM {
        return Err(WireError::Truncated(datagram.len()));
    }
    if datagram[0..2] != MAGIC {
        return Err(WireError::BadMagic);
    }
    let version =
        Version::from_byte(datagram[2]).ok_or(WireError::UnsupportedVersion(datagram[2]))?;
    let kind = Kind::from_byte(datagram[3]).ok_or(WireError::UnknownKind(datagram[3]))?;
    let key_id = KeyId(u32::from_be_bytes([
        datagram[4],
        datagram[5],
        datagram[6],
        datagram[7],
    ]));
    Ok(Header {
        version,
        kind,
        key_id,
    })
}

/// Checks the tag of a datagram whose header is `header` with `key`. Call after
/// [`parse_header`].
pub fn authenticate(header: Header, datagram: &[u8], key: &Key) -> Result<(), WireError> {
    let split = datagram
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(WireError::Truncated(datagram.len()))?;
    let (signed, tag) = datagram.split_at(split);
    if key.verify_as(header.version, signed, tag) {
        Ok(())
    } else {
        Err(WireError::BadTag)
    }
}

/// The body and the trailer of a datagram whose header is `header`.
fn split(header: Header, datagram: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    let trailer = match header.version {
        Version::V1 => 0,
        Version::V2 => Trailer::len(header.kind),
    };
    let end = datagram
        .len()
        .checked_sub(TAG_LEN + trailer)
        .filter(|&end| end >= HEADER_LEN)
        .ok_or(WireError::Truncated(datagram.len()))?;
    Ok((&datagram[HEADER_LEN..end], &datagram[end..end + trailer]))
}

/// The trailer of an authenticated datagram whose header is `header`
/// ([`Trailer::NONE`] in version 1).
pub fn decode_trailer(header: Header, datagram: &[u8]) -> Result<Trailer, WireError> {
    let (_, trailer) = split(header, datagram)?;
    Ok(match header.version {
        Version::V1 => Trailer::NONE,
        Version::V2 => Trailer::read(header.kind, trailer),
    })
}

/// Decodes the body of an authenticated datagram whose header is `header`.
pub fn decode_body<'a>(header: Header, datagram: &'a [u8]) -> Result<Message<'a>, WireError> {
    let (body, _) = split(header, datagram)?;
    Ok(match header.kind {
        Kind::Heartbeat => Message::Heartbeat(take_all(body)?),
        Kind::Unregister => Message::Unregister(take_all(body)?),
        Kind::ConfigRequest => Message::ConfigRequest(take_all(body)?),
        Kind::ConfigReject => {
            let reject: ConfigReject<'a> = take_all(body)?;
            if !ConfigReject::valid_reason(reject.reason) {
                return Err(WireError::Malformed);
            }
            Message::ConfigReject(reject)
        }
        Kind::Ack => Message::Ack(take_all(body)?),
        Kind::Challenge => Message::Challenge(take_all(body)?),
        Kind::Restart => Message::Restart(take_all(body)?),
        Kind::Superseded => Message::Superseded(take_all(body)?),
        Kind::Leave => Message::Leave(take_all(body)?),
        Kind::ConfigChunk => Message::ConfigChunk(take_all(body)?),
        Kind::SealedChunk => Message::SealedChunk(take_all(body)?),
    })
}

/// A decoded datagram of either version.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Framed<'a> {
    /// The version it came in.
    pub version: Version,
    /// Its message.
    pub message: Message<'a>,
    /// Its trailer ([`Trailer::NONE`] in version 1).
    pub trailer: Trailer,
}

/// Parses, authenticates and decodes a datagram of either version sent with `key`.
///
/// The keeper, which holds many keys, calls the steps itself; a proxy, which holds one,
/// calls this.
pub fn open_framed<'a>(datagram: &'a [u8], key: &Key) -> Result<Framed<'a>, WireError> {
    let header = parse_header(datagram)?;
    if header.key_id != key.id() {
        return Err(WireError::UnknownKey(header.key_id));
    }
    authenticate(header, datagram, key)?;
    Ok(Framed {
        version: header.version,
        message: decode_body(header, datagram)?,
        trailer: decode_trailer(header, datagram)?,
    })
}

/// [`open_framed`], keeping only the message.
pub fn open<'a>(datagram: &'a [u8], key: &Key) -> Result<Message<'a>, WireError> {
    open_framed(datagram, key).map(|f| f.message)
}

fn take_all<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, WireError> {
    let (value, rest) = postcard::take_from_bytes(body).map_err(|_| WireError::Malformed)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(WireError::TrailingBytes(rest.len()))
    }
}

/// Encodes `message` in version 1 with `key` into `out` and returns the datagram's length.
pub fn encode(message: &Message<'_>, key: &Key, out: &mut [u8]) -> Result<usize, EncodeError> {
    encode_framed(Version::V1, message, Trailer::NONE, key, out)
}

/// Encodes `message` in `version` (with `trailer` in version 2) with `key` into `out` and
/// returns the datagram's length.
pub fn encode_framed(
    version: Version,
    message: &Message<'_>,
    trailer: Trailer,
    key: &Key,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let limit = out.len().min(MAX_DATAGRAM);
    let kind = message.kind();
    let trailer_len = match version {
        Version::V1 => 0,
        Version::V2 => Trailer::len(kind),
    };
    if limit < MIN_DATAGRAM + trailer_len {
        return Err(EncodeError::TooLarge(limit));
    }
    out[0..2].copy_from_slice(&MAGIC);
    out[2] = version.byte();
    out[3] = kind as u8;
    out[4..8].copy_from_slice(&key.id().0.to_be_bytes());
    let body_room = &mut out[HEADER_LEN..limit - TAG_LEN - trailer_len];
    let body_len = match message {
        Message::Heartbeat(m) | Message::Unregister(m) => put(m, body_room),
        Message::ConfigRequest(m) => put(m, body_room),
        Message::ConfigReject(m) => put(m, body_room),
        Message::Ack(m) => put(m, body_room),
        Message::Challenge(m) => put(m, body_room),
        Message::Restart(m) => put(m, body_room),
        Message::Superseded(m) => put(m, body_room),
        Message::Leave(m) => put(m, body_room),
        Message::ConfigChunk(m) | Message::SealedChunk(m) => put(m, body_room),
    }
    .map_err(|_| EncodeError::TooLarge(limit))?;
    let body_end = HEADER_LEN + body_len;
    if version == Version::V2 {
        trailer.write(kind, &mut out[body_end..body_end + trailer_len]);
    }
    let signed = body_end + trailer_len;
    let tag = key.tag_as(version, &out[..signed]);
    out[signed..signed + TAG_LEN].copy_from_slice(&tag);
    Ok(signed + TAG_LEN)
}

fn put<T: Serialize>(value: &T, room: &mut [u8]) -> Result<usize, postcard::Error> {
    postcard::to_slice(value, room).map(|written| written.len())
}

/// Encodes `message` in version 1 into a new vector (for tests and tools; the hot path
/// uses [`encode`]).
pub fn encode_to_vec(message: &Message<'_>, key: &Key) -> Result<Vec<u8>, EncodeError> {
    encode_framed_to_vec(Version::V1, message, Trailer::NONE, key)
}

/// [`encode_framed`] into a new vector.
pub fn encode_framed_to_vec(
    version: Version,
    message: &Message<'_>,
    trailer: Trailer,
    key: &Key,
) -> Result<Vec<u8>, EncodeError> {
    let mut buf = [0u8; MAX_DATAGRAM];
    let len = encode_framed(version, message, trailer, key, &mut buf)?;
    Ok(buf[..len].to_vec())
}

/// Number of bytes postcard uses for the varint of `value`.
pub fn varint_len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// The exact datagram length of a `ConfigChunk` carrying `bytes_len` bytes in `version`,
/// without encoding it: the keeper uses it to answer within a request's size.
pub fn config_chunk_len(
    version: Version,
    chunk_without_bytes: &ConfigChunk<'_>,
    bytes_len: usize,
) -> usize {
    let c = chunk_without_bytes;
    // Version 2's chunks are sealed: the GCM tag comes on top.
    let trailer = match version {
        Version::V1 => 0,
        Version::V2 => Trailer::len(Kind::SealedChunk) + crate::seal::SEAL_OVERHEAD,
    };
    HEADER_LEN
        + trailer
        + varint_len(c.incarnation)
        + varint_len(c.seq)
        + varint_len(c.version)
        + varint_len(u64::from(c.index))
        + varint_len(u64::from(c.total))
        + varint_len(u64::from(c.size))
        + 32
        + varint_len(bytes_len as u64)
        + bytes_len
        + TAG_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::new(&[7; 32]).expect("valid length")
    }

    fn heartbeat() -> Heartbeat<'static> {
        Heartbeat {
            cluster: "test_cluster",
            proxy: "10.25.0.11:3000",
            incarnation: 1_764_000_000_000_000,
            seq: 1,
            status: ProxyStatus::Ready,
            config_version: 0,
            slot: 0,
            token: Token::NONE,
        }
    }

    #[test]
    fn a_heartbeat_round_trips() {
        let bytes = encode_to_vec(&Message::Heartbeat(heartbeat()), &key()).expect("fits");
        assert_eq!(open(&bytes, &key()), Ok(Message::Heartbeat(heartbeat())));
    }

    #[test]
    fn a_flipped_bit_anywhere_fails_authentication_or_parsing() {
        let bytes = encode_to_vec(&Message::Heartbeat(heartbeat()), &key()).expect("fits");
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(open(&bad, &key()).is_err(), "flip at byte {i} was accepted");
        }
    }

    #[test]
    fn a_version_2_heartbeat_round_trips_with_its_trailer() {
        let trailer = Trailer {
            term: 7,
            config: ConfigId::of(3, &[1; 32]),
        };
        let bytes = encode_framed_to_vec(
            Version::V2,
            &Message::Heartbeat(heartbeat()),
            trailer,
            &key(),
        )
        .expect("fits");
        let v1 = encode_to_vec(&Message::Heartbeat(heartbeat()), &key()).expect("fits");
        assert_eq!(bytes.len(), v1.len() + 16);
        assert_eq!(bytes[2], 2);
        assert_eq!(
            open_framed(&bytes, &key()),
            Ok(Framed {
                version: Version::V2,
                message: Message::Heartbeat(heartbeat()),
                trailer,
            })
        );
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(open(&bad, &key()).is_err(), "flip at byte {i} was accepted");
        }
    }

    #[test]
    fn a_version_2_tag_is_not_a_version_1_tag() {
        // The same bytes under the other version byte fail: each version has its key.
        let mut bytes = encode_framed_to_vec(
            Version::V2,
            &Message::Restart(Restart {
                incarnation: 1,
                seq: 1,
            }),
            Trailer::NONE,
            &key(),
        )
        .expect("fits");
        assert_eq!(bytes.len(), MIN_DATAGRAM + 2 + 8);
        bytes[2] = 1;
        assert!(open(&bytes, &key()).is_err());
        let v1 = encode_to_vec(
            &Message::Restart(Restart {
                incarnation: 1,
                seq: 1,
            }),
            &key(),
        )
        .expect("fits");
        let mut as_v2 = v1.clone();
        as_v2[2] = 2;
        assert_eq!(open(&as_v2, &key()), Err(WireError::BadTag));
    }

    #[test]
    fn a_version_2_datagram_too_short_for_its_trailer_is_refused() {
        let k = key();
        // A header, 4 bytes and a tag: room for no Restart trailer.
        let mut bytes = vec![b'Z', b'K', 2, Kind::Restart as u8];
        bytes.extend_from_slice(&k.id().0.to_be_bytes());
        bytes.extend_from_slice(&[0; 4]);
        let tag = k.tag_as(Version::V2, &bytes);
        bytes.extend_from_slice(&tag);
        assert_eq!(open(&bytes, &k), Err(WireError::Truncated(bytes.len())));
    }

    #[test]
    fn trailing_bytes_inside_the_tagged_region_are_refused() {
        let k = key();
        let mut bytes = encode_to_vec(&Message::Heartbeat(heartbeat()), &k).expect("fits");
        bytes.truncate(bytes.len() - TAG_LEN);
        bytes.push(0);
        let tag = k.tag(&bytes);
        bytes.extend_from_slice(&tag);
        assert_eq!(open(&bytes, &k), Err(WireError::TrailingBytes(1)));
    }

    #[test]
    fn size_limits_are_checked_before_anything_else() {
        assert_eq!(parse_header(&[0; 23]), Err(WireError::Truncated(23)));
        assert_eq!(parse_header(&[0; 1201]), Err(WireError::Oversized(1201)));
        assert_eq!(parse_header(&[0; 24]), Err(WireError::BadMagic));
    }

    #[test]
    fn config_chunk_length_is_computed_exactly() {
        let chunk = ConfigChunk {
            incarnation: u64::MAX,
            seq: 300,
            version: 5,
            index: 70_000,
            total: 70_001,
            size: 4 << 20,
            digest: [9; 32],
            bytes: &[1; 1024],
        };
        let bytes = encode_to_vec(&Message::ConfigChunk(chunk), &key()).expect("fits");
        assert_eq!(config_chunk_len(Version::V1, &chunk, 1024), bytes.len());
        assert!(bytes.len() <= MAX_DATAGRAM);
        let trailer = Trailer {
            term: u64::MAX,
            config: ConfigId([3; 8]),
        };
        // Version 2's chunks are sealed: 16 bytes more of the same plaintext.
        let sealed = [1; 1024 + crate::seal::SEAL_OVERHEAD];
        let chunk = ConfigChunk {
            bytes: &sealed,
            ..chunk
        };
        let v2 = encode_framed_to_vec(Version::V2, &Message::SealedChunk(chunk), trailer, &key())
            .expect("fits");
        assert_eq!(config_chunk_len(Version::V2, &chunk, 1024), v2.len());
        assert!(v2.len() <= MAX_DATAGRAM);
    }

    #[test]
    fn varint_lengths_match_postcard() {
        for v in [
            0u64,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut buf = [0u8; 16];
            let n = postcard::to_slice(&v, &mut buf).expect("fits").len();
            assert_eq!(varint_len(v), n, "{v}");
        }
    }
}
