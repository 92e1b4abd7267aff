//! A small WebAssembly host that serves gatehouse's Spin component over HTTP/1.1, for
//! the conformance suite.
//!
//! There is no Spin CLI in the package registries, and `wasmtime serve` does not
//! provide Spin's own interfaces, so this host runs the component the way Spin does:
//! one instance per request on wasmtime's `wasi:http` 0.2 implementation, plus Spin's
//! `fermyon:spin/variables@2.0.0`, `fermyon:spin/key-value@2.0.0` and
//! `fermyon:spin/redis@2.0.0` interfaces. The key-value stores live in the host's
//! memory and are shared by every request. It sends outbound HTTP only to 127.0.0.1
//! and [::1], and rejects any other host with `http-request-denied`, the error Spin
//! returns for a host missing from `allowed_outbound_hosts`; Redis connections go to
//! the same addresses only.
//!
//! Usage: `gatehouse-spin-host [--listen ADDR] [--var NAME=VALUE]...
//! [--key-value-store LABEL]... [--key-value-seed FILE] COMPONENT.wasm`.
//! Variables also come from `SPIN_VARIABLE_NAME=value` environment variables, as with
//! Spin's environment provider; `--var` wins. The component may open the key-value
//! stores named with `--key-value-store`, or only `default` when none is named, as
//! with `key_value_stores` in a Spin manifest. `--key-value-seed` loads a JSON object
//! of string values into the `default` store before the first request. Once the listener is bound the host
//! prints `gatehouse-spin-host: serving http://IP:PORT` on standard output.

mod key_value;
mod outbound;
mod outbound_redis;
mod variables;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use tokio::net::TcpListener;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use key_value::{DEFAULT_STORE, KeyValueStores};
use outbound::LoopbackOnly;

/// Start of the line printed once the listener is bound; `http://IP:PORT` follows.
const READY_PREFIX: &str = "gatehouse-spin-host: serving ";

/// Header in which Spin passes the client's socket address to the component.
const CLIENT_ADDRESS_HEADER: &str = "spin-client-addr";

/// Prefix of environment variables that set Spin variables, as in Spin.
const VARIABLE_ENV_PREFIX: &str = "SPIN_VARIABLE_";

/// Command-line options.
#[derive(Debug)]
struct Options {
    listen: SocketAddr,
    component: PathBuf,
    variables: BTreeMap<String, String>,
    key_value_stores: BTreeSet<String>,
    key_value_seed: Option<PathBuf>,
}

/// State of one request's store: WASI, `wasi:http`, the Spin variables and the
/// key-value stores.
struct RequestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: LoopbackOnly,
    variables: Arc<BTreeMap<String, String>>,
    key_value: Arc<KeyValueStores>,
    /// Key-value stores this instance holds open.
    open_stores: usize,
    /// Redis connections this instance holds open.
    open_redis_connections: usize,
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// What every connection shares: the pre-instantiated component, the variables and
/// the key-value stores.
struct Server {
    pre: ProxyPre<RequestState>,
    variables: Arc<BTreeMap<String, String>>,
    key_value: Arc<KeyValueStores>,
}

