//! Outbound HTTP for the component: plain HTTP/1.1 to the loopback addresses only.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Connect timeout when the component sets none. The conformance upstreams are on
/// this machine, so a connect that takes this long has failed.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The addresses outbound requests may go to: this machine, nothing else.
const ALLOWED_ADDRESSES: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::LOCALHOST),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];

type ConnectionTask = Box<dyn Future<Output = Result<(), Error>> + Send>;
type SendFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, ConnectionTask), Error>> + Send>;

/// `wasi:http` hooks that send outbound requests over plain HTTP/1.1 to 127.0.0.1 or
/// [::1], one connection per request, and deny every other destination.
#[derive(Debug, Clone, Copy)]
pub struct LoopbackOnly;

impl WasiHttpHooks for LoopbackOnly {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_error: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        Box::new(send(request, options))
    }
}

async fn send(
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<(http::Response<WasiBody>, ConnectionTask), Error> {
    let uri = request.uri().clone();
    if uri.scheme() != Some(&Scheme::HTTP) {
        // This host has no TLS client, and the conformance upstreams speak plain HTTP.
        eprintln!("gatehouse-spin-host: denied outbound request to {uri}: only http is allowed");
        return Err(Error::HttpRequestDenied);
    }
    let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
    let Some(address) = loopback_address(authority) else {
        eprintln!(
            "gatehouse-spin-host: denied outbound request to {authority}: only 127.0.0.1 and \
             [::1] are allowed"
        );
        return Err(Error::HttpRequestDenied);
    };

    let connect_timeout = options
        .and_then(|options| options.connect_timeout)
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) if error.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(Error::ConnectionRefused);
        }
        Ok(Err(error)) => return Err(Error::Connect(error)),
        Err(_elapsed) => return Err(Error::ConnectionTimeout),
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(Error::Hyper)?;
    // The connection must make progress while the request is sent below, so it runs
    // in its own task. Wasmtime awaits the returned handle for its outcome.
    let connection = tokio::spawn(connection);

    // An HTTP/1.1 request to an origin server names the target in origin form. The
    // authority goes in the Host header, which wasmtime sets from it.
    let origin_form = uri
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .parse()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    *request.uri_mut() = origin_form;

    let first_byte_timeout = options.and_then(|options| options.first_byte_timeout);
    let response = match first_byte_timeout {
        Some(timeout) => tokio::time::timeout(timeout, sender.send_request(request))
            .await
            .map_err(|_elapsed| Error::ConnectionReadTimeout)?,
        None => sender.send_request(request).await,
    }
    .map_err(Error::Hyper)?;

    let task: ConnectionTask = Box::new(async move {
        match connection.await {
            Ok(result) => result.map_err(Error::Hyper),
            Err(error) => Err(Error::InternalError(Some(error.to_string()))),
        }
    });
    Ok((
        response.map(|body| body.map_err(Error::Hyper).boxed_unsync()),
        task,
    ))
}

/// Returns the socket address for `authority` when its host is 127.0.0.1, [::1] or
/// `localhost`, and `None` for any other host. The port defaults to 80.
fn loopback_address(authority: &Authority) -> Option<SocketAddr> {
    let host = authority.host();
    let ip = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?
    };
    ALLOWED_ADDRESSES
        .contains(&ip)
        .then(|| SocketAddr::new(ip, authority.port_u16().unwrap_or(80)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(authority: &str) -> Option<SocketAddr> {
        loopback_address(&authority.parse().unwrap())
    }

    #[test]
    fn loopback_hosts_are_allowed() {
        assert_eq!(
            address("127.0.0.1:9001"),
            Some("127.0.0.1:9001".parse().unwrap())
        );
        assert_eq!(address("[::1]:9001"), Some("[::1]:9001".parse().unwrap()));
        assert_eq!(address("localhost"), Some("127.0.0.1:80".parse().unwrap()));
    }

    #[test]
    fn other_hosts_are_denied() {
        assert_eq!(address("example.com:80"), None);
        assert_eq!(address("10.0.0.1:9001"), None);
        assert_eq!(address("127.0.0.2:9001"), None);
        assert_eq!(address("0.0.0.0:9001"), None);
    }
}
