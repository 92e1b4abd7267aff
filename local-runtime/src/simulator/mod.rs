//! `gatehouse dev`: one config run as several simulated edge locations in one
//! process, to see edge behaviour before deploying.
//!
//! Each location has what an edge location keeps for itself: its own [`Gateway`]
//! (local rate-limit counters, passive health and balancer state), its own response
//! cache, and its name as the platform location, which `server.location_zones` maps
//! to a zone. The locations share a key-value store whose writes reach other
//! locations after a delay, as Workers KV, and a counter coordinator in one location,
//! as a Durable Object, which decides the `redis` and `durable_object` stores of the
//! config. Each request runs the same core pipeline as `gatehouse run`, within the
//! per-request limits of Workers.

mod admin;
pub(crate) mod cli;
mod coordinator;
mod key_value;
mod limits;
mod platform;
mod report;
mod server;
mod tally;

use std::net::SocketAddr;
use std::sync::Arc;

use gatehouse_core::Gateway;
use gatehouse_core::config::{Config, SimulatorConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use key_value::{MAX_KEY_BYTES, MAX_VALUE_BYTES, SharedKeyValue};
pub use report::{LocationReport, Percentiles, Report};
pub use tally::{LimitKeyReport, LimitsReport};

use coordinator::{Coordinator, LocationCounters};
use key_value::LocationKeyValue;
use platform::Location;
use report::LocationStats;
use server::LocationListener;
use tally::LimitTally;

use crate::platform::{NativeClock, NativeUpstream};

/// Longest accepted location name, in bytes.
const MAX_LOCATION_NAME_BYTES: usize = 32;

/// The running simulation: its locations and shared stores.
#[derive(Debug)]
pub struct Simulator {
    locations: Vec<Arc<Location>>,
    /// The address of each location's first listener, in location order.
    addresses: Vec<SocketAddr>,
    key_value: Arc<SharedKeyValue>,
    coordinator: Arc<Coordinator>,
}

impl Simulator {
    /// Returns the location named `name`.
    fn location(&self, name: &str) -> Option<&Arc<Location>> {
        self.locations.iter().find(|location| location.name == name)
    }

    fn location_names(&self) -> Vec<&str> {
        self.locations
            .iter()
            .map(|location| location.name.as_str())
            .collect()
    }

    /// Returns the report of every location.
    pub fn report(&self) -> Report {
        Report {
            kv_propagation_ms: self.key_value.propagation().as_millis() as u64,
            coordinator_location: self.locations[self.coordinator.location()].name.clone(),
            coordinator_latency_ms: self.coordinator.latency().as_millis() as u64,
            locations: self
                .locations
                .iter()
                .zip(&self.addresses)
                .map(|(location, address)| {
                    location.stats.report(&location.name, &address.to_string())
                })
                .collect(),
            limits: self
                .coordinator
                .tally()
                .report(&self.location_names(), self.coordinator.max_in_flight()),
        }
    }
}

/// A bound listener of a location, as printed at start.
#[derive(Debug, Clone)]
pub struct ListenerAddress {
    /// The location's name.
    pub location: String,
    /// The listener's name in the config.
    pub listener: String,
    /// The bound address.
    pub address: SocketAddr,
}

/// A simulation that is serving, with the handle that stops it.
#[derive(Debug)]
pub struct RunningSimulator {
    simulator: Arc<Simulator>,
    listeners: Vec<ListenerAddress>,
    admin: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    served: JoinHandle<()>,
    admin_task: Option<JoinHandle<()>>,
}

impl RunningSimulator {
    /// Returns every bound listener, location by location.
    pub fn listeners(&self) -> &[ListenerAddress] {
        &self.listeners
    }

    /// Returns the address of the first listener of location `name`.
    pub fn address(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|listener| listener.location == name)
            .map(|listener| listener.address)
    }

    /// Returns the admin listener's address, when `[admin]` is set.
    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Returns the current report.
    pub fn report(&self) -> Report {
        self.simulator.report()
    }

    /// Returns the key-value store shared by the locations.
    pub fn key_value(&self) -> &SharedKeyValue {
        &self.simulator.key_value
    }

    /// Stops accepting, lets open requests finish and returns the final report.
    pub async fn shutdown(self) -> Report {
        let _ = self.stop.send(true);
        if let Err(error) = self.served.await {
            tracing::error!(%error, "the simulator's server task panicked");
        }
        if let Some(admin) = self.admin_task {
            admin.abort();
        }
        self.simulator.report()
    }
}

