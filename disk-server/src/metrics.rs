//! Server metrics (per-export operations, bytes, errors, latency histograms, clients) and
//! a minimal HTTP/1.1 endpoint that serves them as Prometheus text on `GET /metrics`.
//!
//! Recording is lock-free (relaxed atomics on an `Arc` the connection holds), so it costs
//! a few nanoseconds per request. The HTTP side reads at most 8 KiB of request and must
//! never let a slow or hostile scraper hold more than one task.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::server::ServerError;

/// The operations metrics are kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Read,
    Write,
    Flush,
    Trim,
    Cache,
    WriteZeroes,
    BlockStatus,
}

const OPS: [OpKind; 7] = [
    OpKind::Read,
    OpKind::Write,
    OpKind::Flush,
    OpKind::Trim,
    OpKind::Cache,
    OpKind::WriteZeroes,
    OpKind::BlockStatus,
];

impl OpKind {
    fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Flush => "flush",
            OpKind::Trim => "trim",
            OpKind::Cache => "cache",
            OpKind::WriteZeroes => "write_zeroes",
            OpKind::BlockStatus => "block_status",
        }
    }
}

/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_US: [u64; 16] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000,
];

#[derive(Default)]
struct OpMetrics {
    count: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
    sum_ns: AtomicU64,
    /// Non-cumulative counts per bucket; the last one is `+Inf`.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
}

/// The counters of one export.
#[derive(Default)]
pub struct ExportMetrics {
    ops: [OpMetrics; OPS.len()],
    clients: AtomicI64,
}