fn main() -> ExitCode {
    let options = match parse_options(std::env::args().skip(1), std::env::vars()) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("gatehouse-spin-host: {message}");
            eprintln!(
                "usage: gatehouse-spin-host [--listen ADDR] [--var NAME=VALUE]... \
                 [--key-value-store LABEL]... [--key-value-seed FILE] COMPONENT.wasm"
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("gatehouse-spin-host: failed to start a Tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("gatehouse-spin-host: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_options(
    mut args: impl Iterator<Item = String>,
    environment: impl Iterator<Item = (String, String)>,
) -> Result<Options, String> {
    let mut variables: BTreeMap<String, String> = environment
        .filter_map(|(key, value)| {
            let name = key.strip_prefix(VARIABLE_ENV_PREFIX)?;
            Some((name.to_ascii_lowercase(), value))
        })
        .collect();
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut component = None;
    let mut key_value_stores = BTreeSet::new();
    let mut key_value_seed = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args.next().ok_or("--listen needs an address")?;
                listen = value
                    .parse()
                    .map_err(|_| format!("--listen {value:?} is not an IP:PORT address"))?;
            }
            "--var" => {
                let value = args.next().ok_or("--var needs NAME=VALUE")?;
                let (name, value) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--var {value:?} is not NAME=VALUE"))?;
                variables.insert(name.to_owned(), value.to_owned());
            }
            "--key-value-store" => {
                let label = args.next().ok_or("--key-value-store needs a label")?;
                key_value_stores.insert(label);
            }
            "--key-value-seed" => {
                let path = args.next().ok_or("--key-value-seed needs a file")?;
                key_value_seed = Some(PathBuf::from(path));
            }
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}")),
            _ if component.is_none() => component = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    let component = component.ok_or("missing the path of the component")?;
    if key_value_stores.is_empty() {
        key_value_stores.insert(DEFAULT_STORE.to_owned());
    }
    Ok(Options {
        listen,
        component,
        variables,
        key_value_stores,
        key_value_seed,
    })
}

async fn serve(options: Options) -> wasmtime::Result<()> {
    let engine = Engine::default();
    let component = load_component(&engine, &options.component)?;

    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    variables::add_to_linker(&mut linker)?;
    key_value::add_to_linker(&mut linker)?;
    outbound_redis::add_to_linker(&mut linker)?;
    let pre = ProxyPre::new(linker.instantiate_pre(&component)?)?;

    let key_value = KeyValueStores::new(&options.key_value_stores);
    if let Some(seed) = &options.key_value_seed {
        key_value
            .seed(DEFAULT_STORE, seed)
            .map_err(|message| wasmtime::format_err!("--key-value-seed: {message}"))?;
    }

    let listener = TcpListener::bind(options.listen).await?;
    let address = listener.local_addr()?;
    println!("{READY_PREFIX}http://{address}");

    let server = Arc::new(Server {
        pre,
        variables: Arc::new(options.variables),
        key_value: Arc::new(key_value),
    });
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("gatehouse-spin-host: failed to accept a connection: {error}");
                continue;
            }
        };
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let server = Arc::clone(&server);
                async move { Ok::<_, Infallible>(server.handle(request, peer).await) }
            });
            if let Err(error) = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("gatehouse-spin-host: connection from {peer} failed: {error}");
            }
        });
    }
}

