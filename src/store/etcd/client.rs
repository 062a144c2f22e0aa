//! The etcd client on a thread of its own: the store's trait is synchronous, and may be
//! called from inside a tokio runtime (a keeper boots its store there), where blocking on
//! a future would panic. So the async `etcd-client` runs on a current-thread runtime of
//! this thread, and the store talks to it over channels: a job goes in, its answer comes
//! back on a std channel that the caller waits on with a deadline.

use std::cell::Cell;
use std::fs;
use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, GetResponse, Identity, KvClient, TlsOptions,
    Txn, TxnResponse,
};
use tokio::sync::mpsc as tokio_mpsc;

use super::{EtcdOptions, EtcdTls};
use crate::store::StoreError;

/// The most one answer may hold. Pages are sized to stay far below it; tonic's default of
/// 4 MiB would be too close to a page of blob parts.
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// A job for the client thread.
type Job = Box<dyn FnOnce(KvClient) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// How an etcd call failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// etcd answered with an error, or could not be reached: the request was not applied
    /// if it never reached etcd, and may have been if the connection broke after it did.
    Etcd(String),
    /// No answer within the request timeout: the request may have been applied.
    Timeout,
}

impl Failure {
    pub(super) fn message(&self, timeout: Duration) -> String {
        match self {
            Failure::Etcd(e) => e.clone(),
            Failure::Timeout => format!("no answer within the request timeout of {timeout:?}"),
        }
    }
}

/// Counts of the requests a store made, for tests and measurements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EtcdStats {
    /// Transactions sent.
    pub txns: u64,
    /// Range requests (reads) sent.
    pub ranges: u64,
    /// The most operations one transaction carried.
    pub max_txn_ops: usize,
    /// The most bytes (keys and values) one transaction carried.
    pub max_txn_bytes: usize,
}

/// A key's value and create revision, as read.
pub(super) type Found = (Vec<u8>, i64);

/// The client's connection settings of `options`: its timeouts, user and TLS.
pub(crate) fn connect_options(options: &EtcdOptions) -> Result<ConnectOptions, String> {
    let mut connect = ConnectOptions::new()
        .with_timeout(options.request_timeout)
        .with_connect_timeout(options.connect_timeout);
    if let Some((user, password)) = &options.user {
        connect = connect.with_user(user.as_str(), password.as_str());
    }
    if let Some(tls) = &options.tls {
        connect = connect.with_tls(tls_options(tls)?);
    }
    Ok(connect)
}

