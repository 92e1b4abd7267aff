//! A minimal reverse proxy on Pingora for the load-test comparison: every request goes
//! to one upstream over a pooled keep-alive connection, with `X-Forwarded-For` set as
//! the other proxies in the comparison set it.
//!
//! Usage: `pingora-proxy-bench LISTEN_ADDRESS UPSTREAM_ADDRESS`. One service thread,
//! Pingora's default, so it compares per core with the others.

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::prelude::{HttpPeer, ProxyHttp, Result, Server, Session, http_proxy_service};

struct Forward {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Forward {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        if let Some(client) = session.client_addr().and_then(|address| address.as_inet()) {
            upstream_request.insert_header("x-forwarded-for", client.ip().to_string())?;
        }
        Ok(())
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: pingora-proxy-bench LISTEN_ADDRESS UPSTREAM_ADDRESS");
        std::process::exit(2);
    };
    let mut server = Server::new(None).expect("default server settings are valid");
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Forward { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