impl ExportMetrics {
    /// Records one completed request.
    pub fn record(&self, op: OpKind, bytes: u64, ok: bool, elapsed: Duration) {
        let m = &self.ops[op.index()];
        m.count.fetch_add(1, Ordering::Relaxed);
        if ok {
            m.bytes.fetch_add(bytes, Ordering::Relaxed);
        } else {
            m.errors.fetch_add(1, Ordering::Relaxed);
        }
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        m.sum_ns.fetch_add(ns, Ordering::Relaxed);
        let us = ns / 1000;
        let i = BUCKETS_US
            .iter()
            .position(|&b| us < b)
            .unwrap_or(BUCKETS_US.len());
        if let Some(b) = m.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Completed requests of one kind (for tests and status output).
    pub fn ops(&self, op: OpKind) -> u64 {
        self.ops[op.index()].count.load(Ordering::Relaxed)
    }

    /// Bytes moved by successful requests of one kind.
    pub fn bytes(&self, op: OpKind) -> u64 {
        self.ops[op.index()].bytes.load(Ordering::Relaxed)
    }

    /// Clients currently in the transmission phase on this export.
    pub fn clients(&self) -> i64 {
        self.clients.load(Ordering::Relaxed)
    }
}

/// All metrics of one server.
#[derive(Default)]
pub struct Metrics {
    exports: RwLock<BTreeMap<String, Arc<ExportMetrics>>>,
    clients: AtomicI64,
    connections: AtomicU64,
    handshake_failures: AtomicU64,
}

/// Holds a client gauge up while alive.
pub(crate) struct ClientGuard {
    metrics: Arc<Metrics>,
    export: Option<Arc<ExportMetrics>>,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.metrics.clients.fetch_sub(1, Ordering::Relaxed);
        if let Some(e) = &self.export {
            e.clients.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl ClientGuard {
    /// Counts this client on an export from now on.
    pub(crate) fn attach(&mut self, export: Arc<ExportMetrics>) {
        export.clients.fetch_add(1, Ordering::Relaxed);
        if let Some(old) = self.export.replace(export) {
            old.clients.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The counters of `export`, created on first use.
    pub fn export(&self, export: &str) -> Arc<ExportMetrics> {
        if let Some(m) = self.exports.read().get(export) {
            return m.clone();
        }
        self.exports
            .write()
            .entry(export.to_owned())
            .or_default()
            .clone()
    }

    /// Connected clients (any phase).
    pub fn clients(&self) -> i64 {
        self.clients.load(Ordering::Relaxed)
    }

    /// Connections accepted since start.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    pub(crate) fn connected(self: &Arc<Self>) -> ClientGuard {
        self.clients.fetch_add(1, Ordering::Relaxed);
        self.connections.fetch_add(1, Ordering::Relaxed);
        ClientGuard {
            metrics: self.clone(),
            export: None,
        }
    }

    pub(crate) fn handshake_failed(&self) {
        self.handshake_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The metrics in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut s = String::new();
        let g = |s: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        g(
            &mut s,
            "platter_nbd_clients",
            "gauge",
            "Connected NBD clients.",
        );
        let _ = writeln!(s, "platter_nbd_clients {}", self.clients());
        g(
            &mut s,
            "platter_nbd_connections_total",
            "counter",
            "NBD connections accepted.",
        );
        let _ = writeln!(s, "platter_nbd_connections_total {}", self.connections());
        g(
            &mut s,
            "platter_nbd_handshake_failures_total",
            "counter",
            "Connections that ended before transmission for a protocol or TLS error.",
        );
        let _ = writeln!(
            s,
            "platter_nbd_handshake_failures_total {}",
            self.handshake_failures.load(Ordering::Relaxed)
        );
        let exports: Vec<(String, Arc<ExportMetrics>)> = self
            .exports
            .read()
            .iter()
            .map(|(k, v)| (escape(k), v.clone()))
            .collect();
        g(
            &mut s,
            "platter_nbd_export_clients",
            "gauge",
            "Clients in transmission per export.",
        );
        for (e, m) in &exports {
            let _ = writeln!(
                s,
                "platter_nbd_export_clients{{export=\"{e}\"}} {}",
                m.clients()
            );
        }
        type Getter = fn(&OpMetrics) -> u64;
        let counters: [(&str, &str, Getter); 3] = [
            ("platter_nbd_ops_total", "Completed NBD requests.", |m| {
                m.count.load(Ordering::Relaxed)
            }),
            (
                "platter_nbd_errors_total",
                "NBD requests answered with an error.",
                |m| m.errors.load(Ordering::Relaxed),
            ),
            (
                "platter_nbd_bytes_total",
                "Bytes read, written, trimmed or zeroed by successful requests.",
                |m| m.bytes.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, get) in counters {
            g(&mut s, name, "counter", help);
            for (e, m) in &exports {
                for op in OPS {
                    let v = get(&m.ops[op.index()]);
                    let _ = writeln!(s, "{name}{{export=\"{e}\",op=\"{}\"}} {v}", op.name());
                }
            }
        }
        let h = "platter_nbd_request_duration_seconds";
        g(
            &mut s,
            h,
            "histogram",
            "Time from a request's arrival to its reply being queued.",
        );
        for (e, m) in &exports {
            for op in OPS {
                let om = &m.ops[op.index()];
                let mut cum = 0u64;
                for (i, b) in om.buckets.iter().enumerate() {
                    cum += b.load(Ordering::Relaxed);
                    let le = match BUCKETS_US.get(i) {
                        Some(us) => format!("{}", *us as f64 / 1e6),
                        None => "+Inf".to_owned(),
                    };
                    let _ = writeln!(
                        s,
                        "{h}_bucket{{export=\"{e}\",op=\"{}\",le=\"{le}\"}} {cum}",
                        op.name()
                    );
                }
                let sum = om.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
                let _ = writeln!(s, "{h}_sum{{export=\"{e}\",op=\"{}\"}} {sum}", op.name());
                let _ = writeln!(s, "{h}_count{{export=\"{e}\",op=\"{}\"}} {cum}", op.name());
            }
        }
        s
    }
}

/// Escapes a Prometheus label value.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Serves `GET /metrics` on `listener` until `shutdown` fires.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let r = tokio::select! {
                _ = stop.cancelled() => Ok(()),
                r = tokio::time::timeout(Duration::from_secs(10), answer(stream, &metrics)) => r.unwrap_or(Ok(())),
            };
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "metrics request failed");
            }
        });
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

async fn answer(mut stream: tokio::net::TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut req = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        if req.len() > 8192 {
            return respond(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        req.extend_from_slice(buf.get(..n).unwrap_or(&[]));
    }
    let line = req.split(|b| *b == b'\r').next().unwrap_or(&[]);
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (parts.next().unwrap_or(&[]), parts.next().unwrap_or(&[]));
    match (method, path) {
        (b"GET", b"/metrics") => respond(&mut stream, "200 OK", &metrics.render()).await,
        (b"GET", _) => respond(&mut stream, "404 Not Found", "not found\n").await,
        _ => respond(&mut stream, "405 Method Not Allowed", "").await,
    }
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    status: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::new();
        let e = m.export("disk\"1");
        e.record(OpKind::Read, 4096, true, Duration::from_micros(30));
        e.record(OpKind::Read, 4096, false, Duration::from_secs(3));
        let _g = m.connected();
        let text = m.render();
        assert!(text.contains("platter_nbd_ops_total{export=\"disk\\\"1\",op=\"read\"} 2"));
        assert!(text.contains("platter_nbd_bytes_total{export=\"disk\\\"1\",op=\"read\"} 4096"));
        assert!(text.contains("platter_nbd_errors_total{export=\"disk\\\"1\",op=\"read\"} 1"));
        assert!(text.contains("op=\"read\",le=\"0.00005\"} 1"));
        assert!(text.contains("op=\"read\",le=\"+Inf\"} 2"));
        assert!(text.contains("platter_nbd_clients 1"));
    }
}
