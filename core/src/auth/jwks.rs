//! A JWKS document fetched through [`Upstream::fetch`] and cached per policy.
//!
//! The cache is shared by all requests of one gateway (an `Arc` in the compiled
//! policy). It never holds its lock across an await, so it works the same on the
//! multi-threaded native runtime and on single-threaded edge runtimes.
//!
//! Fetch rules:
//! - keys are used until their TTL ends: `Cache-Control: max-age` clamped to
//!   `min_ttl..=max_ttl`, or `ttl` without it;
//! - a token whose `kid` is unknown triggers a fetch, and so does an expired set;
//! - two fetches are at least `refetch_interval` apart whatever triggered them, so a
//!   flood of random `kid`s costs at most one fetch per interval;
//! - when a fetch fails, expired keys stay usable for `stale_grace`;
//! - when no cached key fits and the endpoint failed, the answer is 503, not 401.

use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{Either, select};
use http::header::{ACCEPT, CACHE_CONTROL};
use http::{Request, Uri};
use serde_json::Value;

use super::keys::{Alg, KeyFamily, PublicKey};
use crate::config::{ConfigError, JwksConfig};
use crate::error::{Error, ErrorKind, ErrorSource};
use crate::platform::{Clock, Platform, Upstream};

/// Largest JWKS document read. Real sets hold a handful of keys, a few KiB.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Most keys kept from one document, so a hostile or broken endpoint cannot make every
/// kid-less token try thousands of keys.
const MAX_KEYS: usize = 64;

/// How often a request that waits for another request's fetch looks again.
const WAIT_STEP: Duration = Duration::from_millis(10);

/// One usable key of a JWKS document.
#[derive(Debug, Clone)]
pub(crate) struct JwksKey {
    pub kid: Option<String>,
    pub algs: Vec<Alg>,
    pub key: PublicKey,
}

impl JwksKey {
    /// Returns whether this key may verify a token with `kid` and `alg`. A key without
    /// `kid` fits any token of its algorithm.
    pub(crate) fn fits(&self, kid: Option<&str>, alg: Alg) -> bool {
        let kid_fits = match (kid, &self.kid) {
            (Some(wanted), Some(own)) => wanted == own,
            _ => true,
        };
        kid_fits && self.algs.contains(&alg)
    }
}

#[derive(Debug, Default)]
struct State {
    keys: Arc<[JwksKey]>,
    /// Monotonic time the keys expire; `None` before the first successful fetch.
    expires_at: Option<Duration>,
    /// Monotonic time of the last fetch attempt.
    last_attempt: Option<Duration>,
    last_failed: bool,
    fetching: bool,
    fetches: u64,
}

/// The decision a lookup made while holding the lock.
enum Step {
    Keys(Vec<PublicKey>),
    Fetch,
    Wait,
    Unavailable,
}

/// A JWKS URL with its cached keys.
#[derive(Debug)]
pub struct JwksSource {
    url: Uri,
    algorithms: Vec<Alg>,
    ttl: Duration,
    min_ttl: Duration,
    max_ttl: Duration,
    refetch_interval: Duration,
    stale_grace: Duration,
    timeout: Duration,
    state: Mutex<State>,
}