/// Compiles the component, or loads the machine code compiled by an earlier run from
/// `COMPONENT.cwasm` when that file is newer than the component. Compiling takes
/// seconds on a small machine and the conformance suite starts the host once per
/// scenario, so the cache keeps starts fast.
fn load_component(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    let cached = path.with_extension("cwasm");
    let modified = |path: &Path| std::fs::metadata(path).and_then(|meta| meta.modified());
    let source_time = modified(path)
        .map_err(|error| wasmtime::format_err!("failed to read {}: {error}", path.display()))?;
    if modified(&cached).is_ok_and(|cached_time| cached_time > source_time) {
        // SAFETY: `Component::serialize` below wrote this file from a component that
        // this host compiled. `deserialize_file` rejects a file from another wasmtime
        // version or other engine settings, and the host then compiles again.
        let loaded = unsafe { Component::deserialize_file(engine, &cached) };
        match loaded {
            Ok(component) => return Ok(component),
            Err(error) => eprintln!(
                "gatehouse-spin-host: ignoring the compiled cache {}: {error}",
                cached.display()
            ),
        }
    }
    let component = Component::from_file(engine, path)?;
    // The cache only saves time, so failing to write it is logged, not returned.
    let written = component
        .serialize()
        .and_then(|bytes| write_atomically(&cached, &bytes).map_err(wasmtime::Error::from));
    if let Err(error) = written {
        eprintln!(
            "gatehouse-spin-host: failed to write the compiled cache {}: {error}",
            cached.display()
        );
    }
    Ok(component)
}

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`.
///
/// Other hosts may have `path` mapped into memory, because wasmtime maps compiled code
/// from the file, and truncating a mapped file kills them with SIGBUS. A rename leaves
/// their file intact, and readers never see a partly written file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension(format!("cwasm.{}.tmp", std::process::id()));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

impl Server {
    /// Runs one request in a new instance of the component, as Spin does.
    async fn handle(
        &self,
        mut request: hyper::Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> hyper::Response<HyperOutgoingBody> {
        // Spin replaces any client-sent value with the socket peer.
        if let Ok(value) = http::HeaderValue::try_from(peer.to_string()) {
            request.headers_mut().insert(CLIENT_ADDRESS_HEADER, value);
        }
        match self.run(request).await {
            Ok(response) => response,
            Err(error) => {
                eprintln!("gatehouse-spin-host: the component failed: {error:#}");
                let body = format!("the component failed: {error}\n");
                let mut response = hyper::Response::new(
                    Full::new(Bytes::from(body))
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                );
                *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                response
            }
        }
    }

    async fn run(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> wasmtime::Result<hyper::Response<HyperOutgoingBody>> {
        let state = RequestState {
            wasi: WasiCtx::builder().inherit_stdout().inherit_stderr().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: LoopbackOnly,
            variables: Arc::clone(&self.variables),
            key_value: Arc::clone(&self.key_value),
            open_stores: 0,
            open_redis_connections: 0,
        };
        let mut store = Store::new(self.pre.engine(), state);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)?;
        let response_out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();

        // The instance runs in its own task, so it can keep writing the response body
        // after the head has been returned to hyper.
        let task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, request, response_out)
                .await
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(wasmtime::format_err!(
                "the component answered with the error {code:?}"
            )),
            // The component returned or trapped without setting a response.
            Err(_) => match task.await {
                Ok(Ok(())) => Err(wasmtime::format_err!(
                    "the component returned without setting a response"
                )),
                Ok(Err(error)) => Err(error),
                Err(error) => Err(wasmtime::format_err!("the request task failed: {error}")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|value| (*value).to_owned()).collect()
    }

    #[test]
    fn options_merge_flags_over_environment() {
        let environment = vec![
            (
                "SPIN_VARIABLE_GATEHOUSE_CONFIG".to_owned(),
                "env".to_owned(),
            ),
            ("SPIN_VARIABLE_REGION".to_owned(), "eu".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ];
        let args = strings(&["--var", "gatehouse_config=a=b", "app.wasm"]);
        let options = parse_options(args.into_iter(), environment.into_iter()).unwrap();
        assert_eq!(options.component, PathBuf::from("app.wasm"));
        assert_eq!(options.variables["gatehouse_config"], "a=b");
        assert_eq!(options.variables["region"], "eu");
        assert_eq!(options.variables.len(), 2);
        assert_eq!(options.listen, SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(
            options.key_value_stores,
            BTreeSet::from([DEFAULT_STORE.to_owned()])
        );
        assert_eq!(options.key_value_seed, None);
    }

    #[test]
    fn options_name_key_value_stores_and_seed() {
        let args = strings(&[
            "--key-value-store",
            "cache",
            "--key-value-seed",
            "seed.json",
            "app.wasm",
        ]);
        let options = parse_options(args.into_iter(), [].into_iter()).unwrap();
        assert_eq!(
            options.key_value_stores,
            BTreeSet::from(["cache".to_owned()])
        );
        assert_eq!(options.key_value_seed, Some(PathBuf::from("seed.json")));
    }

    #[test]
    fn options_reject_missing_component() {
        let error = parse_options(
            strings(&["--listen", "127.0.0.1:0"]).into_iter(),
            [].into_iter(),
        )
        .unwrap_err();
        assert!(error.contains("missing the path"), "{error}");
    }

    #[test]
    fn options_reject_bad_variable() {
        let error = parse_options(
            strings(&["--var", "novalue", "a.wasm"]).into_iter(),
            [].into_iter(),
        )
        .unwrap_err();
        assert!(error.contains("NAME=VALUE"), "{error}");
    }
}
