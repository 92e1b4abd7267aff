//! WebSocket relaying through the native binary, on real sockets: a tungstenite echo
//! server as the upstream and a tungstenite client.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Gatehouse, bounded};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The API key of the `/private` route and its SHA-256.
const API_KEY: &str = "foo";
const API_KEY_SHA256: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

/// Starts a WebSocket server that echoes every data message and replies to a close.
async fn echo_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let (mut write, mut read) = socket.split();
                while let Some(Ok(message)) = read.next().await {
                    if (message.is_text() || message.is_binary())
                        && write.send(message).await.is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    address
}

fn start_gateway(upstream: SocketAddr) -> Gatehouse {
    Gatehouse::start(&format!(
        r#"
[[listeners]]
name = "test"
address = "127.0.0.1:0"

[upstreams.echo]
endpoints = [{{ address = "{upstream}" }}]

[consumers.client]
api_key_sha256 = "{API_KEY_SHA256}"

[policies.keys.api_key]

[policies.one-per-minute.rate_limit]
limit = 1
period = "1m"
key = []

[[routes]]
match.path = "/echo"
upstream = "echo"
websocket = {{ idle_timeout = "30s" }}

[[routes]]
match.path = "/private"
upstream = "echo"
policies = ["keys"]
websocket = {{}}

[[routes]]
match.path = "/limited"
upstream = "echo"
policies = ["one-per-minute"]
websocket = {{}}

[[routes]]
match.path = "/quiet"
upstream = "echo"
websocket = {{ idle_timeout = "300ms" }}
"#
    ))
}

fn ws_url(gateway: &Gatehouse, path: &str) -> String {
    format!("ws://{}{path}", gateway.address)
}

/// Returns the HTTP status of a rejected handshake.
fn rejected_status(error: WsError) -> u16 {
    match error {
        WsError::Http(response) => response.status().as_u16(),
        other => panic!("expected an HTTP response, got {other:?}"),
    }
}

#[tokio::test]
async fn messages_are_relayed_both_ways() {
    let gateway = start_gateway(echo_upstream().await);
    bounded(async {
        let (mut socket, response) = tokio_tungstenite::connect_async(ws_url(&gateway, "/echo"))
            .await
            .expect("handshake through the gateway");
        assert_eq!(response.status(), 101);
        assert!(
            response.headers().contains_key("x-request-id"),
            "{response:?}"
        );

        for round in 0..3 {
            let text = format!("hello {round}");
            socket
                .send(Message::text(text.clone()))
                .await
                .expect("send text");
            let echoed = socket.next().await.expect("a reply").expect("a message");
            assert_eq!(echoed, Message::text(text));
        }
        let payload = vec![0_u8, 1, 2, 255];
        socket
            .send(Message::binary(payload.clone()))
            .await
            .expect("send binary");
        let echoed = socket.next().await.expect("a reply").expect("a message");
        assert_eq!(echoed, Message::binary(payload));

        socket.close(None).await.expect("send close");
        // The upstream replies to the close, and then both connections end.
        let mut closed = false;
        while let Some(message) = socket.next().await {
            match message {
                Ok(Message::Close(_)) => closed = true,
                Ok(other) => panic!("unexpected message after close: {other:?}"),
                Err(WsError::ConnectionClosed) => break,
                Err(error) => panic!("relay failed: {error}"),
            }
        }
        assert!(closed, "the upstream's close frame arrived");
    })
    .await;
}

#[tokio::test]
async fn auth_and_limits_run_before_upgrade() {
    let gateway = start_gateway(echo_upstream().await);
    bounded(async {
        let error = tokio_tungstenite::connect_async(ws_url(&gateway, "/private"))
            .await
            .expect_err("no API key");
        assert_eq!(rejected_status(error), 401);

        let mut request = ws_url(&gateway, "/private")
            .into_client_request()
            .expect("valid request");
        request
            .headers_mut()
            .insert("x-api-key", API_KEY.parse().expect("valid header"));
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("a valid key upgrades");
        socket.send(Message::text("hi")).await.expect("send");
        let echoed = socket.next().await.expect("a reply").expect("a message");
        assert_eq!(echoed, Message::text("hi"));

        let (_first, _) = tokio_tungstenite::connect_async(ws_url(&gateway, "/limited"))
            .await
            .expect("the first upgrade is within the limit");
        let error = tokio_tungstenite::connect_async(ws_url(&gateway, "/limited"))
            .await
            .expect_err("the second upgrade is over the limit");
        assert_eq!(rejected_status(error), 429);

        let error = tokio_tungstenite::connect_async(ws_url(&gateway, "/nowhere"))
            .await
            .expect_err("no route");
        assert_eq!(rejected_status(error), 404);
    })
    .await;
}

#[tokio::test]
async fn idle_relay_is_closed() {
    let gateway = start_gateway(echo_upstream().await);
    bounded(async {
        let (mut socket, _) = tokio_tungstenite::connect_async(ws_url(&gateway, "/quiet"))
            .await
            .expect("handshake through the gateway");
        socket.send(Message::text("once")).await.expect("send");
        let echoed = socket.next().await.expect("a reply").expect("a message");
        assert_eq!(echoed, Message::text("once"));

        // Nothing is sent for longer than the route's 300 ms idle timeout, so the
        // gateway closes the connection. The timeout below fails the test if the
        // connection stays open.
        let ended = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("the gateway closes the idle relay");
        match ended {
            None | Some(Err(_)) => {}
            Some(Ok(message)) => panic!("unexpected message: {message:?}"),
        }
    })
    .await;
}
