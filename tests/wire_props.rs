//! Properties of the wire format, over arbitrary inputs: decoding is total (never a
//! panic, only typed errors), every message round-trips, bodies follow the byte layout of
//! `docs/PROTOCOL.md`, answers are never larger than the datagrams they answer, and no
//! single flipped bit gets past the tag.

use proptest::prelude::*;
use zerokeeper::auth::{Key, TAG_LEN};
use zerokeeper::identity::{validate_cluster, validate_proxy};
use zerokeeper::wire::{
    self, Ack, AckStatus, Challenge, ConfigChunk, ConfigRequest, HEADER_LEN, Heartbeat, Kind,
    MAX_DATAGRAM, MAX_TIMING_MS, MIN_DATAGRAM, Message, ProxyStatus, Restart, Superseded, Token,
    WireError,
};

/// Cases per property by default; set `PROPTEST_CASES` for a deeper run.
const CASES: u32 = 384;

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = CASES;
    }
    config
}

fn key() -> Key {
    Key::new(&[0x2a; 32]).expect("a 32-byte secret is valid")
}

// ----- Owned messages, so strategies can generate what `Message` borrows. -----

#[derive(Clone, Debug)]
struct OwnedHeartbeat {
    cluster: String,
    proxy: String,
    incarnation: u64,
    seq: u64,
    status: ProxyStatus,
    config_version: u64,
    slot: u32,
    token: Token,
}

impl OwnedHeartbeat {
    fn borrow(&self) -> Heartbeat<'_> {
        Heartbeat {
            cluster: &self.cluster,
            proxy: &self.proxy,
            incarnation: self.incarnation,
            seq: self.seq,
            status: self.status,
            config_version: self.config_version,
            slot: self.slot,
            token: self.token,
        }
    }
}

#[derive(Clone, Debug)]
struct OwnedRequest {
    cluster: String,
    proxy: String,
    incarnation: u64,
    seq: u64,
    slot: u32,
    token: Token,
    version: u64,
    first_index: u32,
    count: u32,
    padding: Vec<u8>,
}

#[derive(Clone, Debug)]
struct OwnedChunk {
    incarnation: u64,
    seq: u64,
    version: u64,
    index: u32,
    total: u32,
    size: u32,
    digest: [u8; 32],
    bytes: Vec<u8>,
}

#[derive(Clone, Debug)]
enum Owned {
    Heartbeat(OwnedHeartbeat),
    Unregister(OwnedHeartbeat),
    ConfigRequest(OwnedRequest),
    Ack(Ack),
    Challenge(Challenge),
    Restart(Restart),
    Superseded(Superseded),
    ConfigChunk(OwnedChunk),
}

impl Owned {
    fn message(&self) -> Message<'_> {
        match self {
            Owned::Heartbeat(hb) => Message::Heartbeat(hb.borrow()),
            Owned::Unregister(hb) => Message::Unregister(hb.borrow()),
            Owned::ConfigRequest(r) => Message::ConfigRequest(ConfigRequest {
                cluster: &r.cluster,
                proxy: &r.proxy,
                incarnation: r.incarnation,
                seq: r.seq,
                slot: r.slot,
                token: r.token,
                version: r.version,
                first_index: r.first_index,
                count: r.count,
                padding: &r.padding,
            }),
            Owned::Ack(m) => Message::Ack(*m),
            Owned::Challenge(m) => Message::Challenge(*m),
            Owned::Restart(m) => Message::Restart(*m),
            Owned::Superseded(m) => Message::Superseded(*m),
            Owned::ConfigChunk(c) => Message::ConfigChunk(ConfigChunk {
                incarnation: c.incarnation,
                seq: c.seq,
                version: c.version,
                index: c.index,
                total: c.total,
                size: c.size,
                digest: c.digest,
                bytes: &c.bytes,
            }),
        }
    }
}

// ----- Strategies. -----

/// `.` and `..` are refused as names (they read as path steps in a store key).
fn not_dots(name: &String) -> bool {
    name != "." && name != ".."
}

fn cluster() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,40}".prop_filter("not a path step", not_dots)
}

fn proxy() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        "[A-Za-z0-9.-]{1,60}".prop_filter("not a path step", not_dots),
        "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
        "\\[[0-9a-f:]{2,39}(%[a-z0-9]{1,8})?\\]",
    ];
    (host, 1u32..=65535).prop_map(|(host, port)| format!("{host}:{port}"))
}

fn token() -> impl Strategy<Value = Token> {
    any::<[u8; 16]>().prop_map(Token)
}

