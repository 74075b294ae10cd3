//! A loopback TCP proxy in front of a registry that forwards everything but manifest PUTs:
//! it holds those back and reports them, so a test can kill a pusher at the moment its
//! blobs are all uploaded and its manifest is not yet written.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

/// A running proxy; it lives until the test process exits.
pub struct GateProxy {
    /// `127.0.0.1:PORT` to use in references instead of the upstream.
    pub addr: String,
    held: Receiver<String>,
}

impl GateProxy {
    /// Proxies to `upstream`, holding back every `PUT /v2/.../manifests/...`.
    pub fn start(upstream: &str) -> GateProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("gate proxy bind");
        let addr = listener.local_addr().expect("proxy addr").to_string();
        let (tx, held) = channel();
        let tx = Arc::new(Mutex::new(tx));
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let tx = tx.clone();
                std::thread::spawn(move || relay(client, server, tx));
            }
        });
        GateProxy { addr, held }
    }

    /// Waits (up to `timeout`) for a held manifest PUT; returns its request line.
    pub fn held_manifest(&self, timeout: std::time::Duration) -> Option<String> {
        self.held.recv_timeout(timeout).ok()
    }
}

fn relay(client: TcpStream, server: TcpStream, tx: Arc<Mutex<Sender<String>>>) {
    let (c2, s2) = match (client.try_clone(), server.try_clone()) {
        (Ok(c), Ok(s)) => (c, s),
        _ => return,
    };
    let down = std::thread::spawn(move || {
        let (mut from, mut to) = (s2, c2);
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
    let (mut from, mut to) = (client, server);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        let first_line = String::from_utf8_lossy(&chunk[..chunk.len().min(512)])
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        if first_line.starts_with("PUT /v2/") && first_line.contains("/manifests/") {
            let _ = tx.lock().unwrap().send(first_line);
            // Held: never forwarded. The client waits for an answer that does not come.
            let mut sink = [0u8; 4096];
            while matches!(from.read(&mut sink), Ok(n) if n > 0) {}
            break;
        }
        if to.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = down.join();
}
