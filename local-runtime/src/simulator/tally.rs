//! Admissions per shared limit key, across all locations, against what the
//! coordinator counted: the overshoot of `async` mode.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};

use gatehouse_core::config::StoreMode;
use gatehouse_core::platform::CounterRequest;
use serde::Serialize;

/// Keys tallied at most; later keys are only counted in
/// [`LimitsReport::untracked_keys`], so a key per client cannot grow the report
/// without bound.
const MAX_KEYS: usize = 1_024;

#[derive(Debug)]
struct KeyTally {
    mode: StoreMode,
    limit: u64,
    window_seconds: u64,
    /// Units admitted, by location index.
    admitted: Vec<u64>,
    /// Units the coordinator admitted.
    store_admitted: u64,
    /// Calls sent to the coordinator and not yet decided.
    in_flight: u64,
}

/// The tallies of every shared limit key, shared by the locations and the
/// coordinator.
#[derive(Debug)]
pub struct LimitTally {
    locations: usize,
    keys: Mutex<Tallies>,
}

#[derive(Debug, Default)]
struct Tallies {
    /// By store name and counter key.
    keys: BTreeMap<(String, String), KeyTally>,
    untracked: BTreeSet<(String, String)>,
}

impl LimitTally {
    /// Creates the tally of a simulation of `locations` locations.
    pub fn new(locations: usize) -> Self {
        Self {
            locations,
            keys: Mutex::default(),
        }
    }

    /// Applies `change` to the tally of the key of `request`, creating it unless
    /// [`MAX_KEYS`] are tallied already.
    fn update(&self, request: &CounterRequest<'_>, change: impl FnOnce(&mut KeyTally)) {
        let mut tallies = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let id = (request.store.to_owned(), request.key.to_owned());
        if !tallies.keys.contains_key(&id) && tallies.keys.len() >= MAX_KEYS {
            if tallies.untracked.len() < MAX_KEYS {
                tallies.untracked.insert(id);
            }
            return;
        }
        let tally = tallies.keys.entry(id).or_insert_with(|| KeyTally {
            mode: request.mode,
            limit: request.limit.quota_units(),
            window_seconds: request.limit.window_seconds(),
            admitted: vec![0; self.locations],
            store_admitted: 0,
            in_flight: 0,
        });
        tally.mode = request.mode;
        change(tally);
    }

    /// Counts the units of `request` as admitted in location index `location`.
    pub fn record_admitted(&self, location: usize, request: &CounterRequest<'_>) {
        self.update(request, |tally| {
            if let Some(admitted) = tally.admitted.get_mut(location) {
                *admitted += request.cost;
            }
        });
    }

    /// Counts a call of `request` sent to the coordinator.
    pub fn record_call(&self, request: &CounterRequest<'_>) {
        self.update(request, |tally| tally.in_flight += 1);
    }

    /// Counts the coordinator's decision of a call of `request`.
    pub fn record_decided(&self, request: &CounterRequest<'_>, allowed: bool) {
        self.update(request, |tally| {
            tally.in_flight = tally.in_flight.saturating_sub(1);
            if allowed {
                tally.store_admitted += request.cost;
            }
        });
    }

    /// Returns the report, naming locations by `names` (in index order) and computing
    /// each key's bound from `max_in_flight`, the `async_max_in_flight` of each store.
    pub fn report(&self, names: &[&str], max_in_flight: &BTreeMap<String, u32>) -> LimitsReport {
        let tallies = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let keys = tallies
            .keys
            .iter()
            .map(|((store, key), tally)| {
                let admitted: u64 = tally.admitted.iter().sum();
                let per_location = max_in_flight.get(store).copied().unwrap_or(0);
                let bound = match tally.mode {
                    StoreMode::Strict => 0,
                    StoreMode::Async => self.locations as u64 * u64::from(per_location),
                };
                LimitKeyReport {
                    store: store.clone(),
                    key: key.clone(),
                    mode: match tally.mode {
                        StoreMode::Strict => "strict",
                        StoreMode::Async => "async",
                    },
                    limit: tally.limit,
                    window_seconds: tally.window_seconds,
                    admitted,
                    admitted_by_location: names
                        .iter()
                        .zip(&tally.admitted)
                        .map(|(name, units)| ((*name).to_owned(), *units))
                        .collect(),
                    store_admitted: tally.store_admitted,
                    overshoot: admitted.saturating_sub(tally.store_admitted),
                    overshoot_bound: bound,
                    in_flight: tally.in_flight,
                }
            })
            .collect();
        LimitsReport {
            keys,
            untracked_keys: tallies.untracked.len() as u64,
        }
    }
}

/// The shared limit keys of the simulation.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct LimitsReport {
    /// Each key decided by a shared store, by store and key.
    pub keys: Vec<LimitKeyReport>,
    /// Keys seen after the first 1024, which are not tallied (counted up to 1024).
    pub untracked_keys: u64,
}

/// One shared limit key, across all locations.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LimitKeyReport {
    /// The store's name in `[stores]`.
    pub store: String,
    /// The counter key, starting with the policy's name.
    pub key: String,
    /// `strict` or `async`.
    pub mode: &'static str,
    /// Units the limit allows per window.
    pub limit: u64,
    /// The limit's period, in seconds.
    pub window_seconds: u64,
    /// Units admitted by the locations (one per request unless the policy sets a
    /// cost), since the start.
    pub admitted: u64,
    /// `admitted`, by location.
    pub admitted_by_location: BTreeMap<String, u64>,
    /// Units the coordinator admitted: at most `limit` per window.
    pub store_admitted: u64,
    /// `admitted - store_admitted`: units admitted by a location's local tier that
    /// the coordinator rejected (or has not decided yet, see `in_flight`).
    pub overshoot: u64,
    /// The documented maximum overshoot each time the key runs out: 0 in `strict`
    /// mode, locations × `async_max_in_flight` in `async` mode.
    pub overshoot_bound: u64,
    /// Calls to the coordinator not yet decided; `overshoot` is final at 0.
    pub in_flight: u64,
}
