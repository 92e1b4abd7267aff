//! The in-process target: builds a [`gatehouse_core::Gateway`] from the scenario config
//! and calls [`gatehouse_core::Gateway::handle`] directly, with a platform whose clock
//! is driven by hand and whose upstreams run the test behaviours without sockets.
//! Before each step it reads the `key_value` discovery sources, as the edge adapters
//! do on the request path.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use gatehouse_core::body::{self, LocalBody};
use gatehouse_core::cache::MemoryResponseCache;
use gatehouse_core::config::{Format, UpstreamProtocol as CoreProtocol};
use gatehouse_core::discovery::KeyValueDiscovery;
use gatehouse_core::key_value::MemoryKeyValue;
use gatehouse_core::platform::{Clock, Platform, Upstream, UpstreamTarget};
use gatehouse_core::{ConnectionInfo, Error, Gateway};
use http::{Request, Response, Version};

use crate::behaviour::{self, Received};
use crate::clock::{DriveLimits, ManualClock, drive};
use crate::scenario::{Scenario, UpstreamBehaviour, UpstreamProtocol, render_config};
use crate::target::{Chunked, Exchange, Instance, Target, body_chunks};

/// First of the made-up ports that name simulated upstreams in the rendered config.
/// Nothing listens on them; the simulated client looks the address up instead.
const FIRST_SIMULATED_PORT: u16 = 40_000;

/// Port that no simulated upstream uses, for `{{unused_port}}`.
const UNUSED_PORT: u16 = FIRST_SIMULATED_PORT - 1;

/// Real time allowed per step. The manual clock makes timeouts instant, so this only
/// catches a request that spins.
const STEP_REAL_TIME: Duration = Duration::from_secs(10);

/// Manual-clock time allowed per step, long enough for the default 15-second timeouts.
const STEP_VIRTUAL_TIME: Duration = Duration::from_secs(60);

/// Seed of the platform's random numbers, fixed so in-process runs repeat exactly.
const RANDOM_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// Runs scenarios against the core in this process.
#[derive(Debug, Default)]
pub struct InProcessTarget;

impl Target for InProcessTarget {
    fn name(&self) -> &'static str {
        "in_process"
    }

    fn start(&mut self, scenario: &Scenario) -> Result<Box<dyn Instance + '_>, String> {
        let clock = ManualClock::new();
        let mut addresses = BTreeMap::new();
        let mut by_authority = HashMap::new();
        for (port, (name, behaviour)) in (FIRST_SIMULATED_PORT..).zip(&scenario.upstreams) {
            let address = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
            addresses.insert(name.clone(), address);
            by_authority.insert(address.to_string(), (name.clone(), behaviour.clone()));
        }
        let text = render_config(&scenario.config, &addresses, UNUSED_PORT)?;
        let config = gatehouse_core::config::load(&text, Format::Toml)
            .map_err(|errors| format!("the scenario config does not load: {errors}"))?;
        let key_value = MemoryKeyValue::new(clock.clone(), config.key_value.memory_max_entries);
        for (key, value) in scenario.key_value_entries(&addresses, UNUSED_PORT)? {
            key_value
                .insert(&key, Bytes::from(value), None)
                .map_err(|error| format!("failed to store key {key:?}: {error}"))?;
        }
        let gateway = Gateway::new(config)
            .map_err(|errors| format!("the gateway rejects the config: {errors}"))?;

        let platform = TestPlatform {
            key_value,
            upstream: SimulatedUpstreams {
                clock: clock.clone(),
                by_authority,
                requests: RefCell::new(BTreeMap::new()),
            },
            clock,
            random_state: Cell::new(RANDOM_SEED),
            secrets: scenario.secrets.clone(),
            cache: MemoryResponseCache::new(gateway.config().server.cache_max_bytes),
        };
        Ok(Box::new(InProcessInstance {
            gateway,
            platform,
            discovery: KeyValueDiscovery::new(),
        }))
    }
}

struct InProcessInstance {
    gateway: Gateway,
    platform: TestPlatform,
    discovery: KeyValueDiscovery,
}

impl InProcessInstance {
    /// Reads the `key_value` discovery sources that are due and swaps in the gateway
    /// rebuilt with changed endpoints.
    fn discover(&mut self, limits: DriveLimits) -> Result<(), String> {
        let now = self.platform.clock.monotonic();
        let refresh = self
            .discovery
            .refresh(&self.gateway, &self.platform.key_value, now);
        let (next, _reads) = drive(&self.platform.clock, refresh, limits)?;
        if let Some(next) = next {
            self.gateway = next;
        }
        Ok(())
    }
}

