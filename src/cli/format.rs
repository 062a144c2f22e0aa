//! What the operator's commands print: aligned tables, human durations, watch lines.
//!
//! Everything here is a pure function of its arguments, so it is tested without a keeper.

use std::cmp::Ordering;
use std::fmt::Write as _;

use crate::api::{AuditView, ProxyList, ProxyView, WatchEvent, key_lines};

/// How `zerokeeper status` prints what it finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// The table with more columns: the config version each proxy runs, the id of the
    /// key it signs with (to check a key rotation), and the address it sends from.
    Wide,
    /// JSON: the array of proxies (pretty); when watching, the listing as one line,
    /// then one watch event per line.
    Json,
    /// The same documents as `json`, in YAML; when watching, one YAML document (`---`)
    /// for the listing, then one per watch event.
    Yaml,
    /// The seed listing's lines `/zerodb/proxy/C/status/ADDR->STATUS`, or etcdctl-style
    /// `PUT`/`DELETE` lines when watching.
    Keys,
}

/// The header of the proxy table, column by column.
pub const PROXY_COLUMNS: [&str; 6] = [
    "CLUSTER",
    "PROXY",
    "STATUS",
    "INCARNATION",
    "LAST SEEN",
    "AGE",
];

/// The columns `-o wide` adds after [`PROXY_COLUMNS`].
pub const WIDE_COLUMNS: [&str; 3] = ["CONFIG", "KEY", "SOURCE"];

/// What the table shows for a time the keeper does not know.
pub const UNKNOWN: &str = "unknown";

/// Columns of a table are separated by this many spaces.
const GAP: usize = 2;

/// A duration in milliseconds, short and human: `850ms`, `3.2s` (under 10 s, one decimal,
/// truncated), `42s`, `3m`, `2h`, `5d`. Each unit is truncated, never rounded up, so
/// `59999` is `59s`, not `60s`.
pub fn human_duration(ms: u64) -> String {
    const SECOND: u64 = 1_000;
    const MINUTE: u64 = 60 * SECOND;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    match ms {
        0..SECOND => format!("{ms}ms"),
        SECOND..10_000 => format!("{}.{}s", ms / SECOND, ms % SECOND / 100),
        10_000..MINUTE => format!("{}s", ms / SECOND),
        MINUTE..HOUR => format!("{}m", ms / MINUTE),
        HOUR..DAY => format!("{}h", ms / HOUR),
        _ => format!("{}d", ms / DAY),
    }
}

/// Time since something happened: `120ms ago`, `3.2s ago`, `5m ago`.
pub fn ago(ms: u64) -> String {
    format!("{} ago", human_duration(ms))
}

/// Lays out rows under a header in columns separated by two spaces, each column as wide
/// as its widest cell. Every line ends in `\n` and has no trailing spaces; with no rows
/// only the header is printed. Rows shorter than the header leave their last columns
/// empty; cells beyond the header's are ignored.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, width) in widths.iter().enumerate() {
            let cell = row.get(i).map_or("", String::as_str);
            if i > 0 {
                line.push_str(&" ".repeat(GAP));
            }
            line.push_str(cell);
            line.push_str(&" ".repeat(width.saturating_sub(cell.chars().count())));
        }
        out.push_str(line.trim_end_matches(' '));
        out.push('\n');
    }
    out
}

/// The header of `zerokeeper audit`'s table.
pub const AUDIT_COLUMNS: [&str; 6] = ["TIME", "BY", "ACTION", "CLUSTER", "RESULT", "DETAIL"];

/// `zerokeeper audit`'s table: one row per entry, oldest first, as the keeper sent them.
/// `BY` is `-` for an action no token authenticated.
pub fn audit_table(entries: &[AuditView]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            [
                e.at.as_str(),
                e.by.as_deref().unwrap_or("-"),
                &e.action,
                &e.cluster,
                &e.result,
                &audit_detail(e),
            ]
            .map(printable)
            .to_vec()
        })
        .collect();
    table(&AUDIT_COLUMNS, &rows)
}

