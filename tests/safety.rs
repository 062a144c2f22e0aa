//! What the keeper core does with hostile, stale and malformed input: nothing it should not.

mod common;

use std::time::Duration;

use common::{CLUSTER, FakeProxy, Reply, Rig};
use zerokeeper::auth::TAG_LEN;
use zerokeeper::auth::{Key, KeyScope, Keyring};
use zerokeeper::keeper::{ChangeKind, DropReason, Keeper, Outcome, Status};
use zerokeeper::time::Instant;
use zerokeeper::wire::{
    self, Ack, AckStatus, Heartbeat, MAX_DATAGRAM, Message, ProxyStatus, Token,
};

const P11: &str = "10.25.0.11:3000";

fn proxy() -> FakeProxy {
    FakeProxy::new(P11, 1_000, "127.0.0.1:40011")
}

#[test]
fn a_datagram_signed_with_another_key_changes_nothing_and_is_not_answered() {
    let mut rig = Rig::new();
    let mut p = proxy();
    p.key = common::other_key();
    let bytes = p.heartbeat(ProxyStatus::Ready);
    let replies = rig.deliver(&mut p, &bytes);
    assert!(replies.is_empty());
    assert!(rig.listing().is_empty());
    assert_eq!(rig.keeper.stats().dropped(DropReason::UnknownKey), 1);
}

#[test]
fn a_forged_tag_under_a_known_key_id_changes_nothing_and_is_not_answered() {
    let mut rig = Rig::new();
    let mut p = proxy();
    let mut bytes = p.heartbeat(ProxyStatus::Ready);
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    assert!(rig.deliver(&mut p, &bytes).is_empty());
    assert!(rig.listing().is_empty());
    assert_eq!(rig.keeper.stats().dropped(DropReason::BadTag), 1);
}

#[test]
fn a_replayed_heartbeat_changes_nothing_and_is_not_answered() {
    let mut rig = Rig::new();
    let mut p = proxy();
    rig.say(&mut p, ProxyStatus::Ready);
    let up = p.heartbeat(ProxyStatus::Up);
    rig.deliver(&mut p, &up);
    assert_eq!(rig.status(P11), Some(Status::Up));
    // The proxy dies; the keeper marks it lost. A replay of its last `up` must not revive it.
    rig.advance(Duration::from_millis(400));
    assert_eq!(rig.status(P11), Some(Status::Lost));
    assert!(rig.deliver(&mut p, &up).is_empty());
    assert_eq!(rig.status(P11), Some(Status::Lost));
    assert_eq!(rig.keeper.stats().dropped(DropReason::Stale), 1);
}

#[test]
fn a_delayed_ready_arriving_after_up_never_moves_the_proxy_back() {
    let mut rig = Rig::new();
    let mut p = proxy();
    rig.say(&mut p, ProxyStatus::Ready);
    let delayed_ready = p.heartbeat(ProxyStatus::Ready);
    rig.say(&mut p, ProxyStatus::Up);
    assert!(rig.deliver(&mut p, &delayed_ready).is_empty());
    assert_eq!(rig.status(P11), Some(Status::Up));
}

#[test]
fn a_duplicated_heartbeat_counts_once() {
    let mut rig = Rig::new();
    let mut p = proxy();
    rig.say(&mut p, ProxyStatus::Ready);
    let up = p.heartbeat(ProxyStatus::Up);
    assert!(!rig.deliver(&mut p, &up).is_empty());
    assert!(rig.deliver(&mut p, &up).is_empty());
    let transitions = rig
        .events
        .iter()
        .filter(|e| matches!(&e.kind, ChangeKind::Status(c) if c.to == Some(Status::Up)))
        .count();
    assert_eq!(transitions, 1);
}

#[test]
fn a_replayed_ready_of_a_deleted_proxy_changes_nothing() {
    let mut rig = Rig::new();
    let mut p = proxy();
    rig.say(&mut p, ProxyStatus::Ready);
    let ready = p.heartbeat(ProxyStatus::Ready);
    rig.deliver(&mut p, &ready);
    rig.say(&mut p, ProxyStatus::Down);
    assert_eq!(rig.status(P11), None);
    // While the tombstone lasts, the replay is older than the deletion: dropped silently.
    assert!(rig.deliver(&mut p, &ready).is_empty());
    assert_eq!(rig.status(P11), None);
    // After the tombstone expires, the replay's token is long stale: challenged, not counted.
    rig.advance(Duration::from_secs(10));
    assert_eq!(rig.keeper.tombstone_count(), 0);
    let replies = rig.deliver(&mut p, &ready);
    assert!(matches!(replies.as_slice(), [Reply::Challenge { .. }]));
    assert_eq!(rig.status(P11), None);
}