impl Instance for InProcessInstance {
    fn send(
        &mut self,
        request: &Request<Bytes>,
        count: usize,
        concurrent: bool,
    ) -> Vec<Result<Exchange, String>> {
        let connection = ConnectionInfo {
            peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
            secure: false,
        };
        let limits = DriveLimits {
            virtual_time: STEP_VIRTUAL_TIME,
            real_time: STEP_REAL_TIME,
        };
        if let Err(error) = self.discover(limits) {
            return (0..count).map(|_| Err(error.clone())).collect();
        }
        let handle = |request: Request<Bytes>| {
            let gateway = &self.gateway;
            let platform = &self.platform;
            let connection = &connection;
            async move {
                let chunked = request.extensions().get::<Chunked>().is_some();
                let request = request.map(|body| {
                    if chunked {
                        LocalBody::chunks(body_chunks(&body))
                    } else {
                        LocalBody::from(body)
                    }
                });
                let handled = gateway.handle(request, connection, platform).await;
                // Work after the response runs at once, so that the next step sees
                // its effect without a race.
                if let Some(task) = handled.background {
                    gateway.run_background(task, platform).await;
                }
                let (parts, body) = handled.response.into_parts();
                // A response body that fails midway ends short, as a client sees it.
                let body = body.collect_bytes().await.unwrap_or_default();
                Exchange {
                    status: parts.status.as_u16(),
                    headers: parts.headers,
                    body,
                }
            }
        };

        if concurrent {
            let all = futures::future::join_all((0..count).map(|_| handle(request.clone())));
            match drive(&self.platform.clock, all, limits) {
                Ok(exchanges) => exchanges.into_iter().map(Ok).collect(),
                Err(error) => (0..count).map(|_| Err(error.clone())).collect(),
            }
        } else {
            (0..count)
                .map(|_| drive(&self.platform.clock, handle(request.clone()), limits))
                .collect()
        }
    }

    fn upstream_connections(&self) -> BTreeMap<String, usize> {
        self.platform.upstream.requests.borrow().clone()
    }

    fn upstream_requests(&self) -> BTreeMap<String, usize> {
        self.platform.upstream.requests.borrow().clone()
    }

    fn wait(&mut self, duration: Duration) -> Result<(), String> {
        let clock = self.platform.clock.clone();
        let limits = DriveLimits {
            virtual_time: duration + Duration::from_secs(1),
            real_time: STEP_REAL_TIME,
        };
        drive(&self.platform.clock, clock.sleep(duration), limits)
    }
}

/// The platform of the in-process runner.
struct TestPlatform {
    clock: ManualClock,
    upstream: SimulatedUpstreams,
    random_state: Cell<u64>,
    secrets: BTreeMap<String, String>,
    key_value: MemoryKeyValue<ManualClock>,
    cache: MemoryResponseCache,
}

impl Platform for TestPlatform {
    type Body = LocalBody;
    type Clock = ManualClock;
    type Upstream = SimulatedUpstreams;
    type KeyValue = MemoryKeyValue<ManualClock>;
    type ResponseCache = MemoryResponseCache;

    fn limit_body(&self, body: LocalBody, max_bytes: u64) -> LocalBody {
        LocalBody::boxed(body::Limit::new(body, max_bytes))
    }

    fn chain_body(&self, prefix: Bytes, rest: LocalBody) -> LocalBody {
        LocalBody::boxed(body::Chain::new(prefix, rest))
    }
    type Counters = gatehouse_core::platform::NoSharedStores;

    fn clock(&self) -> &ManualClock {
        &self.clock
    }

    fn response_cache(&self) -> &MemoryResponseCache {
        &self.cache
    }

    fn upstream(&self) -> &SimulatedUpstreams {
        &self.upstream
    }

    fn counters(&self) -> &gatehouse_core::platform::NoSharedStores {
        &gatehouse_core::platform::NoSharedStores
    }

