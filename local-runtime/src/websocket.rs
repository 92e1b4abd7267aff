//! The WebSocket relay: once the upstream accepted an upgrade with `101 Switching
//! Protocols`, bytes flow between the client's and the upstream's upgraded
//! connections until one side closes or both stay idle for the route's idle timeout.

use std::io;
use std::time::Duration;

use gatehouse_core::websocket::Relay;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Size of each direction's copy buffer.
const BUFFER_BYTES: usize = 16 * 1024;

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both sides closed their half of the connection.
    Closed,
    /// Neither side sent a byte for the idle timeout.
    Idle,
}

/// Waits for both connections to finish their upgrade, then relays bytes between
/// them. Failures are logged, because the client already received its `101`.
pub async fn run(client: OnUpgrade, upstream: OnUpgrade, relay: Relay, request_id: String) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%request_id, %error, "WebSocket upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    match copy_until_idle(&mut client, &mut upstream, relay.idle_timeout).await {
        Ok((RelayEnd::Idle, _)) => tracing::debug!(
            %request_id,
            idle_ms = relay.idle_timeout.as_millis() as u64,
            "WebSocket relay closed after the idle timeout"
        ),
        Ok((RelayEnd::Closed, bytes)) => tracing::trace!(
            %request_id,
            client_to_upstream = bytes.0,
            upstream_to_client = bytes.1,
            "WebSocket relay closed"
        ),
        Err(error) => tracing::debug!(%request_id, %error, "WebSocket relay failed"),
    }
}

/// Copies bytes both ways between `a` and `b` until both directions reached their
/// end, or until neither side sent anything for `idle_timeout`. An end of input on
/// one side shuts down writing to the other, so a close passes through. Returns how
/// it ended and the bytes copied from `a` to `b` and from `b` to `a`.
pub async fn copy_until_idle<A, B>(
    a: &mut A,
    b: &mut B,
    idle_timeout: Duration,
) -> io::Result<(RelayEnd, (u64, u64))>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let mut a_buffer = vec![0_u8; BUFFER_BYTES];
    let mut b_buffer = vec![0_u8; BUFFER_BYTES];
    let (mut a_open, mut b_open) = (true, true);
    let (mut a_to_b, mut b_to_a) = (0_u64, 0_u64);
    while a_open || b_open {
        tokio::select! {
            read = a_read.read(&mut a_buffer), if a_open => {
                let count = read?;
                if count == 0 {
                    a_open = false;
                    b_write.shutdown().await?;
                } else {
                    b_write.write_all(&a_buffer[..count]).await?;
                    b_write.flush().await?;
                    a_to_b += count as u64;
                }
            }
            read = b_read.read(&mut b_buffer), if b_open => {
                let count = read?;
                if count == 0 {
                    b_open = false;
                    a_write.shutdown().await?;
                } else {
                    a_write.write_all(&b_buffer[..count]).await?;
                    a_write.flush().await?;
                    b_to_a += count as u64;
                }
            }
            () = tokio::time::sleep(idle_timeout) => {
                return Ok((RelayEnd::Idle, (a_to_b, b_to_a)));
            }
        }
    }
    Ok((RelayEnd::Closed, (a_to_b, b_to_a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn relay_copies_both_ways_and_closes() {
        let (mut client, mut client_side) = tokio::io::duplex(64);
        let (mut upstream_side, mut upstream) = tokio::io::duplex(64);
        let relay = tokio::spawn(async move {
            copy_until_idle(
                &mut client_side,
                &mut upstream_side,
                Duration::from_secs(30),
            )
            .await
        });

        client.write_all(b"ping").await.unwrap();
        let mut buffer = [0_u8; 4];
        upstream.read_exact(&mut buffer).await.unwrap();
        assert_eq!(&buffer, b"ping");
        upstream.write_all(b"pong").await.unwrap();
        client.read_exact(&mut buffer).await.unwrap();
        assert_eq!(&buffer, b"pong");

        client.shutdown().await.unwrap();
        upstream.shutdown().await.unwrap();
        let (end, bytes) = relay.await.unwrap().unwrap();
        assert_eq!(end, RelayEnd::Closed);
        assert_eq!(bytes, (4, 4));
    }

    #[tokio::test]
    async fn relay_ends_when_idle() {
        let (_client, mut client_side) = tokio::io::duplex(64);
        let (mut upstream_side, _upstream) = tokio::io::duplex(64);
        let (end, bytes) = copy_until_idle(
            &mut client_side,
            &mut upstream_side,
            Duration::from_millis(50),
        )
        .await
        .unwrap();
        assert_eq!(end, RelayEnd::Idle);
        assert_eq!(bytes, (0, 0));
    }
}