#[test]
fn a_replayed_heartbeat_after_a_keeper_restart_is_challenged_not_counted() {
    let mut rig = Rig::new();
    let mut p = proxy();
    rig.say(&mut p, ProxyStatus::Ready);
    let ready = p.heartbeat(ProxyStatus::Ready);
    rig.deliver(&mut p, &ready);
    // A new keeper process: a new epoch, no memory of seqs.
    let mut restarted = Rig::new();
    restarted.keeper = Keeper::new(
        common::config(),
        Keyring::with_default(common::key()),
        2,
        [8; 32],
        Instant::ZERO,
    )
    .expect("valid config");
    let replies = restarted.deliver(&mut p, &ready);
    assert!(matches!(replies.as_slice(), [Reply::Challenge { .. }]));
    assert!(restarted.listing().is_empty());
}

#[test]
fn two_processes_claiming_one_identity_do_not_flap() {
    let mut rig = Rig::new();
    let mut old = FakeProxy::new(P11, 1_000, "127.0.0.1:40011");
    let mut new = FakeProxy::new(P11, 2_000, "127.0.0.1:40099");
    rig.bring_up(&mut old);
    rig.say(&mut new, ProxyStatus::Ready);
    rig.say(&mut new, ProxyStatus::Up);
    let mut superseded = 0;
    for round in 0..50 {
        rig.advance(Duration::from_millis(50));
        for r in rig.say(&mut old, ProxyStatus::Up) {
            // At its first word the older process is challenged: the registered life has
            // not been heard since it appeared (it could have died). From then on both are
            // heard, and the older one is told, every time.
            if round == 0 && matches!(r, Reply::Challenge { .. }) {
                continue;
            }
            assert_eq!(
                r,
                Reply::Superseded {
                    incarnation: 1_000,
                    winner: 2_000
                }
            );
            superseded += 1;
        }
        rig.say(&mut new, ProxyStatus::Up);
        let info = rig.keeper.proxy(CLUSTER, P11).expect("listed");
        assert_eq!((info.status, info.incarnation), (Status::Up, 2_000));
    }
    assert!(
        superseded >= 49,
        "the old process is told, every time it speaks once both are heard"
    );
    assert_eq!(rig.keeper.stats().outcome(Outcome::Restarted), 0);
    let changes = rig
        .events
        .iter()
        .filter(|e| matches!(&e.kind, ChangeKind::Status(_)))
        .count();
    assert_eq!(
        changes, 4,
        "registered, up, new life, up: and nothing after"
    );
}

#[test]
fn a_newer_datagram_from_a_new_source_moves_the_reply_address() {
    let mut rig = Rig::new();
    let mut p = proxy();
    rig.bring_up(&mut p);
    p.source = "127.0.0.1:50000".parse().expect("valid address");
    rig.advance(Duration::from_millis(200));
    rig.say(&mut p, ProxyStatus::Up);
    assert_eq!(
        rig.keeper.proxy(CLUSTER, P11).expect("listed").source,
        p.source
    );
}

#[test]
fn restart_is_sent_at_most_once_per_heartbeat_interval() {
    let mut rig = Rig::new();
    let mut p = proxy();
    let mut restarts = 0;
    for _ in 0..20 {
        restarts += rig
            .say(&mut p, ProxyStatus::Up)
            .iter()
            .filter(|r| matches!(r, Reply::Restart { .. }))
            .count();
        rig.advance(Duration::from_millis(25));
    }
    // 500 ms of `up` every 25 ms, with a 100 ms interval: one restart per interval.
    assert_eq!(restarts, 5);
    assert_eq!(
        rig.keeper.stats().dropped(DropReason::RestartSuppressed),
        15
    );
}

