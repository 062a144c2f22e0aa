//! CPU time, memory, file descriptors and start time of a process, read from Linux's
//! `/proc` (none elsewhere): what `/metrics` exposes as the standard `process_*` metrics.

/// Clock ticks per second of `/proc/*/stat` times (`sysconf(_SC_CLK_TCK)`): 100 on every
/// Linux platform zerokeeper runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU seconds used so far by process `pid`, or by this process if
/// `None`; `None` where `/proc` is not available.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let fields = stat_fields(pid)?;
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// The fields of `/proc/<pid>/stat` after the command name, or `None`.
fn stat_fields(pid: Option<u32>) -> Option<Vec<String>> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// A `kB` line of `/proc/self/status` (`VmRSS`, `VmSize`), in bytes.
fn status_bytes(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..]
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// This process's resident memory, in bytes.
pub fn resident_bytes() -> Option<u64> {
    status_bytes("VmRSS")
}

/// This process's virtual memory, in bytes.
pub fn virtual_bytes() -> Option<u64> {
    status_bytes("VmSize")
}

/// File descriptors this process has open.
pub fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

/// This process's limit of open file descriptors (the soft limit).
pub fn max_fds() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// When this process started, in seconds since the Unix epoch: its start in clock ticks
/// after boot (`/proc/self/stat` field 22) plus the boot time (`btime` of `/proc/stat`).
pub fn start_time_seconds() -> Option<f64> {
    let fields = stat_fields(None)?;
    // Field 22 of the whole line is the 20th after the command name (fields 3 onward).
    let ticks: f64 = fields.get(19)?.parse().ok()?;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let boot: f64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(boot + ticks / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_some_cpu() {
        if std::path::Path::new("/proc/self/stat").exists() {
            let before = cpu_seconds(None).expect("readable");
            let mut x = 0u64;
            for i in 0..50_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
            assert!(cpu_seconds(None).expect("readable") >= before);
            assert!(cpu_seconds(Some(std::process::id())).is_some());
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn memory_descriptors_and_start_time_are_plausible() {
        let rss = resident_bytes().expect("VmRSS");
        let vsz = virtual_bytes().expect("VmSize");
        assert!(rss > 0 && vsz >= rss, "rss {rss} vsz {vsz}");
        let file = std::fs::File::open("/proc/self/stat").expect("open");
        let open = open_fds().expect("fds");
        assert!(open >= 1 && open <= max_fds().expect("limit"), "{open}");
        drop(file);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        let started = start_time_seconds().expect("start time");
        // Started before now, and not before the day this test was written.
        assert!(
            started <= now + 1.0 && started > 1.7e9,
            "{started} vs {now}"
        );
    }
}