fn proxy_status() -> impl Strategy<Value = ProxyStatus> {
    prop_oneof![
        Just(ProxyStatus::Ready),
        Just(ProxyStatus::Up),
        Just(ProxyStatus::Down)
    ]
}

fn ack_status() -> impl Strategy<Value = AckStatus> {
    prop_oneof![
        Just(AckStatus::Ready),
        Just(AckStatus::Up),
        Just(AckStatus::Gone)
    ]
}

fn timing() -> impl Strategy<Value = u32> {
    prop_oneof![0..=MAX_TIMING_MS, Just(MAX_TIMING_MS), Just(0)]
}

fn heartbeat() -> impl Strategy<Value = OwnedHeartbeat> {
    (
        cluster(),
        proxy(),
        any::<u64>(),
        any::<u64>(),
        proxy_status(),
        any::<u64>(),
        any::<u32>(),
        token(),
    )
        .prop_map(
            |(cluster, proxy, incarnation, seq, status, config_version, slot, token)| {
                OwnedHeartbeat {
                    cluster,
                    proxy,
                    incarnation,
                    seq,
                    status,
                    config_version,
                    slot,
                    token,
                }
            },
        )
}

fn config_request() -> impl Strategy<Value = OwnedRequest> {
    // With names of at most 40 and 66 bytes, a request without padding is at most 194
    // bytes, so up to 1000 bytes of padding always fit in a datagram.
    (
        (
            cluster(),
            proxy(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            token(),
        ),
        (
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            prop::collection::vec(any::<u8>(), 0..=1000),
        ),
    )
        .prop_map(
            |(
                (cluster, proxy, incarnation, seq, slot, token),
                (version, first_index, count, padding),
            )| {
                OwnedRequest {
                    cluster,
                    proxy,
                    incarnation,
                    seq,
                    slot,
                    token,
                    version,
                    first_index,
                    count,
                    padding,
                }
            },
        )
}

fn ack() -> impl Strategy<Value = Ack> {
    (
        any::<u64>(),
        any::<u64>(),
        ack_status(),
        timing(),
        timing(),
        any::<u64>(),
        any::<u32>(),
        token(),
    )
        .prop_map(
            |(
                incarnation,
                seq,
                status,
                interval_ms,
                lost_after_ms,
                config_version,
                slot,
                token,
            )| Ack {
                incarnation,
                seq,
                status,
                interval_ms,
                lost_after_ms,
                config_version,
                slot,
                token,
            },
        )
}

fn config_chunk() -> impl Strategy<Value = OwnedChunk> {
    (
        (any::<u64>(), any::<u64>(), any::<u64>()),
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<[u8; 32]>()),
        prop::collection::vec(any::<u8>(), 0..=1024),
    )
        .prop_map(
            |((incarnation, seq, version), (index, total, size, digest), bytes)| OwnedChunk {
                incarnation,
                seq,
                version,
                index,
                total,
                size,
                digest,
                bytes,
            },
        )
}

fn message() -> impl Strategy<Value = Owned> {
    prop_oneof![
        heartbeat().prop_map(Owned::Heartbeat),
        heartbeat().prop_map(Owned::Unregister),
        config_request().prop_map(Owned::ConfigRequest),
        ack().prop_map(Owned::Ack),
        (any::<u64>(), any::<u64>(), token()).prop_map(|(incarnation, seq, token)| {
            Owned::Challenge(Challenge {
                incarnation,
                seq,
                token,
            })
        }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(incarnation, seq)| Owned::Restart(Restart { incarnation, seq })),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(incarnation, seq, winner)| {
            Owned::Superseded(Superseded {
                incarnation,
                seq,
                winner,
            })
        }),
        config_chunk().prop_map(Owned::ConfigChunk),
    ]
}

fn any_kind() -> impl Strategy<Value = Kind> {
    prop::sample::select(vec![
        Kind::Heartbeat,
        Kind::Unregister,
        Kind::ConfigRequest,
        Kind::Ack,
        Kind::Challenge,
        Kind::Restart,
        Kind::Superseded,
        Kind::ConfigChunk,
    ])
}

// ----- Helpers. -----

/// A datagram with a valid header and a correct tag around `body`, whatever it holds.
fn tagged(kind: Kind, body: &[u8], key: &Key) -> Vec<u8> {
    let mut datagram = Vec::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
    datagram.extend_from_slice(b"ZK");
    datagram.push(1);
    datagram.push(kind as u8);
    datagram.extend_from_slice(&key.id().0.to_be_bytes());
    datagram.extend_from_slice(body);
    let tag = key.tag(&datagram);
    datagram.extend_from_slice(&tag);
    datagram
}