#[test]
fn a_cluster_with_its_own_key_refuses_the_default_key() {
    let own = Key::new(&[0x77; 32]).expect("valid key");
    let mut keys = Keyring::with_default(common::key());
    keys.insert(own.clone(), KeyScope::Cluster(CLUSTER.into()))
        .expect("distinct");
    let mut rig = Rig::new();
    rig.keeper =
        Keeper::new(common::config(), keys, 1, [9; 32], Instant::ZERO).expect("valid config");
    let mut p = proxy();
    let bytes = p.heartbeat(ProxyStatus::Ready);
    assert!(rig.deliver(&mut p, &bytes).is_empty());
    assert_eq!(rig.keeper.stats().dropped(DropReason::WrongKey), 1);
    p.key = own;
    rig.say(&mut p, ProxyStatus::Ready);
    assert_eq!(rig.status(P11), Some(Status::Ready));
}

fn signed(key: &Key, header: [u8; 8], body: &[u8]) -> Vec<u8> {
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(body);
    let tag = key.tag(&bytes);
    bytes.extend_from_slice(&tag);
    bytes
}

#[test]
fn malformed_datagrams_are_counted_by_reason_and_never_answered() {
    let mut rig = Rig::new();
    let mut p = proxy();
    let key = common::key();
    let id = key.id().0.to_be_bytes();
    let header = |kind: u8| [b'Z', b'K', 1, kind, id[0], id[1], id[2], id[3]];
    let good = p.heartbeat(ProxyStatus::Ready);
    let mut trailing = good[..good.len() - TAG_LEN].to_vec();
    trailing.push(0);
    let trailing = signed(
        &key,
        trailing[..8].try_into().expect("8 bytes"),
        &trailing[8..],
    );
    let ack = wire::encode_to_vec(
        &Message::Ack(Ack {
            incarnation: 1,
            seq: 1,
            status: AckStatus::Up,
            interval_ms: 1,
            lost_after_ms: 3,
            config_version: 0,
            slot: 0,
            token: Token::NONE,
        }),
        &key,
    )
    .expect("fits");
    let bad_identity = wire::encode_to_vec(
        &Message::Heartbeat(Heartbeat {
            cluster: "test/cluster",
            proxy: P11,
            incarnation: 1,
            seq: 1,
            status: ProxyStatus::Ready,
            config_version: 0,
            slot: 0,
            token: Token::NONE,
        }),
        &key,
    )
    .expect("fits");
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (vec![], DropReason::Truncated),
        (vec![0; 23], DropReason::Truncated),
        (vec![0; MAX_DATAGRAM + 1], DropReason::Oversized),
        (vec![0; 64], DropReason::BadMagic),
        (
            [&b"ZK\x03\x01"[..], &[0; 60]].concat(),
            DropReason::BadVersion,
        ),
        (
            signed(&key, header(0x7f), &[0; 40]),
            DropReason::UnknownKind,
        ),
        (
            signed(&key, header(0x01), &[0xff; 40]),
            DropReason::Malformed,
        ),
        (trailing, DropReason::TrailingBytes),
        (ack, DropReason::UnexpectedKind),
        (bad_identity, DropReason::InvalidIdentity),
    ];
    for (bytes, reason) in &cases {
        let before = rig.keeper.stats().dropped(*reason);
        assert!(
            rig.deliver(&mut p, bytes).is_empty(),
            "{reason:?} was answered"
        );
        assert_eq!(
            rig.keeper.stats().dropped(*reason),
            before + 1,
            "{reason:?} not counted"
        );
    }
    assert!(rig.listing().is_empty());
    let stats = rig.keeper.stats();
    assert_eq!(stats.received, cases.len() as u64);
    assert_eq!(stats.dropped_total(), cases.len() as u64);
}

#[test]
fn identities_that_never_registered_cannot_grow_the_keepers_memory_without_bound() {
    let mut rig = Rig::with_config(zerokeeper::keeper::KeeperConfig {
        max_proxies: 2,
        // The whole cluster per round: the restart budget is not what this test is about.
        restart_permille: 1000,
        ..common::config()
    });
    let mut restarts = 0;
    for i in 0..5 {
        let mut p = FakeProxy::new(&format!("10.0.0.{i}:3000"), 1_000, "127.0.0.1:40011");
        restarts += rig
            .say(&mut p, ProxyStatus::Up)
            .iter()
            .filter(|r| matches!(r, Reply::Restart { .. }))
            .count();
    }
    assert_eq!(restarts, 2);
    assert_eq!(rig.keeper.tombstone_count(), 2);
    assert_eq!(rig.keeper.stats().dropped(DropReason::RegistryFull), 3);
    // Room comes back when the tombstones expire.
    rig.advance(Duration::from_secs(4));
    assert_eq!(rig.keeper.tombstone_count(), 0);
}

