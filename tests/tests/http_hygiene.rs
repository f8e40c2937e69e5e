//! HTTP/1.1 connection handling: an answer given before the request body was read must say
//! `Connection: close` (RFC 9112 §9.6), or the client's next request on that connection is lost.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use berth_tests::Server;

/// Reads one response head and its `Content-Length` body; returns (status line, head).
fn read_response(c: &mut TcpStream) -> std::io::Result<(String, String)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if c.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed after {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            ));
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    c.read_exact(&mut body)?;
    Ok((head.lines().next().unwrap_or("").to_string(), head))
}

#[test]
fn early_answers_with_unread_bodies_say_connection_close() {
    let s = Server::start();
    let body = vec![b'x'; 1 << 20];
    for (method, path, ctype) in [
        ("POST", "/no/such/route", "application/octet-stream"),
        (
            "PUT",
            "/v2/nosuchrepo/blobs/uploads/nosuchsession?digest=sha256:00",
            "application/octet-stream",
        ),
        ("POST", "/_berth/agent/nothing-here", "application/json"),
    ] {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
            s.port,
            body.len()
        );
        c.write_all(head.as_bytes()).unwrap();
        // The server may answer and stop reading before the whole body is written.
        let _ = c.write_all(&body);
        let (status, head) = read_response(&mut c).unwrap();
        assert!(
            !status.contains(" 200 ") && !status.contains(" 202 "),
            "{method} {path}: {status}"
        );
        let says_close = head
            .lines()
            .any(|l| l.to_ascii_lowercase().replace(' ', "") == "connection:close");
        if says_close {
            continue;
        }
        // Not announced: then the connection must still carry the next request.
        let next = format!("GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n", s.port);
        let ok = c
            .write_all(next.as_bytes())
            .and_then(|_| read_response(&mut c));
        assert!(
            ok.is_ok(),
            "{method} {path}: answered {status} without reading the body and without \
             `Connection: close`, then dropped the next request: {ok:?}\n{head}"
        );
    }
}