fn encoded_len(message: &Message<'_>, key: &Key) -> usize {
    wire::encode_to_vec(message, key)
        .expect("the message fits")
        .len()
}

/// A reference encoder written from the rules of `docs/PROTOCOL.md` section 4, sharing
/// no code with `wire`: LEB128 varints, length-prefixed strings and bytes, raw fixed
/// arrays, and big-endian `config_version` (8 bytes) and `slot` (4 bytes).
mod reference {
    use super::Owned;
    use zerokeeper::wire::{AckStatus, ProxyStatus};

    pub(super) fn varint(out: &mut Vec<u8>, mut value: u64) {
        loop {
            let low = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(low);
                return;
            }
            out.push(low | 0x80);
        }
    }

    fn bytes(out: &mut Vec<u8>, bytes: &[u8]) {
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    fn proxy_status(status: ProxyStatus) -> u64 {
        match status {
            ProxyStatus::Ready => 0,
            ProxyStatus::Up => 1,
            ProxyStatus::Down => 2,
        }
    }

    fn ack_status(status: AckStatus) -> u64 {
        match status {
            AckStatus::Ready => 0,
            AckStatus::Up => 1,
            AckStatus::Gone => 2,
        }
    }

    pub(super) fn body(message: &Owned) -> Vec<u8> {
        let mut out = Vec::new();
        match message {
            Owned::Heartbeat(h) | Owned::Unregister(h) => {
                bytes(&mut out, h.cluster.as_bytes());
                bytes(&mut out, h.proxy.as_bytes());
                varint(&mut out, h.incarnation);
                varint(&mut out, h.seq);
                varint(&mut out, proxy_status(h.status));
                out.extend_from_slice(&h.config_version.to_be_bytes());
                out.extend_from_slice(&h.slot.to_be_bytes());
                out.extend_from_slice(&h.token.0);
            }
            Owned::ConfigRequest(r) => {
                bytes(&mut out, r.cluster.as_bytes());
                bytes(&mut out, r.proxy.as_bytes());
                varint(&mut out, r.incarnation);
                varint(&mut out, r.seq);
                out.extend_from_slice(&r.slot.to_be_bytes());
                out.extend_from_slice(&r.token.0);
                varint(&mut out, r.version);
                varint(&mut out, u64::from(r.first_index));
                varint(&mut out, u64::from(r.count));
                bytes(&mut out, &r.padding);
            }
            Owned::Ack(a) => {
                varint(&mut out, a.incarnation);
                varint(&mut out, a.seq);
                varint(&mut out, ack_status(a.status));
                varint(&mut out, u64::from(a.interval_ms));
                varint(&mut out, u64::from(a.lost_after_ms));
                out.extend_from_slice(&a.config_version.to_be_bytes());
                out.extend_from_slice(&a.slot.to_be_bytes());
                out.extend_from_slice(&a.token.0);
            }
            Owned::Challenge(c) => {
                varint(&mut out, c.incarnation);
                varint(&mut out, c.seq);
                out.extend_from_slice(&c.token.0);
            }
            Owned::Restart(r) => {
                varint(&mut out, r.incarnation);
                varint(&mut out, r.seq);
            }
            Owned::Superseded(s) => {
                varint(&mut out, s.incarnation);
                varint(&mut out, s.seq);
                varint(&mut out, s.winner);
            }
            Owned::ConfigChunk(c) => {
                varint(&mut out, c.incarnation);
                varint(&mut out, c.seq);
                varint(&mut out, c.version);
                varint(&mut out, u64::from(c.index));
                varint(&mut out, u64::from(c.total));
                varint(&mut out, u64::from(c.size));
                out.extend_from_slice(&c.digest);
                bytes(&mut out, &c.bytes);
            }
        }
        out
    }
}

// ----- Properties. -----

