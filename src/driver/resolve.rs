//! The keepers a proxy knows, by name: `HOST:PORT`s resolved to addresses, and resolved
//! again while the proxy cannot reach any of them (a keeper moved to another address
//! under the same name).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::driver::proxy::ProxyState;

/// How often names are resolved again while the proxy is searching for a keeper.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(5);

/// The address of `name` (`HOST:PORT`, or an IP literal and port) in the socket's
/// family (`v4`: IPv4, else IPv6): the first such address the resolver gives.
pub async fn resolve_one(name: &str, v4: bool) -> anyhow::Result<SocketAddr> {
    let addresses = tokio::net::lookup_host(name)
        .await
        .with_context(|| format!("cannot resolve keeper {name:?} (give HOST:PORT)"))?;
    let mut any = false;
    for address in addresses {
        any = true;
        if address.is_ipv4() == v4 {
            return Ok(address);
        }
    }
    if any {
        bail!(
            "keeper {name:?} has no {} address for this proxy's socket",
            if v4 { "IPv4" } else { "IPv6" }
        );
    }
    bail!("keeper {name:?} resolves to no address")
}

/// Every name's address, in order; fails on the first that does not resolve.
pub async fn resolve_all(names: &[String], v4: bool) -> anyhow::Result<Vec<SocketAddr>> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        out.push(resolve_one(name, v4).await?);
    }
    Ok(out)
}

/// Resolves `names` again every [`RESOLVE_EVERY`] while the proxy (whose state is
/// `state`) is searching for a keeper, and publishes changed addresses on `keepers`
/// (a name that does not resolve keeps its last address). Returns when the proxy's
/// driver is gone.
pub async fn keep_resolving(
    names: Vec<String>,
    v4: bool,
    keepers: watch::Sender<Vec<SocketAddr>>,
    mut state: watch::Receiver<ProxyState>,
) {
    loop {
        // Wait until the proxy searches.
        if state.wait_for(|s| s.searching).await.is_err() {
            return;
        }
        let mut fresh = keepers.borrow().clone();
        for (i, name) in names.iter().enumerate() {
            match resolve_one(name, v4).await {
                Ok(address) => {
                    if let Some(slot) = fresh.get_mut(i) {
                        *slot = address;
                    }
                }
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "keeper name not resolved; keeping its last address")
                }
            }
        }
        let changed = keepers.send_if_modified(|current| {
            if *current == fresh {
                false
            } else {
                *current = fresh.clone();
                true
            }
        });
        if changed {
            let keepers = crate::driver::proxy::addresses(&fresh);
            info!(%keepers, "keeper names resolved to new addresses");
        }
        tokio::time::sleep(RESOLVE_EVERY).await;
    }
}