#[test]
fn heartbeats_naming_a_dot_cluster_or_dot_host_are_dropped_as_invalid_identities() {
    let mut rig = Rig::new();
    let mut p = proxy();
    let key = common::key();
    for (cluster, addr) in [
        ("..", P11),
        (".", P11),
        (CLUSTER, "..:3000"),
        (CLUSTER, ".:3000"),
    ] {
        let bytes = wire::encode_to_vec(
            &Message::Heartbeat(Heartbeat {
                cluster,
                proxy: addr,
                incarnation: 1,
                seq: 1,
                status: ProxyStatus::Up,
                config_version: 0,
                slot: 0,
                token: Token::NONE,
            }),
            &key,
        )
        .expect("fits");
        let before = rig.keeper.stats().dropped(DropReason::InvalidIdentity);
        assert!(
            rig.deliver(&mut p, &bytes).is_empty(),
            "{cluster} {addr} was answered"
        );
        assert_eq!(
            rig.keeper.stats().dropped(DropReason::InvalidIdentity),
            before + 1,
            "{cluster} {addr} not counted as invalid_identity"
        );
    }
    assert!(rig.listing().is_empty());
    assert!(rig.keeper.clusters().is_empty());
}

/// An hour in microseconds: the clock of a dead former life ran this far ahead.
const HOUR_US: u64 = 3_600_000_000;

#[test]
fn a_live_process_after_a_dead_life_with_a_clock_an_hour_fast_is_up_within_lost_after_and_an_interval()
 {
    let mut rig = Rig::new();
    let now_us = 1_767_225_600_000_000;
    let mut dead = FakeProxy::new(P11, now_us + HOUR_US, "127.0.0.1:40011");
    rig.bring_up(&mut dead);
    let last_heard = rig.now;
    // The fast life dies; a new process starts with the right clock: a smaller incarnation.
    let mut live = FakeProxy::new(P11, now_us + 1, "127.0.0.1:40012");
    let interval = rig.keeper.config().heartbeat_interval;
    let lost_after = rig.keeper.config().lost_after;
    let mut up_at = None;
    for _ in 0..40 {
        rig.advance(interval);
        // As an agent does: `ready` until its registration is acknowledged, then `up`.
        let registered = rig
            .keeper
            .proxy(CLUSTER, P11)
            .is_ok_and(|p| p.incarnation == live.incarnation);
        let status = if registered {
            ProxyStatus::Up
        } else {
            ProxyStatus::Ready
        };
        let replies = rig.say(&mut live, status);
        assert!(
            !replies
                .iter()
                .any(|r| matches!(r, Reply::Superseded { .. })),
            "the new process was told to stop because of a silent life: {replies:?}"
        );
        if rig
            .keeper
            .proxy(CLUSTER, P11)
            .is_ok_and(|p| p.incarnation == live.incarnation && p.status == Status::Up)
        {
            up_at = Some(rig.now);
            break;
        }
    }
    let up_at = up_at.expect("the new process took the identity");
    assert!(
        up_at - last_heard <= lost_after + interval * 2,
        "up {:?} after the dead life's last heartbeat",
        up_at - last_heard
    );
}

#[test]
fn after_a_fast_dead_life_was_deleted_a_new_process_registers_at_once_but_a_delayed_older_datagram_does_not()
 {
    let mut rig = Rig::new();
    let now_us = 1_767_225_600_000_000;
    // An older life whose datagram is still in flight, with a token it had then.
    let mut older = FakeProxy::new(P11, now_us, "127.0.0.1:40010");
    rig.bring_up(&mut older);
    let delayed = older.heartbeat(ProxyStatus::Ready);
    let mut fast = older.restarted(now_us + HOUR_US);
    rig.say(&mut fast, ProxyStatus::Ready);
    rig.say(&mut fast, ProxyStatus::Up);
    // The fast life unregisters: deleted, its tombstone holds the larger incarnation.
    rig.unregister(&mut fast);
    assert_eq!(rig.status(P11), None);
    // The delayed datagram of the older life (a token from before the deletion) does not
    // register anything.
    rig.advance(Duration::from_millis(100));
    let replies = rig.deliver(&mut older, &delayed);
    assert!(
        replies.iter().all(|r| matches!(r, Reply::Challenge { .. })),
        "{replies:?}"
    );
    assert_eq!(rig.status(P11), None);
    // A new process with the right clock registers as soon as it holds a token minted
    // after the deletion (one challenge), long before the tombstone expires.
    let mut live = FakeProxy::new(P11, now_us + 5, "127.0.0.1:40012");
    rig.say(&mut live, ProxyStatus::Ready);
    assert_eq!(rig.status(P11), Some(Status::Ready));
    rig.say(&mut live, ProxyStatus::Up);
    assert_eq!(rig.status(P11), Some(Status::Up));
    assert!(rig.keeper.tombstone_count() <= 1);
}