/// Returns the simulator settings of `config`, with `locations` replacing the
/// configured ones when given, or every problem found, each naming its field.
pub fn settings(
    config: &Config,
    locations: Option<Vec<String>>,
) -> Result<SimulatorConfig, Vec<String>> {
    let mut settings = config.simulator.clone().unwrap_or_default();
    if let Some(locations) = locations {
        settings.locations = locations;
    }
    let mut problems = check_locations(&settings.locations);
    if let Some(owner) = &settings.coordinator.location
        && !settings.locations.contains(owner)
    {
        problems.push(format!(
            "simulator.coordinator.location: {owner:?} is not one of the locations ({}); \
             name one of them",
            settings.locations.join(", ")
        ));
    }
    if settings.limits.subrequests == 0 {
        problems.push(
            "simulator.limits.subrequests: 0 would fail every upstream request; set at least 1"
                .to_owned(),
        );
    }
    if settings.limits.connections == 0 {
        problems.push(
            "simulator.limits.connections: 0 would block every upstream request; set at least 1"
                .to_owned(),
        );
    }
    if config.listeners.is_empty() {
        problems.push(
            "listeners: no listener; add [[listeners]] with an address such as \
             \"127.0.0.1:8080\", which the first location serves"
                .to_owned(),
        );
    }
    for listener in &config.listeners {
        if listener.tls.is_some() {
            problems.push(format!(
                "listeners.{}.tls: gatehouse dev serves cleartext HTTP only; remove tls \
                 from this listener for the simulation",
                listener.name
            ));
        }
    }
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(problems)
    }
}

/// Returns the problems of the location list, each naming its field.
fn check_locations(locations: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    if locations.is_empty() {
        problems.push(
            "simulator.locations: no locations; set locations = [\"fra\", \"iad\"] under \
             [simulator] or pass --locations fra,iad"
                .to_owned(),
        );
    }
    for (index, name) in locations.iter().enumerate() {
        let valid = !name.is_empty()
            && name.len() <= MAX_LOCATION_NAME_BYTES
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
        if !valid {
            problems.push(format!(
                "simulator.locations[{index}]: invalid location {name:?}; use 1 to \
                 {MAX_LOCATION_NAME_BYTES} letters, digits, '-' or '_', such as \"fra\""
            ));
        }
        if locations[..index].contains(name) {
            problems.push(format!(
                "simulator.locations[{index}]: location {name:?} is listed twice; remove one"
            ));
        }
    }
    problems
}

/// Builds the locations of `config`, binds their listeners (each configured port
/// plus the location's index, or a free port for port 0) and the admin listener,
/// and starts serving. Must be called inside a Tokio runtime.
pub async fn start(config: Config, settings: SimulatorConfig) -> Result<RunningSimulator, String> {
    warn_unmapped_locations(&config, &settings.locations);
    let owner = settings
        .coordinator
        .location
        .as_ref()
        .and_then(|owner| settings.locations.iter().position(|name| name == owner))
        .unwrap_or(0);
    let shared_key_value = Arc::new(SharedKeyValue::new(
        settings.kv_propagation.get(),
        config.key_value.memory_max_entries,
    ));
    let coordinator = Arc::new(Coordinator::new(
        owner,
        settings.coordinator.latency.get(),
        &config.stores,
        config.server.max_rate_limit_keys,
        Arc::new(LimitTally::new(settings.locations.len())),
    ));
    let upstream = Arc::new(NativeUpstream::default());
    let clock = NativeClock::default();

    let mut locations = Vec::with_capacity(settings.locations.len());
    let mut bound = Vec::new();
    for (index, name) in settings.locations.iter().enumerate() {
        let gateway = Gateway::new(config.clone()).map_err(|errors| errors.to_string())?;
        let stats = Arc::new(LocationStats::default());
        let location = Arc::new(Location::new(
            name.clone(),
            gateway,
            Arc::clone(&stats),
            settings.limits.clone(),
            clock,
            Arc::clone(&upstream),
            LocationKeyValue::new(index, Arc::clone(&shared_key_value), Arc::clone(&stats)),
            LocationCounters::new(index, Arc::clone(&coordinator), stats),
        ));
        bound.extend(bind_location(&config, &location, index).await?);
        locations.push(location);
    }

    let listeners: Vec<ListenerAddress> = bound
        .iter()
        .map(|listener| ListenerAddress {
            location: listener.location.name.clone(),
            listener: listener.name.clone(),
            address: listener.address,
        })
        .collect();
    // Each location binds its listeners in config order, so its first one comes first.
    let addresses = locations
        .iter()
        .filter_map(|location| {
            listeners
                .iter()
                .find(|listener| listener.location == location.name)
                .map(|listener| listener.address)
        })
        .collect();
    let simulator = Arc::new(Simulator {
        locations,
        addresses,
        key_value: shared_key_value,
        coordinator,
    });

    let (admin, admin_task) = match &config.admin {
        Some(admin) => {
            let socket = TcpListener::bind(admin.address.as_str())
                .await
                .map_err(|error| {
                    format!(
                        "failed to bind the admin listener on {}: {error}",
                        admin.address
                    )
                })?;
            let address = socket.local_addr().map_err(|error| error.to_string())?;
            let task = tokio::spawn(admin::serve(socket, Arc::clone(&simulator)));
            (Some(address), Some(task))
        }
        None => (None, None),
    };
    let (stop, stopped) = watch::channel(false);
    let served = tokio::spawn(server::serve(bound, stopped));
    Ok(RunningSimulator {
        simulator,
        listeners,
        admin,
        stop,
        served,
        admin_task,
    })
}

