//! A plugin's stdout and stderr: kept in memory up to a budget, then turned into log
//! lines after the call. Writes past the budget are dropped, not failed, so a chatty
//! plugin cannot crash itself (Rust's `println!` panics on a failed write) or the host.

use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    dropped: usize,
}

/// Shared by stdout and stderr of one call, so the budget covers both.
#[derive(Clone)]
pub(crate) struct CappedOutput {
    buffer: Arc<Mutex<Buffer>>,
    budget: usize,
}

impl CappedOutput {
    pub fn new(budget: usize) -> Self {
        CappedOutput {
            buffer: Arc::default(),
            budget,
        }
    }

    fn append(&self, data: &[u8]) {
        let mut b = self.buffer.lock().unwrap();
        let room = self.budget.saturating_sub(b.bytes.len());
        let kept = room.min(data.len());
        b.bytes.extend_from_slice(&data[..kept]);
        b.dropped += data.len() - kept;
    }

    /// The captured text as lines, plus how many bytes were dropped.
    pub fn lines(&self) -> (Vec<String>, usize) {
        let b = self.buffer.lock().unwrap();
        let text = String::from_utf8_lossy(&b.bytes);
        let lines = text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        (lines, b.dropped)
    }
}

/// One of the two streams; a tag says which in the log.
pub(crate) struct Stream(pub CappedOutput);

impl IsTerminal for Stream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Stream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(Writer(self.0.clone()))
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(Writer(self.0.clone()))
    }
}

struct Writer(CappedOutput);

#[wasmtime_wasi::async_trait]
impl Pollable for Writer {
    async fn ready(&mut self) {}
}

impl OutputStream for Writer {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.0.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_past_the_budget_is_dropped_and_counted() {
        let out = CappedOutput::new(10);
        out.append(b"hello\nworld\n");
        out.append(b"more");
        let (lines, dropped) = out.lines();
        assert_eq!(lines, vec!["hello", "worl"]);
        assert_eq!(dropped, 6);
    }
}
