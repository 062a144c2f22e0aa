//! `zerokeeper status --watch`: the listing, then every change after it, for ever.
//!
//! The informer pattern, on the command line: list (the listing says which revision it
//! reflects), then watch from exactly that revision, so nothing falls between the two
//! and nothing is shown twice. A dropped connection is retried for ever, with a capped
//! exponential backoff, resuming after the last change seen. If the keeper no longer
//! holds the changes after that position (`410 Gone`, or an `event: gone` at the end of
//! a stream that fell behind), it lists again, prints the fresh listing, and carries on
//! from there.
//!
//! [`StatusWatch::step`] does one thing at a time and says what (print this, note that,
//! wait this long), so a test can drive it against a real router without sleeping;
//! [`StatusWatch::run`] prints and sleeps.

use std::io::{self, Write};
use std::time::Duration;

use crate::api::{EventId, ProblemBody, WatchEvent};
use crate::cli::client::{Client, ClientError, EventStream, Exit};
use crate::cli::format::{self, Output};

/// How long to wait before reconnecting: from `first`, doubling up to `max`, back to
/// `first` once a connection delivers something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first pause.
    pub first: Duration,
    /// The longest pause.
    pub max: Duration,
}

impl Default for Backoff {
    /// 100 ms doubling to 5 s.
    fn default() -> Backoff {
        Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

/// What the watch did in one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Text for standard output: a listing, or one change's line (with its newline).
    Print(String),
    /// A line for standard error, such as why it lists again.
    Note(String),
    /// The connection was lost: say `note` on standard error, wait `delay`, then step
    /// again.
    Wait {
        /// How long to wait.
        delay: Duration,
        /// What happened, for standard error.
        note: String,
    },
}

enum State {
    /// List next.
    List,
    /// Open a stream after this position next.
    Open(EventId),
    /// Read the stream; the last position seen.
    Read(Box<EventStream>, EventId),
}

/// `status --watch` as a sequence of steps.
pub struct StatusWatch {
    client: Client,
    cluster: Option<String>,
    output: Output,
    backoff: Backoff,
    delay: Duration,
    listed: bool,
    state: State,
    /// Colour the statuses of tables and table lines (a terminal, no `NO_COLOR`).
    colour: bool,
}

impl std::fmt::Debug for StatusWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWatch")
            .field("cluster", &self.cluster)
            .field("output", &self.output)
            .field("position", &self.position())
            .finish_non_exhaustive()
    }
}

impl StatusWatch {
    /// A watch of `cluster` (or of every cluster) printing in `output`, with the
    /// default backoff.
    pub fn new(client: Client, cluster: Option<String>, output: Output) -> StatusWatch {
        let backoff = Backoff::default();
        StatusWatch {
            client,
            cluster,
            output,
            backoff,
            delay: backoff.first,
            listed: false,
            state: State::List,
            colour: false,
        }
    }

    /// The same watch, colouring statuses in its table output if `colour`.
    pub fn with_colour(mut self, colour: bool) -> StatusWatch {
        self.colour = colour;
        self
    }

    /// The same watch with another backoff.
    pub fn with_backoff(mut self, backoff: Backoff) -> StatusWatch {
        self.backoff = backoff;
        self.delay = backoff.first;
        self
    }

    /// The position it would resume after (`None`: it lists next).
    pub fn position(&self) -> Option<EventId> {
        match &self.state {
            State::List => None,
            State::Open(at) | State::Read(_, at) => Some(*at),
        }
    }

    /// Prints every step on `out` and `err`, sleeping where told, for ever. Returns only
    /// if the first listing fails, the keeper refuses the watch (a 4xx other than `410`),
    /// or `out` cannot be written.
    pub fn run(&mut self, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), WatchError> {
        loop {
            match self.step()? {
                Step::Print(text) => {
                    let table = matches!(self.output, Output::Table | Output::Wide);
                    let text = if self.colour && table {
                        format::paint(&text)
                    } else {
                        text
                    };
                    out.write_all(text.as_bytes())?;
                    out.flush()?;
                }
                Step::Note(note) => {
                    let _ = writeln!(err, "{note}");
                }
                Step::Wait { delay, note } => {
                    let _ = writeln!(err, "{note}");
                    std::thread::sleep(delay);
                }
            }
        }
    }

