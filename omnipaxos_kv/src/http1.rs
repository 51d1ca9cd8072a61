//! A minimal HTTP/1.1 client connection with keep-alive, for clients that send many small
//! requests one after another (the load generator): one request per `write`, one parse of the
//! response, no connection pool, no per-request task or channel hop. It speaks the same HTTP/JSON
//! API as any other client (curl, reqwest); only the client's cost per request is lower.
//!
//! Supported responses: a `Content-Length` body, or a body that ends with the connection
//! (`Connection: close`, no length). Chunked bodies (the watch stream) are refused with
//! [`Http1Error::Unsupported`]; use a full HTTP client for those.

use std::{io, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Largest response head (status line and headers) accepted.
pub const MAX_HEAD_BYTES: usize = 64 << 10;
/// Largest response body accepted.
pub const MAX_BODY_BYTES: usize = 256 << 20;
/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 16 << 10;

/// Why a request on a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum Http1Error {
    /// The connection could not be opened: nothing was sent.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Reading or writing failed after the connection was open (the request may have been
    /// received).
    #[error("connection to {addr} failed: {source}")]
    Io {
        /// `host:port`.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The peer closed the connection before a whole response arrived.
    #[error("{addr} closed the connection before answering")]
    Closed {
        /// `host:port`.
        addr: String,
    },
    /// The response is not HTTP/1.1 as expected.
    #[error("bad response from {addr}: {reason}")]
    Malformed {
        /// `host:port`.
        addr: String,
        /// What was wrong.
        reason: &'static str,
    },
    /// The response uses a framing this client does not implement (chunked).
    #[error("{addr} answered with a chunked body, which this client does not read")]
    Unsupported {
        /// `host:port`.
        addr: String,
    },
}

/// A response: its status and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Http1Response {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

/// One open connection to `addr`.
pub struct Http1Connection {
    stream: TcpStream,
    addr: String,
    /// Bytes read past the last response (a server never sends them unasked, but be exact).
    buffer: Vec<u8>,
    /// The request being written (reused).
    request: Vec<u8>,
    /// The server asked to close after the last response.
    closing: bool,
}

impl Http1Connection {
    /// Connects to `addr` (`host:port`) with `TCP_NODELAY`, within `timeout`.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Http1Connection, Http1Error> {
        let connect_error = |source| Http1Error::Connect { addr: addr.to_string(), source };
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(connect_error(error)),
            Err(_) => {
                return Err(connect_error(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")))
            }
        };
        stream.set_nodelay(true).map_err(connect_error)?;
        Ok(Http1Connection {
            stream,
            addr: addr.to_string(),
            buffer: Vec::with_capacity(READ_CHUNK_BYTES),
            request: Vec::with_capacity(1024),
            closing: false,
        })
    }

    /// Whether the connection can carry another request (the server did not ask to close it).
    pub fn reusable(&self) -> bool {
        !self.closing
    }

    /// Sends one request (`body` as `application/json` if given) and reads its response.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Http1Response, Http1Error> {
        self.request.clear();
        self.request.extend_from_slice(method.as_bytes());
        self.request.push(b' ');
        self.request.extend_from_slice(path.as_bytes());
        self.request.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        self.request.extend_from_slice(self.addr.as_bytes());
        if let Some(body) = body {
            self.request.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
            self.request.extend_from_slice(body.len().to_string().as_bytes());
            self.request.extend_from_slice(b"\r\n\r\n");
            self.request.extend_from_slice(body);
        } else {
            self.request.extend_from_slice(b"\r\n\r\n");
        }
        let io_error = |addr: &str, source| Http1Error::Io { addr: addr.to_string(), source };
        self.stream.write_all(&self.request).await.map_err(|e| io_error(&self.addr, e))?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> Result<Http1Response, Http1Error> {
        let head_end = loop {
            if let Some(at) = find_head_end(&self.buffer) {
                break at;
            }
            if self.buffer.len() > MAX_HEAD_BYTES {
                return Err(self.malformed("response head too large"));
            }
            if self.fill().await? == 0 {
                return Err(Http1Error::Closed { addr: self.addr.clone() });
            }
        };
        let head = parse_head(&self.buffer[..head_end]).map_err(|reason| self.malformed(reason))?;
        self.closing = head.close;
        if head.chunked {
            self.closing = true;
            return Err(Http1Error::Unsupported { addr: self.addr.clone() });
        }
        let body_start = head_end + 4;
        let body = match head.content_length {
            Some(length) => {
                if length > MAX_BODY_BYTES {
                    return Err(self.malformed("response body too large"));
                }
                while self.buffer.len() < body_start + length {
                    if self.fill().await? == 0 {
                        return Err(Http1Error::Closed { addr: self.addr.clone() });
                    }
                }
                let body = self.buffer[body_start..body_start + length].to_vec();
                self.buffer.drain(..body_start + length);
                body
            }
            None => {
                // The body ends with the connection.
                self.closing = true;
                while self.fill().await? > 0 {
                    if self.buffer.len() > body_start + MAX_BODY_BYTES {
                        return Err(self.malformed("response body too large"));
                    }
                }
                let body = self.buffer[body_start..].to_vec();
                self.buffer.clear();
                body
            }
        };
        Ok(Http1Response { status: head.status, body })
    }

    /// Reads more bytes into the buffer; 0 at the end of the stream.
    async fn fill(&mut self) -> Result<usize, Http1Error> {
        let start = self.buffer.len();
        self.buffer.resize(start + READ_CHUNK_BYTES, 0);
        let result = self.stream.read(&mut self.buffer[start..]).await;
        let read = *result.as_ref().unwrap_or(&0);
        self.buffer.truncate(start + read);
        result.map_err(|source| Http1Error::Io { addr: self.addr.clone(), source })
    }

    fn malformed(&mut self, reason: &'static str) -> Http1Error {
        self.closing = true;
        Http1Error::Malformed { addr: self.addr.clone(), reason }
    }
}

/// The index of the `\r\n\r\n` that ends the head.
fn find_head_end(buffer: &[u8]) -> Option<usize> {
    buffer.windows(4).position(|window| window == b"\r\n\r\n")
}

/// What the head of a response says.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
}