#[test]
fn a_delayed_datagram_of_an_earlier_life_does_not_take_the_identity_from_a_later_life_gone_silent()
{
    // Found by core_props: the later life (a larger incarnation) is silent for
    // `lost_after`, and a datagram the earlier life sent before it, with a token still
    // within its validity, arrives late. It must change nothing.
    let mut rig = Rig::new();
    let now_us = 1_767_225_600_000_000;
    let mut earlier = FakeProxy::new(P11, now_us, "127.0.0.1:40010");
    rig.say(&mut earlier, ProxyStatus::Ready);
    rig.say(&mut earlier, ProxyStatus::Ready);
    let delayed = earlier.heartbeat(ProxyStatus::Ready);
    let mut later = earlier.restarted(now_us + 1);
    rig.say(&mut later, ProxyStatus::Ready);
    assert_eq!(rig.status(P11), Some(Status::Ready));
    let registered = rig.keeper.proxy(CLUSTER, P11).expect("registered");
    rig.advance(rig.keeper.config().lost_after);
    let replies = rig.deliver(&mut earlier, &delayed);
    assert!(
        replies.iter().all(|r| matches!(r, Reply::Challenge { .. })),
        "{replies:?}"
    );
    assert_eq!(rig.keeper.proxy(CLUSTER, P11).expect("kept"), registered);
    // A live process of that earlier incarnation answers the challenge and takes the
    // identity from the silent life, as a process with a slow clock does.
    rig.say(&mut earlier, ProxyStatus::Ready);
    let now = rig.keeper.proxy(CLUSTER, P11).expect("registered");
    assert_eq!(now.incarnation, earlier.incarnation, "{now:?}");
}

/// A `ConfigRequest` of `p` for the cluster's config, padded to `padding` bytes.
fn config_request(p: &mut FakeProxy, padding: usize) -> Vec<u8> {
    p.seq += 1;
    let pad = vec![0u8; padding];
    let request = wire::ConfigRequest {
        cluster: &p.cluster,
        proxy: &p.proxy,
        incarnation: p.incarnation,
        seq: p.seq,
        slot: p.slot,
        token: p.token,
        version: 1,
        first_index: 0,
        count: 64,
        padding: &pad,
    };
    wire::encode_to_vec(&Message::ConfigRequest(request), &p.key).expect("fits")
}

/// Delivers `bytes` as if from `from` and returns the answers as (destination, size,
/// kind), and how many requests the keeper has challenged in all.
fn from_source(
    rig: &mut Rig,
    from: &str,
    bytes: &[u8],
) -> (Vec<(std::net::SocketAddr, usize, wire::Kind)>, u64) {
    let from: std::net::SocketAddr = from.parse().expect("an address");
    rig.keeper.handle_datagram(rig.now, from, bytes);
    let challenged = rig.keeper.stats().outcome(Outcome::Challenged);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut answers = Vec::new();
    while let Some(t) = rig.keeper.poll_transmit(&mut buf) {
        let kind = wire::parse_header(&buf[..t.len]).expect("a header").kind;
        answers.push((t.destination, t.len, kind));
    }
    (answers, challenged)
}

#[test]
fn a_config_request_replayed_from_another_source_gets_only_a_challenge_no_larger_than_itself() {
    let mut rig = Rig::new();
    rig.keeper
        .push_config(rig.now, CLUSTER, std::sync::Arc::from(&b"x = 1\n"[..]))
        .expect("pushed");
    let mut p = proxy();
    rig.bring_up(&mut p);
    // The genuine request, from the proxy's address, is answered with chunks.
    let request = config_request(&mut p, 1000);
    let (answers, _) = from_source(&mut rig, "127.0.0.1:40011", &request);
    assert!(
        answers
            .iter()
            .any(|(_, _, k)| *k == wire::Kind::ConfigChunk),
        "{answers:?}"
    );
    // The same bytes replayed from a victim's address: a challenge, no larger, nothing
    // else, and nothing changes.
    let before = rig.keeper.proxy(CLUSTER, P11).expect("listed");
    let challenged = rig.keeper.stats().outcome(Outcome::Challenged);
    let (answers, now_challenged) = from_source(&mut rig, "192.0.2.7:53", &request);
    assert_eq!(now_challenged, challenged + 1);
    assert_eq!(answers.len(), 1, "{answers:?}");
    let (to, len, kind) = answers[0];
    assert_eq!(
        (to, kind),
        ("192.0.2.7:53".parse().expect("addr"), wire::Kind::Challenge)
    );
    assert!(len <= request.len(), "{len} > {}", request.len());
    assert_eq!(rig.keeper.proxy(CLUSTER, P11).expect("listed"), before);
}