proptest! {
    #![proptest_config(config())]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1400)) {
        let key = key();
        let result = wire::open(&bytes, &key);
        if bytes.len() < MIN_DATAGRAM || bytes.len() > MAX_DATAGRAM {
            prop_assert!(result.is_err());
        }
        let _ = wire::parse_header(&bytes);
    }

    #[test]
    fn arbitrary_bytes_that_start_like_a_datagram_never_panic(
        kind in any::<u8>(),
        rest in prop::collection::vec(any::<u8>(), 0..1400),
    ) {
        let key = key();
        let mut bytes = vec![b'Z', b'K', 1, kind];
        bytes.extend_from_slice(&key.id().0.to_be_bytes());
        bytes.extend_from_slice(&rest);
        // The tag is random, so this can only fail, but it must fail with a typed error.
        prop_assert!(wire::open(&bytes, &key).is_err());
    }

    #[test]
    fn arbitrary_bodies_with_a_correct_tag_decode_or_fail_with_a_typed_error(
        kind in any_kind(),
        body in prop::collection::vec(any::<u8>(), 0..=MAX_DATAGRAM - MIN_DATAGRAM),
    ) {
        let key = key();
        let datagram = tagged(kind, &body, &key);
        match wire::open(&datagram, &key) {
            Ok(message) => {
                prop_assert_eq!(message.kind(), kind);
                // Whatever decoded re-encodes (canonically, so never larger) to itself.
                let again = wire::encode_to_vec(&message, &key).expect("a decoded message fits again");
                prop_assert!(again.len() <= datagram.len());
                prop_assert_eq!(wire::open(&again, &key), Ok(message));
            }
            Err(WireError::Malformed | WireError::TrailingBytes(_)) => {}
            Err(other) => prop_assert!(false, "an authenticated datagram failed with {other:?}"),
        }
    }

    #[test]
    fn mangled_valid_bodies_with_a_correct_tag_decode_or_fail_with_a_typed_error(
        owned in message(),
        cut in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        extra in prop::collection::vec(any::<u8>(), 0..4),
    ) {
        let key = key();
        let valid = wire::encode_to_vec(&owned.message(), &key).expect("fits");
        let mut body = valid[HEADER_LEN..valid.len() - TAG_LEN].to_vec();
        if !body.is_empty() {
            for (at, byte) in &edits {
                let i = at.index(body.len());
                body[i] = *byte;
            }
            body.truncate(cut.index(body.len() + 1));
        }
        body.extend_from_slice(&extra);
        body.truncate(MAX_DATAGRAM - MIN_DATAGRAM);
        let kind = owned.message().kind();
        match wire::open(&tagged(kind, &body, &key), &key) {
            Ok(message) => prop_assert_eq!(message.kind(), kind),
            Err(WireError::Malformed | WireError::TrailingBytes(_)) => {}
            Err(other) => prop_assert!(false, "an authenticated datagram failed with {other:?}"),
        }
    }

    #[test]
    fn every_message_kind_round_trips_through_encode_and_open(owned in message()) {
        let key = key();
        if let Owned::Heartbeat(h) | Owned::Unregister(h) = &owned {
            prop_assert_eq!(validate_cluster(&h.cluster), Ok(()));
            prop_assert_eq!(validate_proxy(&h.proxy), Ok(()));
        }
        let message = owned.message();
        let datagram = wire::encode_to_vec(&message, &key).expect("fits");
        prop_assert!(datagram.len() >= MIN_DATAGRAM && datagram.len() <= MAX_DATAGRAM);
        prop_assert_eq!(&datagram[0..2], b"ZK");
        prop_assert_eq!(datagram[2], 1);
        prop_assert_eq!(datagram[3], message.kind() as u8);
        prop_assert_eq!(&datagram[4..8], &key.id().0.to_be_bytes());
        let (signed, tag) = datagram.split_at(datagram.len() - TAG_LEN);
        prop_assert_eq!(&key.tag(signed)[..], tag);
        prop_assert_eq!(wire::open(&datagram, &key), Ok(message));
        if let Message::ConfigChunk(chunk) = message {
            prop_assert_eq!(wire::config_chunk_len(wire::Version::V1, &chunk, chunk.bytes.len()), datagram.len());
        }
    }

    #[test]
    fn bodies_follow_the_byte_layout_written_in_protocol_md(owned in message()) {
        let key = key();
        let datagram = wire::encode_to_vec(&owned.message(), &key).expect("fits");
        let body = &datagram[HEADER_LEN..datagram.len() - TAG_LEN];
        prop_assert_eq!(body, &reference::body(&owned)[..]);
    }

    #[test]
    fn an_ack_answering_a_heartbeat_is_never_larger_than_the_heartbeat(
        hb in heartbeat(),
        unregister in any::<bool>(),
        answer in ack(),
    ) {
        let key = key();
        let request = if unregister { Message::Unregister(hb.borrow()) } else { Message::Heartbeat(hb.borrow()) };
        // The Ack echoes the heartbeat's incarnation and seq; everything else is free.
        let ack = Ack { incarnation: hb.incarnation, seq: hb.seq, ..answer };
        prop_assert!(
            encoded_len(&Message::Ack(ack), &key) <= encoded_len(&request, &key),
            "{ack:?} answering {hb:?}"
        );
    }

    #[test]
    fn challenges_restarts_and_superseded_notices_are_never_larger_than_what_they_answer(
        hb in heartbeat(),
        request in config_request(),
        token in token(),
        winner in any::<u64>(),
    ) {
        let key = key();
        let hb_len = encoded_len(&Message::Heartbeat(hb.borrow()), &key);
        let (incarnation, seq) = (hb.incarnation, hb.seq);
        let answers = [
            Message::Challenge(Challenge { incarnation, seq, token }),
            Message::Restart(Restart { incarnation, seq }),
            Message::Superseded(Superseded { incarnation, seq, winner }),
        ];
        for answer in answers {
            prop_assert!(encoded_len(&answer, &key) <= hb_len, "{answer:?}");
        }
        let (incarnation, seq) = (request.incarnation, request.seq);
        let owned = Owned::ConfigRequest(request);
        let challenge = Message::Challenge(Challenge { incarnation, seq, token });
        prop_assert!(encoded_len(&challenge, &key) <= encoded_len(&owned.message(), &key));
    }

    #[test]
    fn flipping_any_single_bit_of_a_valid_datagram_makes_open_fail(
        owned in message(),
        bit in any::<prop::sample::Index>(),
    ) {
        let key = key();
        let mut datagram = wire::encode_to_vec(&owned.message(), &key).expect("fits");
        let bit = bit.index(datagram.len() * 8);
        datagram[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(wire::open(&datagram, &key).is_err(), "flipping bit {bit} was accepted");
    }
}

