//! The local server the tweet examples read offline: synthetic tweets in the Twitter/X v2
//! stream format (or v1.1 length-delimited), shared by `tweet_stream` and `tweet_pipeline`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

/// Serves `count` synthetic tweets (v2 lines, or v1 length-delimited), a heartbeat every ten,
/// as fast as the socket takes them, then closes. Returns the URL.
pub(crate) fn synthetic_server(
    count: usize,
    v1: bool,
) -> std::io::Result<(String, std::thread::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/2/tweets/sample/stream", listener.local_addr()?);
    let thread = std::thread::spawn(move || {
        let Ok((mut socket, _)) = listener.accept() else {
            return;
        };
        // Read the request head.
        let mut reader = BufReader::new(socket.try_clone().expect("clone the socket"));
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
            line.clear();
        }
        let mut out =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
                .to_vec();
        for i in 0..count {
            let json = format!(
                "{{\"data\":{{\"id\":\"{}\",\"text\":\"tweet {i}: back-pressure reaches the server\"}}}}\r\n",
                1_000_000 + i
            );
            if v1 {
                out.extend_from_slice(format!("{}\r\n{json}", json.len()).as_bytes());
            } else {
                out.extend_from_slice(json.as_bytes());
            }
            if i % 10 == 9 {
                out.extend_from_slice(b"\r\n"); // A keep-alive heartbeat.
            }
        }
        // Ends when all is written, or when the reader closes the connection.
        let _ = socket.write_all(&out);
    });
    Ok((url, thread))
}