/// The client's TLS settings from PEM files, as `etcdctl --cacert/--cert/--key` take them.
fn tls_options(tls: &EtcdTls) -> Result<TlsOptions, String> {
    let read = |path: &std::path::Path| {
        fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let mut config = TlsOptions::new();
    if let Some(ca) = &tls.ca_file {
        config = config.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        (None, None) => {}
        _ => return Err("a client certificate needs both its cert and its key file".to_owned()),
    }
    Ok(config)
}

/// The handle of the client thread. Dropping it ends the thread once its job is done.
pub(super) struct Etcd {
    jobs: tokio_mpsc::UnboundedSender<Job>,
    timeout: Duration,
    /// The endpoints, for error messages.
    pub(super) endpoints: String,
    stats: Cell<EtcdStats>,
}

impl Etcd {
    /// Another handle on the same client thread and connection, with counters of its
    /// own (for a reader beside the handle that commits).
    pub(super) fn sibling(&self) -> Etcd {
        Etcd {
            jobs: self.jobs.clone(),
            timeout: self.timeout,
            endpoints: self.endpoints.clone(),
            stats: Cell::new(EtcdStats::default()),
        }
    }

    /// Starts the client thread and connects (etcd-client connects lazily: an etcd that is
    /// down is noticed at the first request, not here, unless a user must authenticate).
    pub(super) fn connect(options: &EtcdOptions) -> Result<Etcd, StoreError> {
        let endpoints = options.endpoints.join(",");
        let io = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Io(format!("etcd {endpoints}: {what}: {e}"))
        };
        if options.endpoints.is_empty() {
            return Err(StoreError::Io("etcd: no endpoints given".to_owned()));
        }
        let connect = connect_options(options).map_err(|e| io("TLS", &e))?;

        let (jobs, mut queue) = tokio_mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), String>>(1);
        let list = options.endpoints.clone();
        let connect_timeout = options.connect_timeout;
        thread::Builder::new()
            .name("zk-etcd".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cannot start its runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let client = match tokio::time::timeout(
                        connect_timeout,
                        Client::connect(list, Some(connect)),
                    )
                    .await
                    {
                        Ok(Ok(client)) => client,
                        Ok(Err(e)) => {
                            let _ = ready_tx.send(Err(format!("cannot connect: {e}")));
                            return;
                        }
                        Err(_) => {
                            let _ = ready_tx
                                .send(Err(format!("cannot connect within {connect_timeout:?}")));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let kv = client
                        .kv_client()
                        .max_decoding_message_size(MAX_ANSWER_BYTES);
                    // One job at a time: the store waits for each answer anyway.
                    while let Some(job) = queue.recv().await {
                        job(kv.clone()).await;
                    }
                    drop(client);
                });
            })
            .map_err(|e| io("cannot start the client thread", &e))?;
        match ready_rx.recv_timeout(connect_timeout + Duration::from_secs(1)) {
            Ok(Ok(())) => Ok(Etcd {
                jobs,
                timeout: options.request_timeout,
                endpoints,
                stats: Cell::new(EtcdStats::default()),
            }),
            Ok(Err(e)) => Err(StoreError::Io(format!("etcd {endpoints}: {e}"))),
            Err(_) => Err(StoreError::Io(format!(
                "etcd {endpoints}: the client did not start within {connect_timeout:?}"
            ))),
        }
    }

    /// The request timeout.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The counts so far.
    pub(super) fn stats(&self) -> EtcdStats {
        self.stats.get()
    }

    /// Runs `call` on the client thread and waits for its answer, at most the request
    /// timeout (and a second for the channels).
    fn call<T, F, Fut>(&self, call: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce(KvClient) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let timeout = self.timeout;
        let job: Job = Box::new(move |kv| {
            Box::pin(async move {
                let answer = match tokio::time::timeout(timeout, call(kv)).await {
                    Ok(Ok(value)) => Ok(value),
                    Ok(Err(e)) => Err(Failure::Etcd(e.to_string())),
                    Err(_) => Err(Failure::Timeout),
                };
                // The caller may have given up waiting: nothing to do then.
                let _ = tx.send(answer);
            })
        });
        self.jobs
            .send(job)
            .map_err(|_| Failure::Etcd("the etcd client thread has stopped".to_owned()))?;
        match rx.recv_timeout(timeout + Duration::from_secs(1)) {
            Ok(answer) => answer,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(Failure::Timeout),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(Failure::Etcd(
                "the etcd client thread has stopped".to_owned(),
            )),
        }
    }

    /// Sends a transaction of `ops` operations and `bytes` bytes.
    pub(super) fn txn(&self, txn: Txn, ops: usize, bytes: usize) -> Result<TxnResponse, Failure> {
        let mut stats = self.stats.get();
        stats.txns += 1;
        stats.max_txn_ops = stats.max_txn_ops.max(ops);
        stats.max_txn_bytes = stats.max_txn_bytes.max(bytes);
        self.stats.set(stats);
        self.call(move |mut kv| async move { kv.txn(txn).await })
    }

    /// Reads the keys in `start..end`, at most `limit` of them, at etcd revision `at` (0:
    /// the latest).
    pub(super) fn range(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: i64,
        at: i64,
    ) -> Result<GetResponse, Failure> {
        let mut stats = self.stats.get();
        stats.ranges += 1;
        self.stats.set(stats);
        let options = GetOptions::new()
            .with_range(end)
            .with_limit(limit)
            .with_revision(at);
        self.call(move |mut kv| async move { kv.get(start, Some(options)).await })
    }

    /// Reads each of `keys` (one request each, sent together: one round trip): its value
    /// and create revision, if it exists.
    pub(super) fn get_many(&self, keys: Vec<Vec<u8>>) -> Result<Vec<Option<Found>>, Failure> {
        let mut stats = self.stats.get();
        stats.ranges += keys.len() as u64;
        self.stats.set(stats);
        self.call(move |kv| async move {
            let reads = keys.into_iter().map(|key| {
                let mut kv = kv.clone();
                async move { kv.get(key, None).await }
            });
            let mut values = Vec::new();
            for answer in futures_util::future::join_all(reads).await {
                let mut answer = answer?;
                values.push(answer.take_kvs().pop().map(|kv| {
                    let created = kv.create_revision();
                    (kv.into_key_value().1, created)
                }));
            }
            Ok(values)
        })
    }
}