impl JwksSource {
    /// Validates `config`, reporting problems under `path`.
    pub(crate) fn compile(config: &JwksConfig, path: &str, errors: &mut Vec<ConfigError>) -> Self {
        let url = match config.url.parse::<Uri>() {
            Ok(url)
                if matches!(url.scheme_str(), Some("http" | "https"))
                    && url.authority().is_some() =>
            {
                url
            }
            _ => {
                errors.push(
                    ConfigError::new(format!("{path}.url"), format!("invalid JWKS URL {:?}", config.url))
                        .with_hint("use an absolute http:// or https:// URL, such as \"https://login.example.com/.well-known/jwks.json\""),
                );
                Uri::from_static("http://invalid.invalid/")
            }
        };
        let mut algorithms = Vec::new();
        for (index, name) in config.algorithms.iter().enumerate() {
            let entry_path = format!("{path}.algorithms[{index}]");
            match Alg::parse(name) {
                Some(alg) if alg.family() == KeyFamily::Hmac => errors.push(
                    ConfigError::new(entry_path, format!("{name} is not accepted from a JWKS"))
                        .with_hint("HMAC keys are secrets and never come from a URL; use a static key with secret = \"NAME\""),
                ),
                Some(alg) => algorithms.push(alg),
                None => errors.push(
                    ConfigError::new(entry_path, format!("unknown algorithm {name:?}"))
                        .with_hint("use RS256, RS384, RS512, PS256, PS384, PS512, ES256 or EdDSA"),
                ),
            }
        }
        let positive = [
            ("ttl", config.ttl),
            ("max_ttl", config.max_ttl),
            ("refetch_interval", config.refetch_interval),
            ("timeout", config.timeout),
        ];
        for (field, value) in positive {
            if value.get().is_zero() {
                errors.push(ConfigError::new(
                    format!("{path}.{field}"),
                    "must be greater than 0",
                ));
            }
        }
        if config.min_ttl > config.max_ttl {
            errors.push(ConfigError::new(
                format!("{path}.min_ttl"),
                format!(
                    "is longer than max_ttl ({} > {})",
                    config.min_ttl, config.max_ttl
                ),
            ));
        }
        Self {
            url,
            algorithms,
            ttl: config.ttl.get(),
            min_ttl: config.min_ttl.get(),
            max_ttl: config.max_ttl.get(),
            refetch_interval: config.refetch_interval.get(),
            stale_grace: config.stale_grace.get(),
            timeout: config.timeout.get(),
            state: Mutex::new(State::default()),
        }
    }

    /// Returns how many fetches this source has started, for tests and metrics.
    pub fn fetch_count(&self) -> u64 {
        self.lock().fetches
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update of the state is a plain assignment, so a panic elsewhere cannot
        // leave it inconsistent and a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns the cached keys that fit `kid` and `alg`, fetching the document first
    /// when the rules allow. An empty list means the token names no known key (401);
    /// an error means the keys are unavailable (503).
    pub(crate) async fn keys_for<P: Platform>(
        &self,
        platform: &P,
        kid: Option<&str>,
        alg: Alg,
    ) -> Result<Vec<PublicKey>, Error> {
        let clock = platform.clock();
        loop {
            let now = clock.monotonic();
            let step = self.decide(now, kid, alg);
            match step {
                Step::Keys(keys) => return Ok(keys),
                Step::Unavailable => {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        ErrorSource::Upstream,
                        "the token signing keys are unavailable; try again later",
                    )
                    .with_retry_after(self.refetch_interval));
                }
                Step::Fetch => {
                    // The guard ends the fetch even when this request is cancelled
                    // while it waits, so that others do not wait forever.
                    let _fetching = FetchGuard(self);
                    let result = self.fetch(platform).await;
                    self.store(result, clock.monotonic());
                }
                Step::Wait => {
                    // Another request is fetching, which ends within `timeout`, and
                    // its result answers this request too.
                    clock.sleep(WAIT_STEP).await;
                }
            }
        }
    }

    fn decide(&self, now: Duration, kid: Option<&str>, alg: Alg) -> Step {
        let mut state = self.lock();
        let fresh = state.expires_at.is_some_and(|expires| now < expires);
        let usable = state
            .expires_at
            .is_some_and(|expires| now < expires + self.stale_grace);
        let fitting: Vec<PublicKey> = if usable {
            state
                .keys
                .iter()
                .filter(|key| key.fits(kid, alg))
                .map(|key| key.key.clone())
                .collect()
        } else {
            Vec::new()
        };
        let may_fetch = !state.fetching
            && state
                .last_attempt
                .is_none_or(|last| now.saturating_sub(last) >= self.refetch_interval);
        if !fitting.is_empty() && (fresh || !may_fetch) {
            return Step::Keys(fitting);
        }
        if may_fetch {
            state.fetching = true;
            state.last_attempt = Some(now);
            state.fetches += 1;
            return Step::Fetch;
        }
        if state.fetching {
            return Step::Wait;
        }
        if !usable || state.last_failed {
            Step::Unavailable
        } else {
            Step::Keys(Vec::new())
        }
    }

    fn store(&self, result: Result<(Vec<JwksKey>, Duration), Error>, now: Duration) {
        let mut state = self.lock();
        state.fetching = false;
        match result {
            Ok((keys, ttl)) => {
                state.keys = keys.into();
                state.expires_at = Some(now + ttl);
                state.last_failed = false;
            }
            Err(_) => {
                // NOTE: the core has no logger; the failure shows as 503s in the access
                // log once no cached key fits. Stale keys stay usable for the grace.
                state.last_failed = true;
            }
        }
    }

    async fn fetch<P: Platform>(&self, platform: &P) -> Result<(Vec<JwksKey>, Duration), Error> {
        let mut request = Request::new(Bytes::new());
        *request.uri_mut() = self.url.clone();
        request.headers_mut().insert(
            ACCEPT,
            http::HeaderValue::from_static("application/jwk-set+json, application/json"),
        );
        let fetch = pin!(
            platform
                .upstream()
                .fetch(request, self.timeout, MAX_JWKS_BYTES)
        );
        let timer = pin!(platform.clock().sleep(self.timeout));
        let response = match select(fetch, timer).await {
            Either::Left((result, _)) => result?,
            Either::Right(((), _)) => {
                return Err(Error::gateway_timeout(
                    "the JWKS endpoint did not respond in time",
                ));
            }
        };
        if response.status() != http::StatusCode::OK {
            return Err(Error::bad_gateway(format!(
                "the JWKS endpoint responded with status {}",
                response.status().as_u16()
            )));
        }
        let max_age = response
            .headers()
            .get_all(CACHE_CONTROL)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find_map(max_age);
        let ttl = match max_age {
            Some(seconds) => Duration::from_secs(seconds).clamp(self.min_ttl, self.max_ttl),
            None => self.ttl,
        };
        let keys = parse_jwks(response.body(), &self.algorithms)?;
        Ok((keys, ttl))
    }
}

