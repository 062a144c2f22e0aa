//! `docs/PROTOCOL.md` is checked against the code: its worked example, key id, kind
//! table, enum values and constants are read from the document at test time and compared
//! with what the crate really does, so the document cannot drift from the wire format.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use zerokeeper::auth::{Key, MAX_SECRET_LEN, MIN_SECRET_LEN, TAG_LEN};
use zerokeeper::configdoc::{CHUNK_SIZE, ConfigVersion, MAX_CONFIG_BYTES};
use zerokeeper::identity::{MAX_CLUSTER_LEN, MAX_PROXY_LEN};
use zerokeeper::wire::{
    self, AckStatus, ConfigId, HEADER_LEN, Heartbeat, Kind, MAX_DATAGRAM, MAX_TIMING_MS,
    MIN_DATAGRAM, Message, ProxyStatus, Token, Trailer, VERSION, Version,
};

const DOC: &str = include_str!("../docs/PROTOCOL.md");

/// The secret of the worked example: 32 bytes of `*`.
const SECRET: [u8; 32] = [0x2a; 32];

/// The worked example, exactly as the document describes it.
fn example() -> Heartbeat<'static> {
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

fn example_datagram() -> Vec<u8> {
    let key = Key::new(&SECRET).expect("a 32-byte secret is valid");
    wire::encode_to_vec(&Message::Heartbeat(example()), &key).expect("the example fits")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The contents of every fenced block opened with "```" + `info`.
fn fenced_blocks(info: &str) -> Vec<&'static str> {
    let opening = format!("```{info}\n");
    let mut blocks = Vec::new();
    let mut rest = DOC;
    while let Some(start) = rest.find(&opening) {
        let body = &rest[start + opening.len()..];
        let end = body.find("```").expect("a fenced block is closed");
        blocks.push(&body[..end]);
        rest = &body[end + 3..];
    }
    blocks
}

/// The data rows of the markdown table between `<!-- name:begin -->` and
/// `<!-- name:end -->`, each as its trimmed cells with backticks removed.
fn table(name: &str) -> Vec<Vec<String>> {
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let start = DOC
        .find(&begin)
        .unwrap_or_else(|| panic!("PROTOCOL.md has no {begin}"))
        + begin.len();
    let stop = start
        + DOC[start..]
            .find(&end)
            .unwrap_or_else(|| panic!("PROTOCOL.md has no {end}"));
    let rows: Vec<Vec<String>> = DOC[start..stop]
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with('|'))
        .skip(2) // the header row and the separator row
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().replace('`', ""))
                .collect()
        })
        .collect();
    assert!(!rows.is_empty(), "the {name} table of PROTOCOL.md is empty");
    rows
}

#[test]
fn the_worked_example_in_protocol_md_is_what_the_encoder_produces() {
    let blocks = fenced_blocks("hex");
    assert_eq!(
        blocks.len(),
        1,
        "PROTOCOL.md must hold exactly one ```hex block, the worked example"
    );
    let documented: String = blocks[0].split_whitespace().collect();
    assert_eq!(documented, hex(&example_datagram()));
}

#[test]
fn the_worked_example_decodes_back_to_the_example() {
    let key = Key::new(&SECRET).expect("valid");
    let datagram = example_datagram();
    assert_eq!(
        wire::open(&datagram, &key),
        Ok(Message::Heartbeat(example()))
    );
    assert!(
        DOC.contains(&format!("The whole datagram, {} bytes:", datagram.len())),
        "PROTOCOL.md states the example's length"
    );
}

#[test]
fn the_key_id_in_protocol_md_is_derived_from_the_example_secret_as_documented() {
    const MARKER: &str = "**Key id:** `";
    let at = DOC
        .find(MARKER)
        .expect("PROTOCOL.md states the example's key id")
        + MARKER.len();
    let documented = &DOC[at..at + DOC[at..].find('`').expect("closing backtick")];

    // The derivation as the document states it, computed independently of `auth`.
    let digest = Sha256::new()
        .chain_update(b"zerokeeper key id v1")
        .chain_update(SECRET)
        .finalize();
    assert_eq!(documented, hex(&digest[..4]));

    let key = Key::new(&SECRET).expect("valid");
    assert_eq!(documented, format!("{:08x}", key.id().0));
    assert_eq!(
        &example_datagram()[4..8],
        &digest[..4],
        "the header carries the key id bytes"
    );
    assert!(DOC.contains(&format!("as a big-endian integer, {}", key.id().0)));
}