/// Binds every listener of `config` for the location at `index`.
async fn bind_location(
    config: &Config,
    location: &Arc<Location>,
    index: usize,
) -> Result<Vec<LocationListener>, String> {
    let mut bound = Vec::with_capacity(config.listeners.len());
    for listener in &config.listeners {
        let name = &location.name;
        let address = location_address(&listener.address, index).map_err(|problem| {
            format!(
                "listener {:?} of location {name:?}: {problem}",
                listener.name
            )
        })?;
        let socket = TcpListener::bind(address).await.map_err(|error| {
            format!(
                "failed to bind listener {:?} of location {name:?} on {address}: {error}",
                listener.name
            )
        })?;
        let address = socket.local_addr().map_err(|error| error.to_string())?;
        bound.push(LocationListener {
            location: Arc::clone(location),
            name: listener.name.clone(),
            address,
            listener: socket,
        });
    }
    Ok(bound)
}

/// Warns about locations that `server.location_zones` does not list while it lists
/// others, because location names are case-sensitive and such a location silently
/// falls back to `server.zone`.
fn warn_unmapped_locations(config: &Config, locations: &[String]) {
    let zones = &config.server.location_zones;
    if zones.is_empty() {
        return;
    }
    for location in locations {
        if !zones.contains_key(location) {
            tracing::warn!(
                %location,
                "the location is not in server.location_zones, so its zone is server.zone \
                 or the location name itself; add it to location_zones, which is case-sensitive"
            );
        }
    }
}

/// Returns the address of listener `address` in the location at `index`: the same
/// IP with the port raised by `index`, or port 0 for a free port.
fn location_address(address: &str, index: usize) -> Result<SocketAddr, String> {
    let mut address: SocketAddr = address
        .parse()
        .map_err(|_| format!("invalid socket address {address:?}"))?;
    if address.port() != 0 {
        let port = usize::from(address.port()) + index;
        let port = u16::try_from(port)
            .map_err(|_| format!("port {port} is above 65535; lower the listener's port"))?;
        address.set_port(port);
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_ports_follow_base_port() {
        assert_eq!(
            location_address("127.0.0.1:8080", 2).unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 8082))
        );
        assert_eq!(location_address("127.0.0.1:0", 2).unwrap().port(), 0);
        assert!(location_address("127.0.0.1:65535", 1).is_err());
    }

    fn config(text: &str) -> Config {
        Gateway::from_text(text, gatehouse_core::config::Format::Toml)
            .expect("valid config")
            .config()
            .clone()
    }

    #[test]
    fn settings_problems_name_fields() {
        let config = config(
            r#"
            [[listeners]]
            name = "main"
            address = "127.0.0.1:0"

            [simulator]
            locations = ["fra", "fra", "bad name"]
            coordinator = { location = "sin" }
            "#,
        );
        let problems = settings(&config, None).unwrap_err();
        assert!(
            problems
                .iter()
                .any(|problem| problem.starts_with("simulator.locations[1]"))
        );
        assert!(
            problems
                .iter()
                .any(|problem| problem.starts_with("simulator.locations[2]"))
        );
        assert!(
            problems
                .iter()
                .any(|problem| problem.starts_with("simulator.coordinator.location"))
        );
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn command_line_locations_replace_config() {
        let config = config(
            r#"
            [[listeners]]
            name = "main"
            address = "127.0.0.1:0"
            "#,
        );
        assert!(settings(&config, None).is_err());
        let settings = settings(&config, Some(vec!["fra".into(), "iad".into()])).unwrap();
        assert_eq!(settings.locations, ["fra", "iad"]);
        assert_eq!(settings.limits.subrequests, 50);
    }
}
