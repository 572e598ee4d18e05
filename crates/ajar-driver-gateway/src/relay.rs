//! Copies bytes both ways between a client and its target, with half-close
//! and byte counters that stay readable when the relay is cut short.
//!
//! Why not `tokio::io::copy_bidirectional_with_sizes`: it reports byte counts
//! only when it finishes, and a connection cut at its grant's deadline never
//! finishes. Why not splice(2): it would move bytes without copying them
//! through userspace, but needs `unsafe` (or a crate wrapping it), which the
//! workspace forbids; large buffers get a userspace copy loop close enough
//! to kernel speed (see the baselines in TESTING.md).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::event::EndedBy;

/// The largest read in each direction. A small buffer makes the relay spend
/// its time in syscalls: socat with its default 8 KiB buffer reaches a fifth
/// of loopback speed, with 256 KiB about two thirds.
const BUFFER: usize = 256 * 1024;

/// The first buffer of each direction. Interactive connections (ssh, psql)
/// never fill it; a bulk transfer fills it and doubles it up to [`BUFFER`]
/// within a few reads. Starting at 256 KiB cost 512 KiB per connection:
/// half a gigabyte at 1,000 live connections.
const FIRST_BUFFER: usize = 4 * 1024;

/// How many bytes have gone each way. Lives outside the relay future so it
/// can be read after that future was dropped.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) up: AtomicU64,
    pub(crate) down: AtomicU64,
}

#[derive(Clone, Copy)]
enum Side {
    Client,
    Target,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Target => "target",
        }
    }
}

/// Relays until both directions have ended (each side shut down writing)
/// or one fails, and says who ended it. When one side shuts down writing,
/// the other side's write half is shut down and the opposite direction
/// keeps flowing.
pub(crate) async fn relay(client: &mut TcpStream, target: &mut TcpStream, counters: &Counters) -> EndedBy {
    let (mut client_read, mut client_write) = client.split();
    let (mut target_read, mut target_write) = target.split();
    let up = pump(&mut client_read, &mut target_write, Side::Client, Side::Target, &counters.up);
    let down = pump(&mut target_read, &mut client_write, Side::Target, Side::Client, &counters.down);
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    let mut first_to_close = None;
    while !(up_done && down_done) {
        let (side, result) = tokio::select! {
            result = &mut up, if !up_done => { up_done = true; (Side::Client, result) }
            result = &mut down, if !down_done => { down_done = true; (Side::Target, result) }
        };
        match result {
            Ok(()) => {
                first_to_close.get_or_insert(side);
            }
            Err(error) => return EndedBy::Error(error),
        }
    }
    match first_to_close {
        Some(Side::Target) => EndedBy::Target,
        _ => EndedBy::Client,
    }
}

/// Copies `from` into `to` until end of file, then shuts `to` down for
/// writing. Errors name the side and the operation, for the audit log.
async fn pump<R, W>(from: &mut R, to: &mut W, from_side: Side, to_side: Side, count: &AtomicU64) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; FIRST_BUFFER];
    let describe = |what: &str, side: Side, error: io::Error| format!("{what} {}: {error}", side.name());
    loop {
        let n = from.read(&mut buffer).await.map_err(|e| describe("reading from", from_side, e))?;
        if n == 0 {
            return to.shutdown().await.map_err(|e| describe("shutting down writing to", to_side, e));
        }
        let chunk = buffer.get(..n).unwrap_or_default();
        to.write_all(chunk).await.map_err(|e| describe("writing to", to_side, e))?;
        // `n` is at most BUFFER, so the conversion cannot fail.
        count.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
        if n == buffer.len() && buffer.len() < BUFFER {
            buffer.resize(buffer.len() * 2, 0);
        }
    }
}
