//! The service manager's readiness protocol (`sd_notify`): a keeper started by systemd
//! with `Type=notify` says when it serves (`READY=1`), pings the watchdog while its
//! keeper task answers (`WATCHDOG=1`), and says when it stops (`STOPPING=1`).
//!
//! The protocol is one datagram per message on the Unix socket named by `$NOTIFY_SOCKET`
//! (a path, or `@name` for Linux's abstract namespace), each message `KEY=value` lines.
//! Without `$NOTIFY_SOCKET` (not started by systemd, or not `Type=notify`) every call
//! does nothing. Failures to send are logged at debug level and otherwise ignored: the
//! service manager's bookkeeping must never stop a keeper.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Where to send notifications, read once from the environment.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: Option<PathBuf>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier of this process: `$NOTIFY_SOCKET`, and the watchdog's period from
    /// `$WATCHDOG_USEC` (ignored when `$WATCHDOG_PID` names another process).
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(Duration::from_micros);
        Notifier { socket, watchdog }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// The watchdog's timeout, if the service manager runs one for this process: ping
    /// at least twice within it.
    pub fn watchdog(&self) -> Option<Duration> {
        self.socket.as_ref().and(self.watchdog)
    }

    /// The keeper serves: its sockets are bound and its state restored.
    pub fn ready(&self, status: &str) {
        self.send(&format!(
            "READY=1\nSTATUS={}\nMAINPID={}\n",
            one_line(status),
            std::process::id()
        ));
    }

    /// The keeper is alive: its keeper task answered just now.
    pub fn ping(&self) {
        self.send("WATCHDOG=1\n");
    }

    /// A new status line, shown by `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}\n", one_line(status)));
    }

    /// The keeper is stopping (and may take up to its shutdown deadline).
    pub fn stopping(&self) {
        self.send("STOPPING=1\n");
    }

    fn send(&self, message: &str) {
        let Some(socket) = &self.socket else { return };
        if let Err(e) = send_to(socket, message.as_bytes()) {
            tracing::debug!(socket = %socket.display(), error = %e, "cannot notify the service manager");
        }
    }
}

/// A status fits one line of the protocol.
fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

fn send_to(socket: &std::path::Path, message: &[u8]) -> io::Result<()> {
    use std::os::unix::net::UnixDatagram;
    let out = UnixDatagram::unbound()?;
    let name = socket.as_os_str().as_encoded_bytes();
    if let Some(abstract_name) = name.strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
            out.send_to_addr(message, &addr)?;
            return Ok(());
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = abstract_name;
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "abstract sockets exist only on Linux",
            ));
        }
    }
    out.send_to(message, socket)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn notifier(socket: Option<PathBuf>, watchdog: Option<Duration>) -> Notifier {
        Notifier { socket, watchdog }
    }

    fn received(listener: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = listener.recv(&mut buf).expect("a message");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn messages_reach_a_path_socket() {
        let path = std::env::temp_dir().join(format!("zerokeeper-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).expect("bind");
        let n = notifier(Some(path), Some(Duration::from_secs(10)));
        n.ready("serving\nudp 127.0.0.1:1");
        let ready = received(&listener);
        assert!(
            ready.starts_with("READY=1\nSTATUS=serving udp 127.0.0.1:1\nMAINPID="),
            "{ready}"
        );
        n.ping();
        assert_eq!(received(&listener), "WATCHDOG=1\n");
        n.stopping();
        assert_eq!(received(&listener), "STOPPING=1\n");
        assert_eq!(n.watchdog(), Some(Duration::from_secs(10)));
        let _ = std::fs::remove_file(n.socket.as_ref().expect("a socket"));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn messages_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("zerokeeper-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("abstract name");
        let listener = UnixDatagram::bind_addr(&addr).expect("bind");
        notifier(Some(PathBuf::from(format!("@{name}"))), None).status("restoring");
        assert_eq!(received(&listener), "STATUS=restoring\n");
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_there_is_no_watchdog() {
        let n = notifier(None, Some(Duration::from_secs(1)));
        assert!(!n.enabled());
        assert_eq!(n.watchdog(), None);
        n.ready("x");
        n.ping();
    }
}
