//! Loopback plumbing: the bench's own target server, client sockets bound
//! to chosen 127/8 addresses (Linux routes all of 127/8 to `lo`, so every
//! address there is a distinct client), and the probe that tells an open
//! path from a closed one.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// First byte of a connection to the target server: echo everything back.
pub const ECHO: u8 = b'E';
/// First byte of a connection to the target server: swallow everything,
/// then answer with the byte count (8 bytes, big-endian) at end of input.
pub const SINK: u8 = b'S';

/// Bytes per write in bulk transfers.
pub const CHUNK: usize = 256 * 1024;

/// The protected server the gateway forwards to: one listener that echoes
/// or sinks depending on the first byte. Stops when dropped.
pub struct TargetServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for TargetServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TargetServer {
    pub async fn start() -> io::Result<Self> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let listener: TcpListener = socket.listen(4096)?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(async move {
                            // A connection the gateway cuts ends with an error
                            // here; that is the point, not a failure.
                            let _ = serve(stream).await;
                        });
                    }
                    // Out of file descriptors or similar: wait a little.
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        });
        Ok(Self { addr, task })
    }
}

async fn serve(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut first = [0u8; 1];
    if stream.read(&mut first).await? == 0 {
        return Ok(());
    }
    if first == [SINK] {
        let mut buffer = vec![0u8; CHUNK];
        let mut total = 1u64;
        loop {
            let n = stream.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        stream.write_all(&total.to_be_bytes()).await?;
        return stream.shutdown().await;
    }
    stream.write_all(&first).await?;
    let (mut read, mut write) = stream.split();
    tokio::io::copy(&mut read, &mut write).await?;
    Ok(())
}

/// Hands out distinct client addresses in `127.block.0.1` onwards, skipping
/// host parts 0 and 255.
pub struct Sources {
    block: u8,
    next: AtomicU32,
}

impl Sources {
    pub fn new(block: u8) -> Self {
        Self { block, next: AtomicU32::new(0) }
    }

    pub fn next(&self) -> Ipv4Addr {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        // 254 hosts per /24 and 256 /24s: 65,024 addresses per block, more
        // than any section uses.
        let third = u8::try_from((i / 254) % 256).unwrap_or(0);
        let fourth = u8::try_from(i % 254 + 1).unwrap_or(1);
        Ipv4Addr::new(127, self.block, third, fourth)
    }
}

/// A TCP connection to `to` from `from` (any port).
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = if from.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(from, 0))?;
    let stream = socket.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// What a connection attempt through the gateway found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The echo came back: the path is open.
    Admitted,
    /// The gateway closed the connection without relaying: the path is shut.
    Refused,
}

/// Connects from `from` to `to`, sends one byte and waits for its echo.
/// The gateway accepts every TCP handshake (the kernel completes it) and
/// closes refused connections at once, so "refused" shows as end of file
/// or a reset, and "admitted" as the echoed byte.
pub async fn probe(from: IpAddr, to: SocketAddr) -> io::Result<Probe> {
    let attempt = async {
        let mut stream = connect_from(from, to).await?;
        if let Err(e) = stream.write_all(&[ECHO]).await {
            return if is_cut(&e) { Ok(Probe::Refused) } else { Err(e) };
        }
        let mut byte = [0u8; 1];
        match stream.read(&mut byte).await {
            Ok(1) => Ok(Probe::Admitted),
            Ok(_) => Ok(Probe::Refused),
            Err(e) if is_cut(&e) => Ok(Probe::Refused),
            Err(e) => Err(e),
        }
    };
    timeout(Duration::from_secs(10), attempt)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer within 10 s"))?
}

/// Whether an error means the other side closed the connection.
pub fn is_cut(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof)
}

/// Waits until something listens on `addr` (up to `within`).
pub async fn wait_listening(addr: SocketAddr, within: Duration) -> io::Result<()> {
    let started = tokio::time::Instant::now();
    loop {
        match TcpStream::connect(addr).await {
            Ok(_) => return Ok(()),
            Err(e) if started.elapsed() > within => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// A port on 127.0.0.1 that was free a moment ago, for a program (socat)
/// that cannot report the port it picked.
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}