/// Clears the fetching flag when a fetch ends or its request is dropped.
struct FetchGuard<'a>(&'a JwksSource);

impl Drop for FetchGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().fetching = false;
    }
}

/// Reads `max-age=N` from one `Cache-Control` value; `no-store` and `no-cache` count as
/// 0, which the minimum TTL then raises.
fn max_age(value: &str) -> Option<u64> {
    value.split(',').find_map(|directive| {
        let directive = directive.trim();
        if directive.eq_ignore_ascii_case("no-store") || directive.eq_ignore_ascii_case("no-cache")
        {
            return Some(0);
        }
        let (name, seconds) = directive.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("max-age") {
            return None;
        }
        seconds.trim().trim_matches('"').parse().ok()
    })
}

/// Parses a JWKS document, keeping the signature keys the gateway can use.
///
/// Keys with `use` other than `sig`, symmetric keys, unknown algorithms and keys whose
/// type does not fit their algorithm are skipped rather than failing the whole set,
/// because identity providers publish keys for other purposes next to signing keys.
/// A document with no usable key at all is an error, so stale keys stay in use.
pub(crate) fn parse_jwks(body: &[u8], default_algs: &[Alg]) -> Result<Vec<JwksKey>, Error> {
    let invalid = |detail: &'static str| Error::bad_gateway(detail);
    let document: Value =
        serde_json::from_slice(body).map_err(|_| invalid("the JWKS document is not JSON"))?;
    let entries = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("the JWKS document has no \"keys\" list"))?;
    let mut keys = Vec::new();
    for entry in entries {
        if keys.len() == MAX_KEYS {
            break;
        }
        if entry
            .get("use")
            .and_then(Value::as_str)
            .is_some_and(|usage| usage != "sig")
        {
            continue;
        }
        let Ok(key) = PublicKey::from_jwk(entry) else {
            continue;
        };
        let algs: Vec<Alg> = match entry.get("alg").and_then(Value::as_str) {
            Some(name) => Alg::parse(name).into_iter().collect(),
            None => default_algs.to_vec(),
        };
        let algs: Vec<Alg> = algs
            .into_iter()
            .filter(|alg| alg.family() == key.family())
            .collect();
        if algs.is_empty() {
            continue;
        }
        keys.push(JwksKey {
            kid: entry.get("kid").and_then(Value::as_str).map(str::to_owned),
            algs,
            key,
        });
    }
    if keys.is_empty() {
        return Err(invalid("the JWKS document has no usable signature key"));
    }
    Ok(keys)
}