#[test]
fn the_worked_example_tag_is_hmac_sha256_truncated_to_16_bytes() {
    let datagram = example_datagram();
    let (signed, tag) = datagram.split_at(datagram.len() - TAG_LEN);
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&SECRET).expect("any key length");
    mac.update(signed);
    assert_eq!(&mac.finalize().into_bytes()[..TAG_LEN], tag);
}

#[test]
fn the_annotated_fields_of_the_worked_example_cover_the_datagram_in_order() {
    let datagram = hex(&example_datagram());
    let mut offset = 0;
    let mut joined = String::new();
    for row in table("example-fields") {
        let documented_offset: usize = row[0].parse().expect("an offset in decimal");
        assert_eq!(
            documented_offset, offset,
            "field {:?} is at the wrong offset",
            row[2]
        );
        let bytes: String = row[1].split_whitespace().collect();
        assert_eq!(bytes.len() % 2, 0, "field {:?} holds half a byte", row[2]);
        offset += bytes.len() / 2;
        joined.push_str(&bytes);
    }
    assert_eq!(joined, datagram);
}

#[test]
fn the_kind_table_in_protocol_md_matches_the_code() {
    let rows = table("kinds");
    assert_eq!(rows.len(), 8, "every kind is documented once");
    for row in rows {
        let byte = u8::from_str_radix(row[0].trim_start_matches("0x"), 16).expect("a hex byte");
        let kind = Kind::from_byte(byte).unwrap_or_else(|| panic!("{byte:#04x} is not a kind"));
        assert_eq!(row[1], format!("{kind:?}"));
        let direction = if kind.is_from_proxy() {
            "proxy → keeper"
        } else {
            "keeper → proxy"
        };
        assert_eq!(row[2], direction, "{kind:?}");
    }
}

#[test]
fn the_enum_values_in_protocol_md_are_what_postcard_writes() {
    let rows = table("enums");
    assert_eq!(rows.len(), 6);
    for row in rows {
        let bytes = match (row[0].as_str(), row[1].as_str()) {
            ("ProxyStatus", "ready") => encoded(&ProxyStatus::Ready),
            ("ProxyStatus", "up") => encoded(&ProxyStatus::Up),
            ("ProxyStatus", "down") => encoded(&ProxyStatus::Down),
            ("AckStatus", "ready") => encoded(&AckStatus::Ready),
            ("AckStatus", "up") => encoded(&AckStatus::Up),
            ("AckStatus", "gone") => encoded(&AckStatus::Gone),
            other => panic!("unknown enum value {other:?} in PROTOCOL.md"),
        };
        let value: u8 = row[2].parse().expect("a small number");
        assert_eq!(bytes, vec![value], "{} {}", row[0], row[1]);
    }
}

fn encoded<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("an enum encodes")
}

#[test]
fn the_constants_in_protocol_md_are_the_crates() {
    let expected: [(&str, u64); 12] = [
        ("VERSION", u64::from(VERSION)),
        ("HEADER_LEN", HEADER_LEN as u64),
        ("TAG_LEN", TAG_LEN as u64),
        ("MIN_DATAGRAM", MIN_DATAGRAM as u64),
        ("MAX_DATAGRAM", MAX_DATAGRAM as u64),
        ("MAX_TIMING_MS", u64::from(MAX_TIMING_MS)),
        ("MIN_SECRET_LEN", MIN_SECRET_LEN as u64),
        ("MAX_SECRET_LEN", MAX_SECRET_LEN as u64),
        ("MAX_CLUSTER_LEN", MAX_CLUSTER_LEN as u64),
        ("MAX_PROXY_LEN", MAX_PROXY_LEN as u64),
        ("CHUNK_SIZE", CHUNK_SIZE as u64),
        ("MAX_CONFIG_BYTES", MAX_CONFIG_BYTES as u64),
    ];
    let rows = table("constants");
    assert_eq!(rows.len(), expected.len(), "one row per constant");
    for (name, value) in expected {
        let row = rows
            .iter()
            .find(|row| row[0] == name)
            .unwrap_or_else(|| panic!("PROTOCOL.md does not list {name}"));
        assert_eq!(row[1], value.to_string(), "{name}");
    }
}