    /// Does the next thing: lists, or reads the next change, or says to wait. Blocks
    /// while a stream is quiet (keep-alives are read and skipped).
    pub fn step(&mut self) -> Result<Step, ClientError> {
        loop {
            match std::mem::replace(&mut self.state, State::List) {
                State::List => return self.list(),
                State::Open(at) => {
                    let id = at.to_string();
                    match self.client.watch(self.cluster.as_deref(), Some(&id)) {
                        Ok(stream) => self.state = State::Read(Box::new(stream), at),
                        Err(e) if e.exit() == Exit::Gone => return Ok(self.relist(&e, at)),
                        Err(e) => return self.lost(e, State::Open(at)),
                    }
                }
                State::Read(mut stream, at) => match stream.next_event() {
                    Ok(Some(event)) if event.event == "gone" => {
                        let body: ProblemBody =
                            serde_json::from_str(&event.data).unwrap_or_default();
                        return Ok(self.relist_after(body, at));
                    }
                    Ok(Some(event)) => {
                        let parsed: WatchEvent = match serde_json::from_str(&event.data) {
                            Ok(parsed) => parsed,
                            Err(e) => {
                                self.state = State::Read(stream, at);
                                return Ok(Step::Note(format!(
                                    "watch: skipped an event that is not a watch event ({e}): {}",
                                    format::printable(&event.data)
                                )));
                            }
                        };
                        let next = event
                            .id
                            .as_deref()
                            .and_then(|id| id.parse::<EventId>().ok())
                            .unwrap_or_else(|| parsed.id());
                        self.delay = self.backoff.first;
                        self.state = State::Read(stream, next);
                        let other_cluster = match (&self.cluster, &parsed.cluster) {
                            (Some(want), Some(cluster)) => want != cluster,
                            _ => false,
                        };
                        if other_cluster {
                            continue;
                        }
                        if let Some(line) = format::watch_line(&parsed, self.output) {
                            return Ok(Step::Print(line + "\n"));
                        }
                    }
                    Ok(None) => {
                        let ended = ClientError::Transport {
                            method: "GET",
                            url: stream.url().to_owned(),
                            reason: "the keeper ended the stream".to_owned(),
                        };
                        return self.lost(ended, State::Open(at));
                    }
                    Err(e) => return self.lost(e, State::Open(at)),
                },
            }
        }
    }

    fn list(&mut self) -> Result<Step, ClientError> {
        match self.client.listing(self.cluster.as_deref()) {
            Ok(list) => {
                self.listed = true;
                self.delay = self.backoff.first;
                self.state = State::Open(EventId {
                    generation: list.generation,
                    revision: list.revision,
                });
                Ok(Step::Print(format::watch_listing(&list, self.output)))
            }
            // The first listing must work, as for `status` without `--watch`.
            Err(e) if !self.listed => Err(e),
            Err(e) => self.lost(e, State::List),
        }
    }

    fn relist(&mut self, e: &ClientError, at: EventId) -> Step {
        let body = match e {
            ClientError::Problem { problem, .. } => problem.body.clone(),
            _ => ProblemBody::default(),
        };
        self.relist_after(body, at)
    }

    fn relist_after(&mut self, body: ProblemBody, at: EventId) -> Step {
        self.state = State::List;
        let held = match body.gone() {
            Some(g) => format!(
                " (it holds revisions {} to {} of generation {})",
                g.oldest, g.current, g.generation
            ),
            None => String::new(),
        };
        Step::Note(format!(
            "watch: the keeper no longer holds the changes after {at}{held}; listing again"
        ))
    }

    /// A refusal that asking again will not change ends the watch; anything else is
    /// waited out and retried from `next`.
    fn lost(&mut self, e: ClientError, next: State) -> Result<Step, ClientError> {
        if e.exit() != Exit::Failed {
            return Err(e);
        }
        self.state = next;
        let delay = self.delay;
        self.delay = (self.delay * 2).min(self.backoff.max);
        Ok(Step::Wait {
            delay,
            note: format!(
                "watch: connection lost ({}); reconnecting in {}",
                format::printable(&e.to_string()),
                format::human_duration(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
            ),
        })
    }
}

/// Why [`StatusWatch::run`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The keeper refused, or could not be reached for the first listing.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Standard output cannot be written.
    #[error("cannot write to standard output: {0}")]
    Output(#[from] io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let mut w = StatusWatch::new(Client::new("http://127.0.0.1:1"), None, Output::Table)
            .with_backoff(Backoff {
                first: Duration::from_millis(100),
                max: Duration::from_millis(500),
            });
        // Pretend a listing worked once, so failures are retried.
        w.listed = true;
        let mut delays = Vec::new();
        for _ in 0..5 {
            let step = w.step().expect("retried");
            match step {
                Step::Wait { delay, note } => {
                    assert!(note.starts_with("watch: connection lost ("), "{note}");
                    assert!(note.contains("; reconnecting in "), "{note}");
                    delays.push(delay.as_millis());
                }
                other => panic!("not a wait: {other:?}"),
            }
        }
        assert_eq!(delays, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn a_first_listing_that_fails_ends_the_watch() {
        let mut w = StatusWatch::new(Client::new("http://127.0.0.1:1"), None, Output::Table);
        let e = w.step().expect_err("nothing listens on port 1");
        assert_eq!(e.exit(), Exit::Failed);
    }
}
