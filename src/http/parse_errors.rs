//! hyper's own answers to requests it cannot parse, rewritten as problem+json.
//!
//! When hyper cannot parse a request's head it answers by itself, before any handler
//! runs, and closes the connection: `400` (a garbage request line or header), `431` (more
//! headers than [`max_headers`](super::ServeLimits::max_headers), or a head larger than
//! [`max_header_bytes`](super::ServeLimits::max_header_bytes)) or `414` (a URI hyper
//! cannot hold), each a bare head with `content-length: 0` and no body. hyper has no hook
//! for that answer, so the connection's IO ([`ConnIo`](super::io::ConnIo)) recognises it
//! as it is written and writes [`substitute`]'s problem+json answer in its place.
//!
//! Recognising it is exact enough to be safe: a write that is one whole response head,
//! of status 400, 414 or 431, with `content-length: 0` and no `content-type`. Every answer
//! of the router has a `content-type` (problems are `application/problem+json`), so only
//! hyper's own answers look like that.
//!
//! A request line too long for `max_header_bytes` makes hyper answer 431, as for too many
//! headers: the head did not fit. When no line end was read before it, the request line
//! itself is what did not fit, and the answer becomes `414 uri-too-long`. (With
//! pipelined requests that line end may be lost: then it stays 431; both are
//! problem+json and close the connection.)

use super::problem::{PROBLEM_JSON, Problem};

/// What the substitutes say about the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeadLimits {
    /// [`ServeLimits::max_headers`](super::ServeLimits::max_headers).
    pub(crate) max_headers: usize,
    /// [`ServeLimits::max_header_bytes`](super::ServeLimits::max_header_bytes).
    pub(crate) max_header_bytes: usize,
}

/// If `written` is exactly one of hyper's own bare error answers, the whole problem+json
/// answer to write instead; `None` for anything else.
///
/// `line_read` says whether a line end was read from the client since the server last
/// wrote (whether the request line was complete).
pub(crate) fn substitute(written: &[u8], line_read: bool, limits: HeadLimits) -> Option<Vec<u8>> {
    let head = BareHead::parse(written)?;
    let problem = match head.status {
        400 => Problem::malformed_request(),
        431 if !line_read => Problem::uri_too_long(limits.max_header_bytes),
        431 => Problem::headers_too_large(limits.max_headers, limits.max_header_bytes),
        414 => Problem::uri_too_long(limits.max_header_bytes),
        _ => return None,
    };
    Some(render(&problem, head.date))
}

/// A bare response head as hyper writes its own error answers.
#[derive(Debug, PartialEq, Eq)]
struct BareHead<'a> {
    status: u16,
    /// The `date` header's value, if it has one.
    date: Option<&'a [u8]>,
}

impl<'a> BareHead<'a> {
    /// `written` as a bare error head: one whole head (ending at the first blank line, with
    /// nothing after it), status 400, 414 or 431, `content-length: 0`, no `content-type`.
    fn parse(written: &'a [u8]) -> Option<BareHead<'a>> {
        let rest = written
            .strip_prefix(b"HTTP/1.1 ")
            .or_else(|| written.strip_prefix(b"HTTP/1.0 "))?;
        let status = match rest.get(..4)? {
            b"400 " => 400,
            b"414 " => 414,
            b"431 " => 431,
            _ => return None,
        };
        let end = find(written, b"\r\n\r\n")?;
        if end + 4 != written.len() {
            return None;
        }
        let mut lines = written[..end].split(|&b| b == b'\n');
        lines.next(); // the status line
        let (mut empty, mut date) = (false, None);
        for line in lines {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':')?;
            let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
            if name.eq_ignore_ascii_case(b"content-type") {
                return None;
            } else if name.eq_ignore_ascii_case(b"content-length") {
                empty = value == b"0";
            } else if name.eq_ignore_ascii_case(b"date") {
                date = Some(value);
            }
        }
        empty.then_some(BareHead { status, date })
    }
}

/// `problem` as a whole HTTP/1.1 answer that closes the connection.
fn render(problem: &Problem, date: Option<&[u8]>) -> Vec<u8> {
    // A body of strings and numbers always serializes.
    let body = serde_json::to_vec(problem.body()).unwrap_or_default();
    let status = problem.status();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {PROBLEM_JSON}\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    if let Some(date) = date {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &value[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_headers: 100,
        max_header_bytes: 16384,
    };
    const DATE: &str = "Tue, 01 Dec 2026 19:13:25 GMT";

    fn bare(status: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n"
        )
        .into_bytes()
    }

    /// (status line, headers, body as JSON).
    fn split(answer: &[u8]) -> (String, String, serde_json::Value) {
        let end = find(answer, b"\r\n\r\n").expect("a head");
        let head = String::from_utf8(answer[..end].to_vec()).expect("ascii");
        let (status, headers) = head.split_once("\r\n").expect("headers");
        let body = serde_json::from_slice(&answer[end + 4..]).expect("json body");
        (status.to_owned(), headers.to_owned(), body)
    }

    #[test]
    fn hypers_bare_answers_become_problems_with_the_same_status_and_date() {
        for (status, line_read, kind) in [
            ("400 Bad Request", true, "malformed-request"),
            (
                "431 Request Header Fields Too Large",
                true,
                "headers-too-large",
            ),
            ("414 URI Too Long", true, "uri-too-long"),
        ] {
            let answer = substitute(&bare(status), line_read, LIMITS).expect("substituted");
            let (line, headers, body) = split(&answer);
            assert_eq!(line, format!("HTTP/1.1 {status}"));
            assert!(
                headers.contains("content-type: application/problem+json"),
                "{headers}"
            );
            assert!(headers.contains("connection: close"), "{headers}");
            assert!(headers.contains(&format!("date: {DATE}")), "{headers}");
            let length = answer.len() - find(&answer, b"\r\n\r\n").expect("head") - 4;
            assert!(
                headers.contains(&format!("content-length: {length}")),
                "{headers}"
            );
            assert_eq!(body["type"], format!("urn:zerokeeper:problem:{kind}"));
            assert_eq!(body["status"], line[9..12].parse::<u16>().expect("status"));
        }
    }

    #[test]
    fn a_head_too_large_before_any_line_end_is_a_uri_too_long() {
        let answer = substitute(&bare("431 Request Header Fields Too Large"), false, LIMITS)
            .expect("substituted");
        let (line, _, body) = split(&answer);
        assert_eq!(line, "HTTP/1.1 414 URI Too Long");
        assert_eq!(body["type"], "urn:zerokeeper:problem:uri-too-long");
        assert_eq!(body["status"], 414);
    }

    #[test]
    fn anything_but_a_whole_bare_error_head_is_left_alone() {
        let typed = "HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 0\r\n\r\n";
        let cases: Vec<Vec<u8>> = vec![
            bare("200 OK"),
            bare("404 Not Found"),
            bare("413 Payload Too Large"),
            typed.as_bytes().to_vec(),
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n".to_vec(),
            [bare("400 Bad Request"), b"trailing".to_vec()].concat(),
            bare("400 Bad Request")[..20].to_vec(),
            b"data: HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n".to_vec(),
            Vec::new(),
        ];
        for written in cases {
            assert_eq!(
                substitute(&written, true, LIMITS),
                None,
                "{:?}",
                String::from_utf8_lossy(&written)
            );
        }
    }
}
