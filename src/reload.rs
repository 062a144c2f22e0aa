//! Reloading a running keeper's files: its keys, its admin tokens and its TLS
//! certificate, on SIGHUP or `POST /v1/reload`, without a restart.
//!
//! A reload resolves the configuration again exactly as `serve` did at start (the same
//! flags, environment and config file), so the keys are those the files say now. It is
//! all or nothing: if any file does not load (a key file unreadable or of the wrong mode,
//! a token file that does not parse, a certificate that does not match its key), nothing
//! changes and the error says why. Otherwise the new keyring goes to the keeper's driver,
//! which puts it in force in order with the datagrams ([`Keeper::set_keys`]), the tokens
//! are replaced for every request from then on, and the certificate for every handshake.
//!
//! Settings other than these are not reloaded: changing them needs a restart.
//!
//! [`Keeper::set_keys`]: crate::keeper::Keeper::set_keys

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tracing::{error, info};

use crate::api::{KeyView, Reloaded};
use crate::auth::{KeyScope, Keyring};
use crate::config::ServeArgs;
use crate::http::Access;
use crate::http::tls::Tls;

/// What a reload re-reads, and where it puts what it read.
#[derive(Debug)]
pub struct Reloader {
    args: ServeArgs,
    keys: watch::Sender<Keyring>,
    /// The keyring last sent, to say what a reload changed.
    current: Mutex<Keyring>,
    access: Access,
    tls: Option<Tls>,
}

impl Reloader {
    /// A reloader for a keeper started from `args` with `keys`, `access` and `tls`; the
    /// receiver goes to the keeper's [`Setup`](crate::server::Setup) as its key updates.
    pub fn new(
        args: ServeArgs,
        keys: Keyring,
        access: Access,
        tls: Option<Tls>,
    ) -> (Reloader, watch::Receiver<Keyring>) {
        let (sender, receiver) = watch::channel(keys.clone());
        let reloader = Reloader {
            args,
            keys: sender,
            current: Mutex::new(keys),
            access,
            tls,
        };
        (reloader, receiver)
    }

    /// Re-reads every file; all or nothing (see the module's documentation).
    pub fn reload(&self) -> Result<Reloaded, String> {
        let config = self.args.resolve().map_err(|e| e.to_string())?;
        if let Some(tls) = &self.tls {
            tls.reload().map_err(|e| e.to_string())?;
        }
        let keys: Vec<KeyView> = config
            .keyring
            .in_force()
            .map(|(id, scope)| KeyView {
                id: id.to_string(),
                cluster: match scope {
                    KeyScope::Default => None,
                    KeyScope::Cluster(name) => Some(name.to_string()),
                },
            })
            .collect();
        let change = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .replace(config.keyring.clone());
        self.keys.send_replace(config.keyring);
        let tokens = config.admin.tokens.len();
        if self.access.tokens().get().enabled() && tokens == 0 {
            tracing::warn!(
                "the reloaded configuration has no admin tokens: the admin API no longer asks who a caller is"
            );
        }
        self.access.tokens().replace(config.admin.tokens);
        let ids = |ids: Vec<crate::auth::KeyId>| ids.iter().map(ToString::to_string).collect();
        Ok(Reloaded {
            keys,
            added: ids(change.added),
            retired: ids(change.retired),
            rescoped: ids(change.rescoped),
            tokens,
            tls: self.tls.is_some(),
        })
    }

    /// Reloads on every SIGHUP, for ever, saying in the log what changed or why nothing
    /// did.
    pub async fn on_hangup(self: Arc<Self>) {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hangups) = signal(SignalKind::hangup()) else {
                error!("cannot listen for SIGHUP: reloading needs POST /v1/reload");
                return;
            };
            while hangups.recv().await.is_some() {
                let reloader = self.clone();
                match tokio::task::spawn_blocking(move || reloader.reload()).await {
                    Ok(Ok(done)) => log(&done),
                    Ok(Err(e)) => {
                        error!(error = %e, "configuration not reloaded: the keys, tokens and certificate in force stay");
                    }
                    Err(e) => error!(error = %e, "configuration not reloaded"),
                }
            }
        }
    }
}

/// Logs what a reload put in force.
pub fn log(done: &Reloaded) {
    info!(
        keys = done.keys.len(),
        added = %done.added.join(","),
        retired = %done.retired.join(","),
        rescoped = %done.rescoped.join(","),
        tokens = done.tokens,
        tls = done.tls,
        "configuration reloaded: keys, admin tokens{}",
        if done.tls { " and TLS certificate" } else { "" }
    );
}

impl crate::http::Reload for Reloader {
    fn reload(&self) -> Result<Reloaded, String> {
        let done = Reloader::reload(self)?;
        log(&done);
        Ok(done)
    }
}
