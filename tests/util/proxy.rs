//! A loopback TCP proxy that forwards to an upstream address and cuts connections after a
//! number of bytes in one direction, to test resumed pulls and retried pushes.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Which direction's bytes are counted towards the cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → upstream (request bodies: push).
    Upload,
    /// Upstream → client (response bodies: pull).
    Download,
}

/// A running proxy; it lives until the test process exits.
pub struct Proxy {
    /// `127.0.0.1:PORT` to connect to instead of the upstream.
    pub addr: String,
    drops: Arc<AtomicUsize>,
    saw_range: Arc<AtomicBool>,
}

struct Rule {
    direction: Direction,
    after: u64,
    max_drops: usize,
    drops: Arc<AtomicUsize>,
    saw_range: Arc<AtomicBool>,
}

impl Proxy {
    /// Forwards to `upstream`; a connection whose `direction` bytes exceed `after` is cut
    /// (both sides shut down), at most `max_drops` times in all.
    pub fn start(upstream: &str, direction: Direction, after: u64, max_drops: usize) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr").to_string();
        let drops = Arc::new(AtomicUsize::new(0));
        let saw_range = Arc::new(AtomicBool::new(false));
        let rule = Arc::new(Rule {
            direction,
            after,
            max_drops,
            drops: drops.clone(),
            saw_range: saw_range.clone(),
        });
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let rule = rule.clone();
                std::thread::spawn(move || relay(client, server, rule));
            }
        });
        Proxy {
            addr,
            drops,
            saw_range,
        }
    }

    /// How many connections were cut so far.
    pub fn drops(&self) -> usize {
        self.drops.load(Ordering::SeqCst)
    }

    /// Whether any request sent a `Range: bytes=` header.
    pub fn saw_range_request(&self) -> bool {
        self.saw_range.load(Ordering::SeqCst)
    }
}

fn relay(client: TcpStream, server: TcpStream, rule: Arc<Rule>) {
    let (c2, s2) = match (client.try_clone(), server.try_clone()) {
        (Ok(c), Ok(s)) => (c, s),
        _ => return,
    };
    let up_rule = rule.clone();
    let up = std::thread::spawn(move || pump(client, server, Direction::Upload, &up_rule));
    pump(s2, c2, Direction::Download, &rule);
    let _ = up.join();
}

/// Copies `from` → `to`; cuts both when the rule says so.
fn pump(mut from: TcpStream, mut to: TcpStream, dir: Direction, rule: &Rule) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if dir == Direction::Upload && contains_range_header(chunk) {
            rule.saw_range.store(true, Ordering::SeqCst);
        }
        if dir == rule.direction && total + n as u64 > rule.after {
            let claimed = rule
                .drops
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| {
                    (d < rule.max_drops).then_some(d + 1)
                })
                .is_ok();
            if claimed {
                let keep = (rule.after - total.min(rule.after)) as usize;
                let _ = to.write_all(&chunk[..keep]);
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
        total += n as u64;
        if to.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn contains_range_header(chunk: &[u8]) -> bool {
    let lower = String::from_utf8_lossy(chunk).to_ascii_lowercase();
    lower.contains("\r\nrange: bytes=")
}