/// Parses a status line and headers (without the final blank line).
fn parse_head(head: &[u8]) -> Result<Head, &'static str> {
    let text = std::str::from_utf8(head).map_err(|_| "head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().ok_or("no status line")?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err("not an HTTP/1.x status line");
    }
    let status = parts.next().and_then(|code| code.parse::<u16>().ok()).ok_or("no status code")?;
    let mut parsed = Head { status, content_length: None, chunked: false, close: version == "HTTP/1.0" };
    for line in lines {
        let (name, value) = line.split_once(':').ok_or("header without a colon")?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            parsed.content_length = Some(value.parse().map_err(|_| "bad content-length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            parsed.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            if value.contains("close") {
                parsed.close = true;
            } else if value.contains("keep-alive") {
                parsed.close = false;
            }
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed() {
        let head = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nContent-Length: 17\r\nretry-after: 1";
        assert_eq!(
            parse_head(head),
            Ok(Head { status: 503, content_length: Some(17), chunked: false, close: false })
        );
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close";
        assert_eq!(
            parse_head(head),
            Ok(Head { status: 200, content_length: None, chunked: true, close: true })
        );
        assert_eq!(parse_head(b"HTTP/1.0 200 OK").map(|h| h.close), Ok(true));
        assert!(parse_head(b"SSH-2.0-OpenSSH").is_err());
        assert!(parse_head(b"HTTP/1.1 abc OK").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nno colon").is_err());
        assert_eq!(find_head_end(b"HTTP/1.1 200 OK\r\n\r\nbody"), Some(15));
        assert_eq!(find_head_end(b"HTTP/1.1 200 OK\r\n"), None);
    }

    #[tokio::test]
    async fn a_connection_carries_several_requests_and_reports_a_close() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buffer = vec![0u8; 4096];
            // Two requests, answered once each is complete (the second has a 2-byte body).
            for (answer, request_end) in [
                (&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..], &b"\r\n\r\n"[..]),
                (&b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\nnone"[..], &b"{}"[..]),
            ] {
                loop {
                    let read = socket.read(&mut buffer).await.unwrap();
                    assert!(read > 0, "the client keeps the connection open");
                    seen.extend_from_slice(&buffer[..read]);
                    if seen.ends_with(request_end) {
                        break;
                    }
                }
                socket.write_all(answer).await.unwrap();
                seen.clear();
            }
            // Closing ends the second body.
        });
        let mut connection = Http1Connection::connect(&addr, Duration::from_secs(5)).await.unwrap();
        let first = connection.request("GET", "/v1/kv/a", None).await.unwrap();
        assert_eq!(first, Http1Response { status: 200, body: b"ok".to_vec() });
        assert!(connection.reusable());
        let second = connection.request("PUT", "/v1/kv/a", Some(b"{}")).await.unwrap();
        assert_eq!(second, Http1Response { status: 404, body: b"none".to_vec() });
        assert!(!connection.reusable(), "the server asked to close");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let addr = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        }; // closed again: nothing listens there now
        let error = Http1Connection::connect(&addr, Duration::from_secs(5)).await.err().unwrap();
        assert!(matches!(error, Http1Error::Connect { .. }), "{error}");
    }
}
