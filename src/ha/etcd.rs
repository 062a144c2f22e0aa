//! The leader election on etcd: a leader key held by a lease.
//!
//! - **Campaign.** A keeper grants itself a lease of `ttl` and, in one transaction, puts
//!   the leader key (under the store's private prefix: `…/.zk/election/leader`) with that
//!   lease *if the key does not exist*, together with the next term. If another keeper
//!   holds the key, it waits until the key is gone (its holder resigned, or stopped
//!   renewing and its lease expired, which deletes the key) and tries again.
//! - **The term** is a counter of its own (`…/election/term`), moved in the same
//!   transaction as the leader key: larger than every earlier term, and than every term
//!   the keeper has seen elsewhere (a store restored from a backup cannot hand out a term
//!   the fleet has seen).
//! - **The fence** is the leader key's create revision: every write of the leader's store
//!   compares it ([`Fence`]), so once the key is gone (or another keeper's), nothing the
//!   old leader writes lands.
//! - **Keeping it.** The leader renews its lease every third of `ttl`; each renewal that
//!   etcd answers moves the [`LeaseClock`] (from the renewal's *send* time), and the
//!   [`LeaseGate`] the driver checks. A renewal that is refused (the lease is gone) or
//!   that cannot be confirmed before the lease's end loses the leadership.
//!
//! etcd counts a lease's time-to-live in whole seconds; the default `ttl` is
//! [`DEFAULT_TTL`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::driver::DriverClock;
use crate::driver::keeper::unix_millis;
use crate::ha::{EtcdHealth, KeeperInfo, Leadership, LeaseClock, LeaseGate, Role};
use crate::store::etcd::{EtcdOptions, Fence};

/// The default time-to-live of the leader's lease: a leader that stops renewing it (dies,
/// or is cut off from etcd) is replaced about this long after its last renewal.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// How far before its lease's end a leader stops acting: clock rates differ between the
/// leader and etcd, and a leader notices its own end a little late.
pub const DEFAULT_MARGIN: Duration = Duration::from_secs(1);

/// How often a standby looks whether the leader key is gone.
const POLL: Duration = Duration::from_millis(250);

/// Why the election failed.
#[derive(Debug, Error)]
pub enum ElectionError {
    /// etcd refused, failed or did not answer in time.
    #[error("etcd: {0}")]
    Etcd(String),
    /// The leader key holds something that is not a leadership.
    #[error("the leader key {key} holds something else: {why}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        why: String,
    },
    /// The lease was lost (refused, expired, or not renewed in time).
    #[error("the leadership's lease was lost: {0}")]
    Lost(String),
}

fn etcd(e: impl std::fmt::Display) -> ElectionError {
    ElectionError::Etcd(e.to_string())
}

/// A won election: the leadership, its fence for the store, and its lease.
#[derive(Debug)]
pub struct Elected {
    /// Who leads, in which term, since when.
    pub leadership: Leadership,
    /// What the leader's store writes must compare.
    pub fence: Fence,
    /// The lease, as far as it is confirmed.
    pub lease: LeaseClock,
    lease_id: i64,
}

impl Elected {
    /// The etcd lease that holds the leader key.
    pub fn lease_id(&self) -> i64 {
        self.lease_id
    }
}

/// One keeper's side of the election.
#[derive(Clone)]
pub struct EtcdElection {
    client: Client,
    leader_key: String,
    term_key: String,
    ttl: Duration,
    margin: Duration,
    request_timeout: Duration,
    clock: DriverClock,
    health: Arc<EtcdHealth>,
}

