//! `media-ws healthcheck`: a dependency-free probe of `GET /health` on loopback, so a
//! container health check needs no curl in the image.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Why the probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Connecting, writing or reading failed.
    #[error("health probe i/o failed")]
    Io(#[from] std::io::Error),
    /// No answer within the timeout.
    #[error("health probe timed out")]
    Timeout,
    /// The server answered with another status than 200.
    #[error("health probe got status {0}")]
    Status(u16),
    /// The answer was not HTTP.
    #[error("health probe got a malformed response")]
    Malformed,
}

/// Sends `GET /health` to `127.0.0.1:port` and succeeds on HTTP 200.
///
/// # Errors
/// [`ProbeError`] for anything but a 200 within `timeout`.
pub async fn health(port: u16, timeout: Duration) -> Result<(), ProbeError> {
    tokio::time::timeout(timeout, async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 64];
        let mut n = 0;
        while n < 12 {
            let read = stream.read(&mut head[n..]).await?;
            if read == 0 {
                break;
            }
            n += read;
        }
        let line = std::str::from_utf8(&head[..n]).map_err(|_| ProbeError::Malformed)?;
        let status: u16 = line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .ok_or(ProbeError::Malformed)?;
        if status == 200 {
            Ok(())
        } else {
            Err(ProbeError::Status(status))
        }
    })
    .await
    .map_err(|_| ProbeError::Timeout)?
}
