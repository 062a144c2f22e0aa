//! `zerokeeper snapshot save|status|restore`: backups of a running keeper, as
//! `etcdctl snapshot save` and `etcdutl snapshot restore` make them.
//!
//! `save` downloads `GET /v1/snapshot` into `FILE.part`, makes it durable, verifies it as
//! `status` does, and only then renames it to `FILE`: a `FILE` that exists is a whole,
//! verified snapshot. `status` and `restore` need no keeper: they read the file.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::admin::{Failure, HttpArg, ListOutput, finish, pretty, write_out, yaml};
use crate::store::SnapshotSummary;
use crate::store::redb::{restore_snapshot, snapshot_status};

/// `zerokeeper snapshot`.
#[derive(clap::Args, Debug, Clone)]
pub struct SnapshotArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

/// What to do with snapshots.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum SnapshotCommand {
    /// Saves a snapshot of a running keeper's store to FILE (the keeper keeps serving;
    /// needs an admin token of the whole fleet when tokens are on).
    Save {
        /// Where to write it (`-`: standard output, unverified). An existing file is never
        /// overwritten.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The keeper's admin API.
        #[command(flatten)]
        http: HttpArg,
    },
    /// Verifies a snapshot file and prints what it holds.
    Status {
        /// The snapshot.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// What to print.
        #[arg(
            short = 'o',
            long = "output",
            value_enum,
            default_value = "table",
            value_name = "FORMAT"
        )]
        output: ListOutput,
    },
    /// Restores a snapshot into an empty data directory, for a keeper started on it with
    /// `serve --data-dir DIR` (stop the keeper whose store it replaces first).
    Restore {
        /// The snapshot.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The data directory to restore into; it must hold no store.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
}

impl SnapshotArgs {
    /// Runs the command; returns its exit code.
    pub fn run(self) -> ExitCode {
        let result = match self.command {
            SnapshotCommand::Save { file, http } => save(&file, &http),
            SnapshotCommand::Status { file, output } => snapshot_status(&file)
                .map_err(|e| Failure::Input(e.to_string()))
                .and_then(|summary| show(&summary, output)),
            SnapshotCommand::Restore { file, data_dir } => restore_snapshot(&file, &data_dir)
                .map_err(|e| Failure::Input(e.to_string()))
                .map(|summary| {
                    Some(format!(
                        "restored {} into {}: {}\nstart the keeper with --data-dir {}; on its first start it adopts the fleet for adopt_window, so proxies registered after the snapshot are not restarted",
                        file.display(),
                        data_dir.display(),
                        describe(&summary),
                        data_dir.display()
                    ))
                }),
        };
        finish(result)
    }
}

/// `snapshot save FILE`.
fn save(file: &Path, http: &HttpArg) -> Result<Option<String>, Failure> {
    let api = http.client()?;
    if file.as_os_str() == "-" {
        let mut stdout = io::stdout().lock();
        api.snapshot(&mut stdout)?;
        stdout.flush()?;
        return Ok(None);
    }
    if fs::symlink_metadata(file).is_ok() {
        return Err(Failure::Input(format!(
            "{} exists; a snapshot never overwrites a file: remove it or choose another name",
            file.display()
        )));
    }
    let mut partial = file.as_os_str().to_owned();
    partial.push(".part");
    let partial = PathBuf::from(partial);
    let local = |what: &str, e: io::Error| Failure::Input(format!("{what}: {e}"));
    // A snapshot holds every config, which are credentials: the owner's alone.
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(|e| local(&format!("cannot create {}", partial.display()), e))?;
    let saved = (|| {
        let sent = api.snapshot(&mut out)?;
        out.sync_all()
            .map_err(|e| local(&format!("cannot write {}", partial.display()), e))?;
        let summary = snapshot_status(&partial).map_err(|e| {
            Failure::Answer(format!(
                "the keeper sent a snapshot that does not verify: {e}"
            ))
        })?;
        if (summary.generation, summary.revision) != (sent.generation, sent.revision) {
            return Err(Failure::Answer(format!(
                "the keeper announced generation {} revision {}, and the snapshot holds generation {} revision {}",
                sent.generation, sent.revision, summary.generation, summary.revision
            )));
        }
        Ok(summary)
    })();
    let summary = match saved {
        Ok(summary) => summary,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
    };
    fs::rename(&partial, file).map_err(|e| {
        local(
            &format!("cannot rename {} to {}", partial.display(), file.display()),
            e,
        )
    })?;
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| local(&format!("cannot sync {}", dir.display()), e))?;
    Ok(Some(format!(
        "saved a snapshot of {} to {}: {}",
        api.base_url(),
        file.display(),
        describe(&summary)
    )))
}

/// One line of what a snapshot holds.
fn describe(s: &SnapshotSummary) -> String {
    format!(
        "generation {}, revision {}, {} proxies in {} clusters, {} config versions ({} sealed), {} bytes",
        s.generation,
        s.revision,
        s.proxies,
        s.clusters,
        s.config_versions,
        s.sealed_config_versions,
        s.bytes
    )
}

/// `snapshot status`'s output: `key: value` lines for people, or the document.
fn show(summary: &SnapshotSummary, output: ListOutput) -> Result<Option<String>, Failure> {
    match output {
        ListOutput::Json => Ok(Some(pretty(summary)?)),
        ListOutput::Yaml => Ok(Some(yaml(summary)?)),
        ListOutput::Table => {
            let plain = summary.config_versions - summary.sealed_config_versions;
            let rows = [
                ("format", summary.format.to_string()),
                ("generation", summary.generation.to_string()),
                ("revision", summary.revision.to_string()),
                ("epoch", summary.epoch.to_string()),
                ("proxies", summary.proxies.to_string()),
                ("clusters", summary.clusters.to_string()),
                (
                    "config versions",
                    format!(
                        "{} ({} sealed, {plain} plaintext)",
                        summary.config_versions, summary.sealed_config_versions
                    ),
                ),
                ("audit entries", summary.audit_entries.to_string()),
                ("changes", summary.changes.to_string()),
                ("bytes", summary.bytes.to_string()),
            ];
            let mut text = String::new();
            for (key, value) in rows {
                text.push_str(&format!("{:<16} {value}\n", format!("{key}:")));
            }
            write_out(&text)?;
            Ok(None)
        }
    }
}
