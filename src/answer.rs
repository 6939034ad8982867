//! Responses the proxy writes itself: errors, and the bodies of its own endpoints.
//!
//! Every failure on the data path ends here as one status code with a short plain-text
//! body, so what clients see is decided in one place. This file only formats bytes.

use crate::buffer::{Buf, Writer};

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// A complete response, written into `out` after whatever it holds.
pub struct Answer<'a> {
    pub status: u16,
    pub content_type: &'a str,
    pub body: &'a [u8],
    /// Send `Connection: close` (the connection ends after this response).
    pub close: bool,
    /// HEAD: headers only.
    pub head_only: bool,
    /// Extra header lines, each ending in CRLF.
    pub extra: &'a str,
}

impl Answer<'_> {
    /// An error: the status line's words and the detail, as plain text or (when the client
    /// asked for JSON) `{"error":..,"detail":..}`. `extra` holds header lines; `head_only`
    /// answers a HEAD request (headers, no body).
    pub fn error(status: u16, detail: &str, extra: &str, json: bool, head_only: bool, out: &mut Buf) {
        let mut text = [0u8; 512];
        let mut n = 0;
        let mut put = |part: &[u8]| {
            let take = part.len().min(text.len() - n);
            text[n..n + take].copy_from_slice(&part[..take]);
            n += take;
        };
        if json {
            let detail = detail.replace(['"', '\\'], "'");
            put(b"{\"error\":\"");
            put(reason(status).as_bytes());
            put(b"\",\"detail\":\"");
            put(detail.as_bytes());
            put(b"\"}\n");
        } else {
            put(reason(status).as_bytes());
            put(b": ");
            put(detail.as_bytes());
            put(b"\n");
        }
        let content_type = if json { "application/json" } else { "text/plain; charset=utf-8" };
        Answer { status, content_type, body: &text[..n], close: true, head_only, extra }.write(out);
    }

    pub fn write(&self, out: &mut Buf) {
        self.put(&mut Writer { buf: out, overflow: false });
    }

    /// [`Answer::write`] into a caller's writer, so an overflow shows in its flag.
    pub fn put(&self, w: &mut Writer) {
        w.put(b"HTTP/1.1 ");
        put_num(w, self.status as u64);
        w.put(b" ");
        w.put(reason(self.status).as_bytes());
        w.put(b"\r\nServer: failover\r\nContent-Type: ");
        w.put(self.content_type.as_bytes());
        w.put(b"\r\nContent-Length: ");
        put_num(w, self.body.len() as u64);
        w.put(b"\r\nCache-Control: no-store\r\n");
        w.put(self.extra.as_bytes());
        if self.close {
            w.put(b"Connection: close\r\n");
        }
        w.put(b"\r\n");
        if !self.head_only {
            w.put(self.body);
        }
    }
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn put_num(w: &mut Writer, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    w.put(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::Pool;

    #[test]
    fn error_bytes() {
        let mut pool = Pool::new(1);
        let mut b = pool.take();
        Answer::error(502, "primary refused the connection", "", false, false, &mut b);
        let text = String::from_utf8(b.bytes().to_vec()).unwrap();
        let body = "Bad Gateway: primary refused the connection\n";
        assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{text}");
        assert!(text.contains(&format!("\r\nContent-Length: {}\r\n", body.len())), "{text}");
        assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
        assert!(text.ends_with(&format!("\r\n\r\n{body}")), "{text}");
    }

    #[test]
    fn json_error_with_extra_header() {
        let mut pool = Pool::new(1);
        let mut b = pool.take();
        Answer::error(503, "both \"down\"", "Retry-After: 2\r\n", true, false, &mut b);
        let text = String::from_utf8(b.bytes().to_vec()).unwrap();
        assert!(text.contains("\r\nRetry-After: 2\r\n"), "{text}");
        assert!(text.contains("Content-Type: application/json\r\n"), "{text}");
        assert!(text.ends_with("{\"error\":\"Service Unavailable\",\"detail\":\"both 'down'\"}\n"), "{text}");
    }

    #[test]
    fn head_only_keeps_length() {
        let mut pool = Pool::new(1);
        let mut b = pool.take();
        Answer { status: 200, content_type: "text/plain", body: b"ok", close: false, head_only: true, extra: "" }
            .write(&mut b);
        let text = String::from_utf8(b.bytes().to_vec()).unwrap();
        assert!(text.contains("Content-Length: 2\r\n") && text.ends_with("\r\n\r\n"), "{text}");
        assert!(!text.contains("Connection: close"));
    }
}