impl std::fmt::Debug for EtcdElection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdElection")
            .field("leader_key", &self.leader_key)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl EtcdElection {
    /// Connects to the etcd of `options` for the election whose keys are `keys` (the
    /// leader key and the term key: [`crate::store::etcd::EtcdStore::election_keys`]).
    /// `ttl` is rounded up to whole seconds (at least 2); `clock` is the driver's.
    pub async fn connect(
        options: &EtcdOptions,
        keys: (String, String),
        ttl: Duration,
        margin: Duration,
        clock: DriverClock,
        health: Arc<EtcdHealth>,
    ) -> Result<EtcdElection, ElectionError> {
        let connect = crate::store::etcd::connect_options(options).map_err(etcd)?;
        let client = tokio::time::timeout(
            options.connect_timeout,
            Client::connect(options.endpoints.clone(), Some(connect)),
        )
        .await
        .map_err(|_| {
            etcd(format!(
                "cannot connect within {:?}",
                options.connect_timeout
            ))
        })?
        .map_err(etcd)?;
        let ttl = Duration::from_secs(ttl.as_secs_f64().ceil().max(2.0) as u64);
        Ok(EtcdElection {
            client,
            leader_key: keys.0,
            term_key: keys.1,
            ttl,
            margin: margin.min(ttl / 2),
            request_timeout: options.request_timeout,
            clock,
            health,
        })
    }

    /// The lease's time-to-live, in whole seconds.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The leader key.
    pub fn leader_key(&self) -> &str {
        &self.leader_key
    }

    /// Runs `call` within the request timeout.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, ElectionError> {
        let answer = match tokio::time::timeout(self.request_timeout, call).await {
            Ok(answer) => answer.map_err(etcd),
            Err(_) => Err(etcd(format!(
                "no answer within the request timeout of {:?}",
                self.request_timeout
            ))),
        };
        match &answer {
            Ok(_) => self.health.answered(),
            Err(_) => self.health.failed(),
        }
        answer
    }

    /// Who leads now, and the leader key's create revision (`None`: nobody).
    pub async fn leader(&mut self) -> Result<Option<(Leadership, i64)>, ElectionError> {
        let mut client = self.client.clone();
        let key = self.leader_key.clone();
        let mut answer = self.bounded(client.get(key, None)).await?;
        let Some(kv) = answer.take_kvs().into_iter().next() else {
            return Ok(None);
        };
        let created = kv.create_revision();
        let leadership: Leadership =
            serde_json::from_slice(kv.value()).map_err(|e| ElectionError::Corrupt {
                key: self.leader_key.clone(),
                why: e.to_string(),
            })?;
        Ok(Some((leadership, created)))
    }

    /// The stored term, and the term key's mod revision (0: no term yet).
    async fn term(&mut self) -> Result<(u64, i64), ElectionError> {
        let mut client = self.client.clone();
        let key = self.term_key.clone();
        let mut answer = self.bounded(client.get(key, None)).await?;
        let Some(kv) = answer.take_kvs().into_iter().next() else {
            return Ok((0, 0));
        };
        let term = std::str::from_utf8(kv.value())
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| ElectionError::Corrupt {
                key: self.term_key.clone(),
                why: "not a decimal term".to_owned(),
            })?;
        Ok((term, kv.mod_revision()))
    }

    /// Campaigns until `me` leads; `seen_term` is the largest term seen elsewhere (the
    /// new term is larger). While another keeper leads, `role` says who (a standby shows
    /// it). An etcd that fails or does not answer is retried (every second, logged once
    /// per outage). Returns once elected, with a lease just confirmed.
    pub async fn campaign(
        &mut self,
        me: &KeeperInfo,
        seen_term: u64,
        role: &tokio::sync::watch::Sender<Role>,
    ) -> Elected {
        let mut waiting_for: Option<i64> = None;
        let mut failing = false;
        loop {
            let attempt = match self.leader().await {
                Ok(Some((leadership, created))) => {
                    if waiting_for != Some(created) {
                        info!(leader = %leadership.leader.id, term = leadership.term,
                              "another keeper leads; waiting as a standby");
                        waiting_for = Some(created);
                        role.send_replace(Role::Standby(Some(leadership)));
                    }
                    Ok(None)
                }
                Ok(None) => {
                    if waiting_for.take().is_some() {
                        role.send_replace(Role::Standby(None));
                    }
                    self.try_lead(me, seen_term).await
                }
                Err(e) => Err(e),
            };
            match attempt {
                Ok(Some(elected)) => return elected,
                Ok(None) => {
                    if failing {
                        info!("etcd answers again: campaigning");
                        failing = false;
                    }
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => {
                    if !failing {
                        warn!(error = %e, "the election cannot reach etcd; retrying every second");
                        failing = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// One attempt: a lease, then the leader key and the next term if nobody holds it.
    async fn try_lead(
        &mut self,
        me: &KeeperInfo,
        seen_term: u64,
    ) -> Result<Option<Elected>, ElectionError> {
        let (stored, term_revision) = self.term().await?;
        let term = stored.max(seen_term) + 1;
        let mut lease = LeaseClock::new(self.margin);
        let renewal = lease.sent(self.clock.now());
        let mut client = self.client.clone();
        let ttl_secs = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let granted = self.bounded(client.lease_grant(ttl_secs, None)).await?;
        lease.answered(renewal, Duration::from_secs(granted.ttl().max(0) as u64));
        let leadership = Leadership {
            leader: me.clone(),
            term,
            since_unix_ms: unix_millis(SystemTime::now()),
        };
        let value = serde_json::to_vec(&leadership).map_err(etcd)?;
        let term_guard = if term_revision == 0 {
            Compare::create_revision(self.term_key.clone(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(self.term_key.clone(), CompareOp::Equal, term_revision)
        };
        let txn = Txn::new()
            .when([
                Compare::create_revision(self.leader_key.clone(), CompareOp::Equal, 0),
                term_guard,
            ])
            .and_then([
                TxnOp::put(
                    self.leader_key.clone(),
                    value,
                    Some(PutOptions::new().with_lease(granted.id())),
                ),
                TxnOp::put(self.term_key.clone(), term.to_string(), None),
            ]);
        let mut client = self.client.clone();
        let answer = self.bounded(client.txn(txn)).await?;
        if !answer.succeeded() {
            debug!("another keeper was elected first");
            let mut client = self.client.clone();
            let _ = self.bounded(client.lease_revoke(granted.id())).await;
            return Ok(None);
        }
        // The transaction created the leader key: its create revision is the
        // transaction's revision.
        let created = answer
            .header()
            .map(|h| h.revision())
            .ok_or_else(|| etcd("a transaction answered without a header"))?;
        info!(term, lease_ttl = ?self.ttl, "elected leader");
        Ok(Some(Elected {
            leadership,
            fence: Fence {
                key: self.leader_key.clone(),
                create_revision: created,
            },
            lease,
            lease_id: granted.id(),
        }))
    }

    /// Keeps the lease `lease_id` (confirmed as far as `lease` says): renews it every
    /// third of the time-to-live, publishing each confirmed deadline on `gate`. Returns
    /// (and closes the gate) when the lease is lost: refused, or not confirmed before its
    /// end. Owns a clone of the election, so it runs as a task of its own: the leader's
    /// boot, which may block a worker for a while, cannot delay a renewal.
    pub async fn keep(
        self,
        lease_id: i64,
        mut lease: LeaseClock,
        gate: Arc<LeaseGate>,
    ) -> ElectionError {
        gate.set(&lease);
        let every = self.ttl / 3;
        let mut client = self.client.clone();
        let (mut keeper, mut stream) = match self.bounded(client.lease_keep_alive(lease_id)).await {
            Ok(pair) => pair,
            Err(e) => {
                gate.close();
                return ElectionError::Lost(e.to_string());
            }
        };
        loop {
            let until = lease.until();
            let now = self.clock.now();
            let Some(until) = until.filter(|u| *u > now) else {
                gate.close();
                return ElectionError::Lost("not renewed before its end".to_owned());
            };
            // Wait a third of the lease, but never past its end.
            let wait = every.min(until - now);
            tokio::time::sleep(wait).await;
            let renewal = lease.sent(self.clock.now());
            // A renewal must be confirmed before the lease's end to count.
            let left = lease
                .until()
                .map_or(Duration::ZERO, |u| u.saturating_since(self.clock.now()));
            let answer = tokio::time::timeout(left, async {
                keeper.keep_alive().await?;
                stream.message().await
            })
            .await;
            match answer {
                Ok(Ok(Some(response))) if response.ttl() > 0 => {
                    self.health.renewed();
                    lease.answered(renewal, Duration::from_secs(response.ttl() as u64));
                    gate.set(&lease);
                }
                Ok(Ok(Some(_))) => {
                    gate.close();
                    return ElectionError::Lost("etcd says the lease has expired".to_owned());
                }
                Ok(Ok(None)) => {
                    gate.close();
                    return ElectionError::Lost("the renewal stream ended".to_owned());
                }
                Ok(Err(e)) => {
                    self.health.failed();
                    // A transient error: try again until the lease's end.
                    warn!(error = %e, "the lease renewal failed; retrying until the lease ends");
                    let mut client = self.client.clone();
                    match self.bounded(client.lease_keep_alive(lease_id)).await {
                        Ok(pair) => (keeper, stream) = pair,
                        Err(e) => warn!(error = %e, "cannot reopen the lease renewal"),
                    }
                }
                Err(_) => {
                    gate.close();
                    return ElectionError::Lost("not renewed before its end".to_owned());
                }
            }
        }
    }

    /// Raises the stored term to `seen` (a term the fleet echoed above this leader's),
    /// under the fence of `elected`, so that the next election, whichever keeper wins
    /// it, takes a term above every term the proxies have obeyed. A store restored from
    /// an older backup counts terms from its past; this is how it catches up.
    pub async fn raise_term(&mut self, elected: &Elected, seen: u64) -> Result<(), ElectionError> {
        let (stored, _) = self.term().await?;
        if stored >= seen {
            return Ok(());
        }
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.leader_key.clone(),
                CompareOp::Equal,
                elected.fence.create_revision,
            )])
            .and_then([TxnOp::put(self.term_key.clone(), seen.to_string(), None)]);
        let mut client = self.client.clone();
        let answer = self.bounded(client.txn(txn)).await?;
        if answer.succeeded() {
            info!(
                from = stored,
                to = seen,
                "raised the stored term to the newest the fleet has heard"
            );
            Ok(())
        } else {
            Err(ElectionError::Lost(
                "no longer the leader: the term was not raised".to_owned(),
            ))
        }
    }

    /// Gives the leadership up: revokes the lease, which deletes the leader key, so a
    /// standby is elected at once rather than after the lease's end.
    pub async fn resign(&mut self, elected: &Elected) {
        let mut client = self.client.clone();
        match self.bounded(client.lease_revoke(elected.lease_id)).await {
            Ok(_) => info!(term = elected.leadership.term, "resigned the leadership"),
            Err(e) => warn!(error = %e, "could not resign; the lease will end by itself"),
        }
    }
}