#[test]
fn the_initial_config_document_in_protocol_md_is_the_crates() {
    let initial = ConfigVersion::initial();
    let spaced: Vec<String> = initial.bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        DOC.contains(&format!("`{}`", spaced.join(" "))),
        "PROTOCOL.md shows the initial document's bytes"
    );
    assert!(
        DOC.contains(&hex(&initial.digest)),
        "PROTOCOL.md shows the initial document's digest"
    );
}

/// The text after `marker` up to the next backtick.
fn quoted_after(marker: &str) -> &'static str {
    let at = DOC
        .find(marker)
        .unwrap_or_else(|| panic!("PROTOCOL.md has no {marker:?}"))
        + marker.len();
    &DOC[at..at + DOC[at..].find('`').expect("closing backtick")]
}

#[test]
fn the_derived_mac_key_in_protocol_md_is_hmac_of_the_label() {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&SECRET).expect("any key length");
    mac.update(b"zerokeeper v2 mac");
    let k = mac.finalize().into_bytes();
    assert_eq!(quoted_after("**K(\"mac\"):** `"), hex(&k));
    assert_eq!(zerokeeper::auth::derive(&SECRET, "mac").as_slice(), &k[..]);
}

#[test]
fn the_initial_config_id_in_protocol_md_is_derived_as_documented() {
    let initial = ConfigVersion::initial();
    let full = Sha256::new()
        .chain_update(b"zerokeeper config id")
        .chain_update(1u64.to_be_bytes())
        .chain_update(initial.digest)
        .finalize();
    let documented = quoted_after("has the id\n**`");
    assert_eq!(documented, hex(&full[..8]));
    assert_eq!(documented, initial.id.to_string());
}

#[test]
fn the_version_2_worked_examples_in_protocol_md_are_what_the_encoder_produces() {
    let key = Key::new(&SECRET).expect("valid");
    let blocks: Vec<String> = fenced_blocks("hex-v2")
        .into_iter()
        .map(|b| b.split_whitespace().collect())
        .collect();
    assert_eq!(blocks.len(), 2, "a heartbeat and its ack");
    let heartbeat = wire::encode_framed_to_vec(
        Version::V2,
        &Message::Heartbeat(example()),
        Trailer {
            term: 7,
            config: ConfigId::NONE,
        },
        &key,
    )
    .expect("fits");
    assert_eq!(blocks[0], hex(&heartbeat));
    // Section 15's bytes, with the version byte, the trailer and the tag changed.
    let v1 = example_datagram();
    assert_eq!(heartbeat[..2], v1[..2]);
    assert_eq!(heartbeat[3..75], v1[3..75]);
    assert_eq!(
        heartbeat[75..91],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]
    );
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(&zerokeeper::auth::derive(&SECRET, "mac"))
            .expect("any key length");
    mac.update(&heartbeat[..91]);
    assert_eq!(&mac.finalize().into_bytes()[..TAG_LEN], &heartbeat[91..]);
    let ack = wire::encode_framed_to_vec(
        Version::V2,
        &Message::Ack(wire::Ack {
            incarnation: example().incarnation,
            seq: 1,
            status: AckStatus::Ready,
            interval_ms: 1000,
            lost_after_ms: 3000,
            config_version: 1,
            slot: 1,
            token: Token::NONE,
        }),
        Trailer {
            term: 7,
            config: ConfigVersion::initial().id,
        },
        &key,
    )
    .expect("fits");
    assert_eq!(blocks[1], hex(&ack));
    for (bytes, what) in [(&heartbeat, "heartbeat"), (&ack, "ack")] {
        assert!(
            DOC.contains(&format!("{} bytes", bytes.len())),
            "PROTOCOL.md states the {what}'s length"
        );
        let framed = wire::open_framed(bytes, &key).expect("valid");
        assert_eq!(framed.trailer.term, 7);
    }
}

