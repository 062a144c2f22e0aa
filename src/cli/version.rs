//! `zerokeeper version`: this client's version and the keeper's, with a warning when
//! they differ (as `kubectl version` does).

use std::process::ExitCode;

use crate::api::VersionView;
use crate::cli::admin::{HttpArg, finish};
use crate::cli::format::printable;

/// `zerokeeper version`.
#[derive(clap::Args, Debug, Clone)]
pub struct VersionArgs {
    /// Only this client's version: ask no keeper.
    #[arg(long)]
    pub client: bool,
    /// The keeper's admin API.
    #[command(flatten)]
    pub http: HttpArg,
}

impl VersionArgs {
    /// Runs the command; returns its exit code.
    pub fn run(self) -> ExitCode {
        let client = VersionView::this();
        println!("client: zerokeeper {}", client.version);
        if self.client {
            return ExitCode::SUCCESS;
        }
        let result = self.http.client().and_then(|api| {
            let keeper = api.version()?;
            let protocols: Vec<String> = keeper.protocols.iter().map(u8::to_string).collect();
            let text = format!(
                "keeper: zerokeeper {} at {} (heartbeat protocols {})",
                printable(&keeper.version),
                api.base_url(),
                protocols.join(", ")
            );
            if let Some(warning) = skew(&client, &keeper) {
                eprintln!("warning: {warning}");
            }
            Ok(Some(text))
        });
        finish(result)
    }
}

/// Why `client` and `keeper` should not be used together as they are, if they differ.
pub fn skew(client: &VersionView, keeper: &VersionView) -> Option<String> {
    if client.version == keeper.version {
        return None;
    }
    Some(format!(
        "this client is zerokeeper {} and the keeper {}: the admin API may differ between \
         releases; use the client of the keeper's release",
        client.version,
        printable(&keeper.version)
    ))
}