/// What an audit entry did or asked, in a few words: `10.0.0.1:3307 (was up)`,
/// `version 3 (70 bytes)`, `hg0: a -> b (version 4)`, or for a refusal what was asked and
/// why.
pub fn audit_detail(e: &AuditView) -> String {
    let field = |name: &str| match e.details.get(name) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => "?".to_owned(),
        Some(other) => other.to_string(),
    };
    if e.result == "refused" {
        return format!("{}: {}", field("asked"), field("reason"));
    }
    match e.action.as_str() {
        "remove" => format!("{} (was {})", field("proxy"), field("status")),
        "push_config" => format!("version {} ({} bytes)", field("version"), field("size")),
        "switch" => format!(
            "{}: {} -> {} (version {})",
            field("hostgroup"),
            field("from"),
            field("to"),
            field("version")
        ),
        "rollback" => format!(
            "to version {} (as version {})",
            field("to"),
            field("version")
        ),
        "hostgroup_set" => {
            let datasources = match e.details.get("datasources") {
                Some(serde_json::Value::Array(list)) => list
                    .iter()
                    .map(|d| d.as_str().map_or_else(|| d.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => "?".to_owned(),
            };
            format!(
                "{}: {datasources} (current {})",
                field("hostgroup"),
                field("current")
            )
        }
        "hostgroup_delete" => format!("{} undeclared", field("hostgroup")),
        "freeze" | "unfreeze" | "delete_cluster" => String::new(),
        _ => serde_json::Value::Object(e.details.clone()).to_string(),
    }
}

/// Compares two names as people read them: runs of digits by their value, the rest byte
/// by byte, so `10.25.0.2:3000` sorts before `10.25.0.11:3000` (and `p9` before `p10`).
/// Names equal so (`007` and `7`) fall back to byte order, so the order is total.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    fn runs(s: &str) -> impl Iterator<Item = &str> {
        let mut rest = s;
        std::iter::from_fn(move || {
            let first = rest.chars().next()?;
            let digit = first.is_ascii_digit();
            let end = rest
                .find(|c: char| c.is_ascii_digit() != digit)
                .unwrap_or(rest.len());
            let (run, tail) = rest.split_at(end);
            rest = tail;
            Some(run)
        })
    }
    let (mut x, mut y) = (runs(a), runs(b));
    loop {
        match (x.next(), y.next()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) => {
                let numbers = p.as_bytes()[0].is_ascii_digit() && q.as_bytes()[0].is_ascii_digit();
                let order = if numbers {
                    let (p, q) = (p.trim_start_matches('0'), q.trim_start_matches('0'));
                    p.len().cmp(&q.len()).then_with(|| p.cmp(q))
                } else {
                    p.cmp(q)
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

/// What `status` sorts its table by (`--sort-by`); proxies equal by it keep the natural
/// order of cluster, then identity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    /// Cluster, then identity (both in natural order).
    #[default]
    Cluster,
    /// Identity, then cluster.
    Proxy,
    /// Status (`lost`, `ready`, `up`).
    Status,
    /// Incarnation, oldest first.
    Incarnation,
    /// The last heartbeat, most recent first (unknown last).
    LastSeen,
    /// Time in the current status, shortest first (unknown last).
    Since,
}

/// How a proxy listing is laid out: the wide columns or not, its order, and whether
/// the header line is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Add the [`WIDE_COLUMNS`].
    pub wide: bool,
    /// The order of the rows.
    pub sort_by: SortBy,
    /// Print the header line.
    pub headers: bool,
}

impl Default for Layout {
    fn default() -> Layout {
        Layout {
            wide: false,
            sort_by: SortBy::Cluster,
            headers: true,
        }
    }
}

/// Sorts `proxies` as `by` says.
pub fn sort_proxies(proxies: &mut [&ProxyView], by: SortBy) {
    let natural = |a: &ProxyView, b: &ProxyView| {
        natural_cmp(&a.cluster, &b.cluster).then_with(|| natural_cmp(&a.proxy, &b.proxy))
    };
    let unknown_last = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => a.cmp(&b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    proxies.sort_by(|a, b| {
        let first = match by {
            SortBy::Cluster => Ordering::Equal,
            SortBy::Proxy => natural_cmp(&a.proxy, &b.proxy),
            SortBy::Status => a.status.cmp(&b.status),
            SortBy::Incarnation => a.incarnation.cmp(&b.incarnation),
            SortBy::LastSeen => unknown_last(a.last_heartbeat_age_ms, b.last_heartbeat_age_ms),
            SortBy::Since => unknown_last(a.since_age_ms, b.since_age_ms),
        };
        first.then_with(|| natural(a, b))
    });
}

/// The `status -o table` listing: one row per proxy, sorted by cluster then proxy (in
/// natural order). A time the keeper does not know reads `unknown`.
pub fn proxy_table(proxies: &[ProxyView]) -> String {
    proxy_listing(proxies, Layout::default())
}

/// [`proxy_table`] with the [`WIDE_COLUMNS`] too (`-o wide`): the config version each
/// proxy reports, the id of its key (`unknown` until this keeper hears it) and its
/// source address.
pub fn wide_proxy_table(proxies: &[ProxyView]) -> String {
    proxy_listing(
        proxies,
        Layout {
            wide: true,
            ..Layout::default()
        },
    )
}

/// The proxy table laid out as `layout` says.
pub fn proxy_listing(proxies: &[ProxyView], layout: Layout) -> String {
    let wide = layout.wide;
    let mut sorted: Vec<&ProxyView> = proxies.iter().collect();
    sort_proxies(&mut sorted, layout.sort_by);
    let rows: Vec<Vec<String>> = sorted
        .into_iter()
        .map(|p| {
            let mut row = vec![
                printable(&p.cluster),
                printable(&p.proxy),
                printable(&p.status),
                p.incarnation.to_string(),
                p.last_heartbeat_age_ms
                    .map_or_else(|| UNKNOWN.to_owned(), ago),
                p.since_age_ms
                    .map_or_else(|| UNKNOWN.to_owned(), human_duration),
            ];
            if wide {
                row.push(p.config_version.to_string());
                row.push(
                    p.key_id
                        .as_deref()
                        .map_or_else(|| UNKNOWN.to_owned(), printable),
                );
                row.push(
                    p.source
                        .as_deref()
                        .map_or_else(|| UNKNOWN.to_owned(), printable),
                );
            }
            row
        })
        .collect();
    let header: Vec<&str> = if wide {
        PROXY_COLUMNS.iter().chain(&WIDE_COLUMNS).copied().collect()
    } else {
        PROXY_COLUMNS.to_vec()
    };
    let text = table(&header, &rows);
    if layout.headers {
        text
    } else {
        // The columns keep the widths the header gave them, so a script's `cut` still
        // finds them where a person sees them.
        text.split_once('\n')
            .map_or_else(String::new, |(_, rest)| rest.to_owned())
    }
}

/// What `status --watch` prints for a listing (the first, and each after a `410`), in
/// `mode`: `table`, the table with its mass-loss notes; `json`, the listing as one line
/// (`{"generation", "revision", "proxies": [...]}`); `keys`, the seed lines. Ends in a
/// newline unless empty.
pub fn watch_listing(list: &ProxyList, mode: Output) -> String {
    match mode {
        Output::Table | Output::Wide => {
            let mut text = if mode == Output::Wide {
                wide_proxy_table(&list.proxies)
            } else {
                proxy_table(&list.proxies)
            };
            text.push_str(&paused_notes(&list.proxies));
            text
        }
        Output::Json => match serde_json::to_string(list) {
            Ok(line) => line + "\n",
            Err(_) => String::new(),
        },
        Output::Yaml => match crate::cli::yaml::to_yaml(list) {
            Ok(doc) => format!("---\n{doc}"),
            Err(_) => String::new(),
        },
        Output::Keys => key_lines(&list.proxies),
    }
}

/// The line `status --watch` prints for one event in `mode`, without its newline, or
/// `None` when that mode skips the event (`keys` shows only status changes).
///
/// - `table`: `<at> <cluster> <proxy> <from|-> -> <to|-> (<reason>)` for a status change,
///   `<at> <cluster> <proxy> restart sent (incarnation N)`,
///   `<at> <cluster> <proxy> superseded (incarnation N told to stop)`,
///   `<at> <cluster> config version N` (with `(hostgroup H: A -> B)` for a switch),
///   `<at> <cluster> <proxy> observed (source S, config version N)`,
///   `<at> <cluster> operator removed P (it was S)` (and `pushed config version N`,
///   `switched hostgroup H from A to B (config version N)`),
///   `<at> <cluster> deletion paused (L of T proxies lost)` (or `resumed`),
///   `<at> keeper stalled for D (deadlines of N proxies shifted)`,
///   `<at> store rewound (a proxy echoed keeper epoch E)`, and
///   `<at> <cluster> [<proxy>] <kind>` for a kind this client does not know;
/// - `json`: the event as one line of JSON (fields this client does not know are kept);
/// - `keys`: `PUT /zerodb/proxy/C/status/ADDR->STATUS` when a proxy enters a status,
///   `DELETE /zerodb/proxy/C/status/ADDR` when it is deleted.
pub fn watch_line(event: &WatchEvent, mode: Output) -> Option<String> {
    match mode {
        Output::Json => serde_json::to_string(event).ok(),
        Output::Yaml => crate::cli::yaml::to_yaml(event)
            .ok()
            .map(|doc| format!("---\n{}", doc.trim_end())),
        Output::Keys => {
            if event.kind != "status" {
                return None;
            }
            let proxy = event.proxy.as_deref()?;
            let cluster = event.cluster.as_deref()?;
            let key = format!("/zerodb/proxy/{cluster}/status/{proxy}");
            Some(printable(&match &event.to {
                Some(to) => format!("PUT {key}->{to}"),
                None => format!("DELETE {key}"),
            }))
        }
        Output::Table | Output::Wide => Some(printable(&watch_table_line(event))),
    }
}

fn watch_table_line(event: &WatchEvent) -> String {
    let mut line = event.at.clone();
    if let Some(cluster) = &event.cluster {
        let _ = write!(line, " {cluster}");
    }
    let proxy = event.proxy.as_deref().unwrap_or("-");
    let n = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".to_owned());
    let incarnation = |line: &mut String, suffix: &str| {
        if let Some(n) = event.incarnation {
            let _ = write!(line, " (incarnation {n}{suffix})");
        }
    };
    match event.kind.as_str() {
        "status" => {
            let from = event.from.as_deref().unwrap_or("-");
            let to = event.to.as_deref().unwrap_or("-");
            let _ = write!(line, " {proxy} {from} -> {to}");
            if let Some(reason) = &event.reason {
                let _ = write!(line, " ({reason})");
            }
        }
        "restart" => {
            let _ = write!(line, " {proxy} restart sent");
            incarnation(&mut line, "");
        }
        "superseded" => {
            let _ = write!(line, " {proxy} superseded");
            incarnation(&mut line, " told to stop");
        }
        "config" => {
            match event.version {
                Some(v) => {
                    let _ = write!(line, " config version {v}");
                }
                None => line.push_str(" config changed"),
            }
            if event.cause.as_deref() == Some("switch") {
                let _ = write!(
                    line,
                    " (hostgroup {}: {} -> {})",
                    text(&event.hostgroup),
                    text(&event.from_datasource),
                    text(&event.to_datasource)
                );
            }
            if event.cause.as_deref() == Some("rollback") {
                let _ = write!(line, " (rollback to version {})", n(event.restored));
            }
        }
        "observed" => {
            let _ = write!(
                line,
                " {proxy} observed (source {}, config version {})",
                text(&event.source),
                n(event.config_version)
            );
        }
        "admin" if event.result.as_deref() == Some("refused") => {
            let _ = write!(
                line,
                " operator's {} refused ({}): {}",
                text(&event.action),
                text(&event.asked),
                text(&event.reason)
            );
        }
        "admin" => match event.action.as_deref() {
            Some("remove") => {
                let _ = write!(
                    line,
                    " operator removed {proxy} (it was {})",
                    text(&event.status)
                );
            }
            Some("push_config") => {
                let _ = write!(line, " operator pushed config version {}", n(event.version));
            }
            Some("switch") => {
                let _ = write!(
                    line,
                    " operator switched hostgroup {} from {} to {} (config version {})",
                    text(&event.hostgroup),
                    text(&event.from_datasource),
                    text(&event.to_datasource),
                    n(event.version)
                );
            }
            Some("rollback") => {
                let _ = write!(
                    line,
                    " operator rolled back to version {} (config version {})",
                    n(event.restored),
                    n(event.version)
                );
            }
            other => {
                let _ = write!(line, " operator {}", other.unwrap_or("acted"));
            }
        },
        kind @ ("deletion_paused" | "deletion_resumed") => {
            let word = if kind == "deletion_paused" {
                "paused"
            } else {
                "resumed"
            };
            let _ = write!(
                line,
                " deletion {word} ({} of {} proxies lost)",
                n(event.lost),
                n(event.total)
            );
        }
        "stall" => {
            let length = event
                .length_ms
                .map_or_else(|| "?".to_owned(), human_duration);
            let _ = write!(
                line,
                " keeper stalled for {length} (deadlines of {} proxies shifted)",
                n(event.shifted)
            );
        }
        "rewound" => {
            let _ = write!(
                line,
                " store rewound (a proxy echoed keeper epoch {})",
                n(event.seen_epoch.map(u64::from))
            );
        }
        other => {
            if let Some(p) = &event.proxy {
                let _ = write!(line, " {p}");
            }
            let _ = write!(line, " {other}");
        }
    }
    line
}

/// `s` with control characters (newlines, escape sequences) shown as escapes, so text
/// from the server can neither break a table's lines nor drive the terminal.
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The line `status` prints above the table on a deployment of several keepers: what
/// the keeper asked is, and who leads since when (`None` for a keeper alone).
pub fn leader_line(store: &crate::api::StoreView) -> Option<String> {
    if store.role == "single" {
        return None;
    }
    Some(match &store.leader {
        Some(l) => format!(
            "keeper: {}; leader {} ({}) since {}, term {}\n",
            store.role, l.id, l.http, l.since, l.term
        ),
        None => format!("keeper: {}; no keeper leads right now\n", store.role),
    })
}

/// One line per cluster whose lost proxies are not being deleted (mass-loss protection),
/// to print under the table.
pub fn paused_notes(proxies: &[ProxyView]) -> String {
    let mut clusters: Vec<&str> = proxies
        .iter()
        .filter(|p| p.deletion_paused)
        .map(|p| p.cluster.as_str())
        .collect();
    clusters.dedup();
    clusters
        .into_iter()
        .map(|c| {
            let lost = proxies.iter().filter(|p| p.cluster == c && p.status == "lost").count();
            let total = proxies.iter().filter(|p| p.cluster == c).count();
            format!(
                "\nmass loss in {}: {lost} of {total} proxies lost; deleting lost proxies is paused \
                 (the keeper's own network is the likely cause)\n",
                printable(c)
            )
        })
        .collect()
}

/// Whether to colour what goes to a terminal: only to one (`terminal`), and never when
/// `NO_COLOR` is set to anything but the empty string (<https://no-color.org>).
pub fn colour_wanted(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// `text` with each status word (`up`, `ready`, `lost`) standing alone coloured: green,
/// yellow, red. The word stays (colour is never the only sign), and the codes are added
/// after alignment, so columns stay aligned on the screen.
pub fn paint(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        for (j, word) in line.split(' ').enumerate() {
            if j > 0 {
                out.push(' ');
            }
            let colour = match word {
                "up" => Some("32"),
                "ready" => Some("33"),
                "lost" => Some("31"),
                _ => None,
            };
            match colour {
                Some(code) => {
                    let _ = write!(out, "\x1b[{code}m{word}\x1b[0m");
                }
                None => out.push_str(word),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_coloured_only_where_they_stand_alone_and_only_on_a_terminal() {
        let painted = paint("test_cluster  10.25.0.11:3000  up      1\nx lost -> up (uptime)");
        assert_eq!(
            painted,
            "test_cluster  10.25.0.11:3000  \x1b[32mup\x1b[0m      1\nx \x1b[31mlost\x1b[0m -> \x1b[32mup\x1b[0m (uptime)"
        );
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(std::ffi::OsStr::new(""))));
        assert!(!colour_wanted(true, Some(std::ffi::OsStr::new("1"))));
        assert!(!colour_wanted(false, None));
    }
}