#[test]
fn version_2_sizes_are_version_1_sizes_plus_the_trailer_as_documented() {
    let key = Key::new(&SECRET).expect("valid");
    let trailer = Trailer {
        term: u64::MAX,
        config: ConfigId([0xff; 8]),
    };
    let messages = [
        Message::Heartbeat(example()),
        Message::Unregister(example()),
        Message::Restart(wire::Restart {
            incarnation: 1,
            seq: 1,
        }),
        Message::Challenge(wire::Challenge {
            incarnation: 1,
            seq: 1,
            token: Token::NONE,
        }),
        Message::Superseded(wire::Superseded {
            incarnation: 1,
            seq: 1,
            winner: 2,
        }),
    ];
    for message in messages {
        let v1 = wire::encode_to_vec(&message, &key).expect("fits").len();
        let v2 = wire::encode_framed_to_vec(Version::V2, &message, trailer, &key)
            .expect("fits")
            .len();
        let grows = if message.kind().names_config() { 16 } else { 8 };
        assert_eq!(v2, v1 + grows, "{:?}", message.kind());
    }
    assert!(DOC.contains("grows by 16 bytes"));
    assert!(DOC.contains("and by 8 in `Challenge`, `Restart` and `Superseded`"));
}

/// The smallest and largest datagram of every kind: smallest values and names, then
/// largest values and names (and 1024 bytes of config in a chunk).
fn extreme_sizes() -> [(&'static str, usize, usize); 7] {
    let key = Key::new(&SECRET).expect("valid");
    let len = |message: Message<'_>| wire::encode_to_vec(&message, &key).expect("fits").len();
    let long_cluster = "c".repeat(MAX_CLUSTER_LEN);
    let long_proxy = format!("{}:65535", "h".repeat(MAX_PROXY_LEN - 6));
    let heartbeat = |cluster, proxy, n: u64| Heartbeat {
        cluster,
        proxy,
        incarnation: n,
        seq: n,
        status: ProxyStatus::Down,
        config_version: n,
        slot: 0,
        token: Token::NONE,
    };
    let request = |cluster, proxy, n: u64, m: u32| wire::ConfigRequest {
        cluster,
        proxy,
        incarnation: n,
        seq: n,
        slot: 0,
        token: Token::NONE,
        version: n,
        first_index: m,
        count: m,
        padding: &[],
    };
    let ack = |n: u64, t: u32| wire::Ack {
        incarnation: n,
        seq: n,
        status: AckStatus::Gone,
        interval_ms: t,
        lost_after_ms: t,
        config_version: n,
        slot: 0,
        token: Token::NONE,
    };
    let chunk = |n: u64, m: u32, bytes| wire::ConfigChunk {
        incarnation: n,
        seq: n,
        version: n,
        index: m,
        total: m,
        size: m,
        digest: [0; 32],
        bytes,
    };
    let (n, m) = (u64::MAX, u32::MAX);
    [
        (
            "Heartbeat, Unregister",
            len(Message::Heartbeat(heartbeat("a", "a:1", 0))),
            len(Message::Unregister(heartbeat(
                &long_cluster,
                &long_proxy,
                n,
            ))),
        ),
        (
            "ConfigRequest",
            len(Message::ConfigRequest(request("a", "a:1", 0, 0))),
            len(Message::ConfigRequest(request(
                &long_cluster,
                &long_proxy,
                n,
                m,
            ))),
        ),
        (
            "Ack",
            len(Message::Ack(ack(0, 0))),
            len(Message::Ack(ack(n, MAX_TIMING_MS))),
        ),
        (
            "Challenge",
            len(Message::Challenge(wire::Challenge {
                incarnation: 0,
                seq: 0,
                token: Token::NONE,
            })),
            len(Message::Challenge(wire::Challenge {
                incarnation: n,
                seq: n,
                token: Token::NONE,
            })),
        ),
        (
            "Restart",
            len(Message::Restart(wire::Restart {
                incarnation: 0,
                seq: 0,
            })),
            len(Message::Restart(wire::Restart {
                incarnation: n,
                seq: n,
            })),
        ),
        (
            "Superseded",
            len(Message::Superseded(wire::Superseded {
                incarnation: 0,
                seq: 0,
                winner: 0,
            })),
            len(Message::Superseded(wire::Superseded {
                incarnation: n,
                seq: n,
                winner: n,
            })),
        ),
        (
            "ConfigChunk",
            len(Message::ConfigChunk(chunk(0, 0, &[]))),
            len(Message::ConfigChunk(chunk(n, m, &[0; CHUNK_SIZE]))),
        ),
    ]
}

#[test]
fn the_size_table_in_protocol_md_matches_the_encoder() {
    let rows = table("sizes");
    let expected = extreme_sizes();
    assert_eq!(rows.len(), expected.len(), "one row per message");
    for (name, smallest, largest) in expected {
        let row = rows
            .iter()
            .find(|row| row[0] == name)
            .unwrap_or_else(|| panic!("PROTOCOL.md has no size row {name:?}"));
        assert_eq!(row[1], smallest.to_string(), "smallest {name}");
        assert_eq!(row[2], largest.to_string(), "largest {name}");
    }
}

/// The sealed chunk of section 17.6's worked example: chunk 0 of the cluster's initial
/// config to the example heartbeat's process (seq 2), under term 7.
fn sealed_example() -> (Vec<u8>, [u8; 32], [u8; 32]) {
    let key = Key::new(&SECRET).expect("valid");
    let initial = ConfigVersion::initial();
    let keyed = key.keyed_digest(&initial.bytes);
    let k_cfg = key.config_key("test_cluster", &initial.id.0, &keyed, CHUNK_SIZE as u32);
    let sealed = zerokeeper::seal::ChunkSealer::new(&k_cfg).seal(0, &initial.bytes);
    let chunk = wire::ConfigChunk {
        incarnation: example().incarnation,
        seq: 2,
        version: 1,
        index: 0,
        total: 1,
        size: u32::try_from(initial.bytes.len()).expect("small"),
        digest: keyed,
        bytes: &sealed,
    };
    let datagram = wire::encode_framed_to_vec(
        Version::V2,
        &Message::SealedChunk(chunk),
        Trailer {
            term: 7,
            config: initial.id,
        },
        &key,
    )
    .expect("fits");
    (datagram, keyed, k_cfg)
}

#[test]
fn the_sealed_chunk_example_in_protocol_md_is_what_the_keeper_sends_and_the_agent_opens() {
    let key = Key::new(&SECRET).expect("valid");
    let (datagram, keyed, k_cfg) = sealed_example();
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(&zerokeeper::auth::derive(&SECRET, "digest"))
            .expect("any key length");
    mac.update(&ConfigVersion::initial().bytes);
    assert_eq!(&mac.finalize().into_bytes()[..], &keyed[..]);
    // HKDF-SHA256 written out: extract with the salt, expand one block.
    let mut extract =
        <Hmac<Sha256> as KeyInit>::new_from_slice(b"zerokeeper v2 config").expect("any key length");
    extract.update(&SECRET);
    let prk = extract.finalize().into_bytes();
    let mut expand = <Hmac<Sha256> as KeyInit>::new_from_slice(&prk).expect("any key length");
    expand.update(&[12]);
    expand.update(b"test_cluster");
    expand.update(&ConfigVersion::initial().id.0);
    expand.update(&keyed);
    expand.update(&(CHUNK_SIZE as u32).to_be_bytes());
    expand.update(&[1]);
    assert_eq!(&expand.finalize().into_bytes()[..], &k_cfg[..]);
    assert_eq!(quoted_after("**keyed digest:** `"), hex(&keyed));
    assert_eq!(quoted_after("**K_cfg:** `"), hex(&k_cfg));
    let blocks: Vec<String> = fenced_blocks("hex-sealed")
        .into_iter()
        .map(|b| b.split_whitespace().collect())
        .collect();
    assert_eq!(blocks, [hex(&datagram)]);
    assert!(DOC.contains(&format!("{} bytes", datagram.len())));
    // It opens as documented.
    let framed = wire::open_framed(&datagram, &key).expect("valid");
    let Message::SealedChunk(chunk) = framed.message else {
        panic!("a sealed chunk");
    };
    let opened = zerokeeper::seal::ChunkSealer::new(&k_cfg)
        .open(0, chunk.bytes)
        .expect("opens");
    assert_eq!(opened, ConfigVersion::initial().bytes.to_vec());
}
