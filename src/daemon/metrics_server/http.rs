//! The little HTTP that `/metrics` needs: a request head judged, and responses as bytes. Only
//! `GET /metrics` (any query string, which Prometheus's `params` may add) is answered with
//! the metrics; everything else gets a short error and the connection is closed. Pure
//! functions, so that hostile heads are unit-tested without sockets.

/// A request head (request line and headers, up to the blank line) longer than this is
/// answered with 431 and the connection closed: nothing a client sends grows clusterd more.
pub(super) const MAX_HEAD: usize = 8 * 1024;

/// What a client has sent so far asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Judged {
    /// The head is not complete yet.
    Incomplete,
    /// A well-formed `GET /metrics`.
    Metrics,
    /// Anything else: this answer, then the connection closes.
    Refused(Vec<u8>),
}

/// Judges the bytes a client has sent so far.
pub(super) fn judge(head: &[u8]) -> Judged {
    // A blank line ends the head; RFC 9112 lets a server accept a bare LF as a line end
    // (`printf 'GET /metrics HTTP/1.0\n\n' | nc`).
    let end = [&b"\r\n\r\n"[..], b"\n\n"]
        .into_iter()
        .filter_map(|blank| memchr::memmem::find(head, blank))
        .min();
    let Some(end) = end.filter(|&end| end <= MAX_HEAD) else {
        return if head.len() > MAX_HEAD {
            Judged::Refused(too_large())
        } else {
            Judged::Incomplete
        };
    };
    let head = head.get(..end).unwrap_or_default();
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return Judged::Refused(bad_request());
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Judged::Refused(bad_request());
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") || !target.starts_with('/') {
        return Judged::Refused(bad_request());
    }
    if method != "GET" {
        return Judged::Refused(response(
            "405 Method Not Allowed",
            TEXT,
            "Allow: GET\r\n",
            b"only GET\n",
        ));
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return Judged::Refused(response(
            "404 Not Found",
            TEXT,
            "",
            b"only /metrics is here\n",
        ));
    }
    Judged::Metrics
}

/// The content type of the metrics: Prometheus's text exposition format.
pub(super) const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of the short error bodies.
pub(super) const TEXT: &str = "text/plain; charset=utf-8";

/// A whole response: status line, headers (`extra` ends each of its lines with CRLF), body.
/// Every connection is closed after its answer.
pub(super) fn response(status: &str, content_type: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn bad_request() -> Vec<u8> {
    response(
        "400 Bad Request",
        TEXT,
        "",
        b"expected GET /metrics HTTP/1.1\n",
    )
}

pub(super) fn request_timeout() -> Vec<u8> {
    response(
        "408 Request Timeout",
        TEXT,
        "",
        b"the request did not arrive in time\n",
    )
}

fn too_large() -> Vec<u8> {
    response(
        "431 Request Header Fields Too Large",
        TEXT,
        "",
        format!("a request head is at most {MAX_HEAD} bytes\n").as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(head: &[u8]) -> String {
        match judge(head) {
            Judged::Incomplete => "incomplete".into(),
            Judged::Metrics => "metrics".into(),
            Judged::Refused(bytes) => String::from_utf8_lossy(&bytes)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
        }
    }

    #[test]
    fn only_a_whole_get_of_the_metrics_path_is_served() {
        for (head, expected) in [
            (&b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"[..], "metrics"),
            (b"GET /metrics?name[]=up HTTP/1.0\r\n\r\n", "metrics"),
            (b"GET /metrics HTTP/1.0\n\n", "metrics"),
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n", "incomplete"),
            (b"", "incomplete"),
            (b"G", "incomplete"),
            (
                b"POST /metrics HTTP/1.1\r\n\r\n",
                "HTTP/1.1 405 Method Not Allowed",
            ),
            (
                b"HEAD /metrics HTTP/1.1\r\n\r\n",
                "HTTP/1.1 405 Method Not Allowed",
            ),
            (b"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
            (
                b"GET /metrics/../etc HTTP/1.1\r\n\r\n",
                "HTTP/1.1 404 Not Found",
            ),
            (b"GET /metricsx HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
            (b"GET /metrics HTTP/2.0\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (b"GET /metrics\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (
                b"GET  /metrics HTTP/1.1\r\n\r\n",
                "HTTP/1.1 400 Bad Request",
            ),
            (
                b"GET http://x/metrics HTTP/1.1\r\n\r\n",
                "HTTP/1.1 400 Bad Request",
            ),
            (
                b"GET /metrics HTTP/1.1 x\r\n\r\n",
                "HTTP/1.1 400 Bad Request",
            ),
            (
                b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
                "HTTP/1.1 400 Bad Request",
            ),
            (b"\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        ] {
            assert_eq!(
                status_of(head),
                expected,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn a_head_longer_than_the_cap_is_refused_and_one_just_under_is_not() {
        let mut head = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        head.resize(MAX_HEAD - 4, b'a');
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(judge(&head), Judged::Metrics);
        let mut endless = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        endless.resize(MAX_HEAD + 1, b'a');
        assert_eq!(
            status_of(&endless),
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
        // A blank line beyond the cap does not make it acceptable.
        endless.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            status_of(&endless),
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
    }

    #[test]
    fn a_response_says_its_length_and_closes() {
        let bytes = response("200 OK", EXPOSITION, "", b"up 1\n");
        let text = String::from_utf8(bytes).expect("utf-8");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Length: 5\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nup 1\n"), "{text}");
    }
}