// ----- The bound of the size argument is tight. -----

/// The smallest heartbeat there is: the shortest names, one-byte incarnation and seq.
fn smallest_heartbeat() -> Heartbeat<'static> {
    Heartbeat {
        cluster: "a",
        proxy: "a:1",
        incarnation: 1,
        seq: 1,
        status: ProxyStatus::Ready,
        config_version: 0,
        slot: 0,
        token: Token::NONE,
    }
}

fn ack_with_timing(interval_ms: u32, lost_after_ms: u32) -> Ack {
    Ack {
        incarnation: 1,
        seq: 1,
        status: AckStatus::Ready,
        interval_ms,
        lost_after_ms,
        config_version: u64::MAX,
        slot: u32::MAX,
        token: Token([0xff; 16]),
    }
}

#[test]
fn an_ack_with_the_largest_timing_is_exactly_as_large_as_the_smallest_heartbeat() {
    let key = key();
    assert_eq!(validate_cluster("a"), Ok(()));
    assert_eq!(validate_proxy("a:1"), Ok(()));
    let hb = encoded_len(&Message::Heartbeat(smallest_heartbeat()), &key);
    let ack = encoded_len(
        &Message::Ack(ack_with_timing(MAX_TIMING_MS, MAX_TIMING_MS)),
        &key,
    );
    assert_eq!(ack, hb);
}

#[test]
fn timing_above_the_protocol_limit_would_make_an_ack_larger_than_its_heartbeat() {
    // Why `MAX_TIMING_MS` is 2^21 - 1: one more millisecond takes a fourth varint byte.
    let key = key();
    let hb = encoded_len(&Message::Heartbeat(smallest_heartbeat()), &key);
    let ack = encoded_len(
        &Message::Ack(ack_with_timing(MAX_TIMING_MS + 1, MAX_TIMING_MS)),
        &key,
    );
    assert_eq!(ack, hb + 1);
}

#[test]
fn the_reference_varint_matches_the_examples_in_protocol_md() {
    for (value, bytes) in [
        (0u64, vec![0x00]),
        (127, vec![0x7f]),
        (128, vec![0x80, 0x01]),
        (300, vec![0xac, 0x02]),
        (
            1_764_000_000_000_000,
            vec![0x80, 0x80, 0x89, 0x8b, 0x94, 0x8b, 0x91, 0x03],
        ),
    ] {
        let mut out = Vec::new();
        reference::varint(&mut out, value);
        assert_eq!(out, bytes, "{value}");
        assert_eq!(
            postcard::to_allocvec(&value).expect("encodes"),
            bytes,
            "{value}"
        );
    }
}