#[test]
fn a_heartbeat_replayed_from_another_source_changes_nothing() {
    let mut rig = Rig::new();
    let mut p = proxy();
    rig.bring_up(&mut p);
    rig.advance(Duration::from_millis(50));
    // A fresh heartbeat captured on its way and delivered first from a spoofed source.
    let captured = p.heartbeat(ProxyStatus::Up);
    let before = rig.keeper.proxy(CLUSTER, P11).expect("listed");
    let challenged = rig.keeper.stats().outcome(Outcome::Challenged);
    let (answers, now_challenged) = from_source(&mut rig, "192.0.2.7:53", &captured);
    assert_eq!(now_challenged, challenged + 1);
    assert!(
        answers
            .iter()
            .all(|(_, len, k)| *k == wire::Kind::Challenge && *len <= captured.len())
    );
    let after = rig.keeper.proxy(CLUSTER, P11).expect("listed");
    assert_eq!(after.source, before.source, "answers still go to the proxy");
    assert_eq!((after.status, after.since), (before.status, before.since));
}

#[test]
fn a_proxy_whose_address_changes_is_challenged_once_and_stays_up() {
    let mut rig = Rig::new();
    let mut p = proxy();
    rig.bring_up(&mut p);
    let since = rig.keeper.proxy(CLUSTER, P11).expect("listed").since;
    // A NAT rebinding: the same proxy, from a new port.
    p.source = "127.0.0.1:50000".parse().expect("valid address");
    rig.advance(Duration::from_millis(100));
    let bytes = p.heartbeat(ProxyStatus::Up);
    let replies = rig.deliver(&mut p, &bytes);
    assert_eq!(replies, [Reply::Challenge { seq: p.seq }]);
    let bytes = p.heartbeat(ProxyStatus::Up);
    rig.deliver(&mut p, &bytes);
    let listed = rig.keeper.proxy(CLUSTER, P11).expect("listed");
    assert_eq!(
        (listed.status, listed.since, listed.source),
        (Status::Up, since, p.source)
    );
    // It keeps counting from there.
    for _ in 0..10 {
        rig.advance(Duration::from_millis(100));
        let bytes = p.heartbeat(ProxyStatus::Up);
        let replies = rig.deliver(&mut p, &bytes);
        assert!(
            !replies.iter().any(|r| matches!(r, Reply::Challenge { .. })),
            "{replies:?}"
        );
    }
    assert_eq!(rig.status(P11), Some(Status::Up));
}

#[test]
fn a_replay_flood_from_one_spoofed_source_gets_a_few_challenges_and_other_proxies_theirs() {
    let mut rig = Rig::with_config(zerokeeper::keeper::KeeperConfig {
        challenge_limit: 4,
        ..common::config()
    });
    let mut p = proxy();
    rig.bring_up(&mut p);
    let captured = p.heartbeat(ProxyStatus::Up);
    let mut challenges = 0;
    for _ in 0..1000 {
        let (answers, _) = from_source(&mut rig, "192.0.2.7:53", &captured);
        challenges += answers.len();
    }
    assert_eq!(challenges, 4, "one interval's budget");
    assert!(rig.keeper.stats().dropped(DropReason::ChallengeLimited) >= 996);
    // Another proxy, from its own address, registers as ever meanwhile.
    let mut q = FakeProxy::new("10.25.0.12:3000", 7, "127.0.0.1:40012");
    rig.bring_up(&mut q);
    // The next interval, the budget is back.
    rig.advance(Duration::from_millis(100));
    let (answers, _) = from_source(&mut rig, "192.0.2.7:53", &captured);
    assert_eq!(answers.len(), 1);
    assert_eq!(rig.status(P11), Some(Status::Up));
}