    /// Returns the next SplitMix64 number: cheap, well mixed and reproducible.
    fn random_u64(&self) -> u64 {
        let state = self.random_state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.random_state.set(state);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn secret(&self, name: &str) -> Option<String> {
        self.secrets.get(name).cloned()
    }

    fn key_value(&self) -> Option<&MemoryKeyValue<ManualClock>> {
        Some(&self.key_value)
    }
}

/// Responds to upstream requests with the scenario's behaviours, looked up by the endpoint
/// address the gateway chose.
struct SimulatedUpstreams {
    clock: ManualClock,
    by_authority: HashMap<String, (String, UpstreamBehaviour)>,
    requests: RefCell<BTreeMap<String, usize>>,
}

impl Upstream for SimulatedUpstreams {
    type Body = LocalBody;

    async fn send(
        &self,
        request: Request<LocalBody>,
        target: &UpstreamTarget<'_>,
    ) -> Result<Response<LocalBody>, Error> {
        let Some((name, behaviour)) = self.by_authority.get(target.authority) else {
            // Nothing listens there, as with `{{unused_port}}`: a refused connect, which
            // is safe to retry because the request never left.
            return Err(Error::bad_gateway(format!(
                "upstream {:?} refused the connection",
                target.upstream
            ))
            .with_retry_safe(true));
        };
        let number = self.count_request(name);

        let protocol_matches = matches!(
            (target.protocol, behaviour.protocol),
            (CoreProtocol::Http1, UpstreamProtocol::Http1)
                | (CoreProtocol::H2c, UpstreamProtocol::H2c)
        );
        if !protocol_matches {
            // A real server fails to parse the other protocol's first bytes and closes.
            return Err(Error::bad_gateway(format!(
                "upstream {:?} does not speak {:?}",
                target.upstream, target.protocol
            )));
        }

        let (parts, body) = request.into_parts();
        // Like the socket upstreams, read the whole body before answering. A body that
        // fails while it is read is how a platform's client sees it fail while sending.
        let body = body.collect_bytes().await.map_err(|error| {
            body::too_large_in(error.as_ref()).unwrap_or_else(|| {
                Error::bad_gateway(format!(
                    "the request body to upstream {:?} failed",
                    target.upstream
                ))
            })
        })?;
        let received = Received::new(&parts, body);
        if let Some(delay) = behaviour.delay {
            self.clock.sleep(Duration::from_millis(delay)).await;
        }
        if behaviour.close {
            return Err(Error::bad_gateway(format!(
                "upstream {:?} closed the connection without answering",
                target.upstream
            )));
        }
        let reply =
            behaviour::reply(name, behaviour, &received, number).map_err(Error::internal)?;
        Ok(self.response(reply, behaviour).map(LocalBody::from))
    }

    /// Serves a gateway-originated request, such as a JWKS fetch, from the test
    /// upstream at the URI's authority.
    async fn fetch(
        &self,
        request: Request<Bytes>,
        _timeout: Duration,
        max_body_bytes: usize,
    ) -> Result<Response<Bytes>, Error> {
        let authority = request
            .uri()
            .authority()
            .map(|authority| authority.as_str().to_owned())
            .unwrap_or_default();
        let Some((name, behaviour)) = self.by_authority.get(&authority) else {
            return Err(Error::bad_gateway(format!(
                "could not connect to {authority:?}"
            )));
        };
        let number = self.count_request(name);
        let (parts, body) = request.into_parts();
        let received = Received::new(&parts, body);
        if let Some(delay) = behaviour.delay {
            self.clock.sleep(Duration::from_millis(delay)).await;
        }
        if behaviour.close {
            return Err(Error::bad_gateway(
                "the connection closed without an answer",
            ));
        }
        let reply =
            behaviour::reply(name, behaviour, &received, number).map_err(Error::internal)?;
        if reply.body.len() > max_body_bytes {
            return Err(Error::bad_gateway("the response body is too large"));
        }
        Ok(self.response(reply, behaviour))
    }
}

impl SimulatedUpstreams {
    /// Counts a request to upstream `name` and returns its number, from 1.
    fn count_request(&self, name: &str) -> usize {
        let mut requests = self.requests.borrow_mut();
        let count = requests.entry(name.to_owned()).or_default();
        *count += 1;
        *count
    }

    fn response(&self, reply: behaviour::Reply, behaviour: &UpstreamBehaviour) -> Response<Bytes> {
        let mut response = Response::new(reply.body);
        *response.status_mut() = reply.status;
        *response.headers_mut() = reply.headers;
        *response.version_mut() = match behaviour.protocol {
            UpstreamProtocol::Http1 => Version::HTTP_11,
            UpstreamProtocol::H2c => Version::HTTP_2,
        };
        response
    }
}
