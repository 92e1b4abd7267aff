//! Tests of the auth policies with a hand-driven clock and a fake JWKS endpoint.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::executor::block_on;
use http::header::{AUTHORIZATION, CACHE_CONTROL, COOKIE, HeaderValue};
use http::{HeaderMap, Response};
use jwt_compact::alg::{Hs256, Hs256Key};
use jwt_compact::{AlgorithmExt, Claims, Header};
use serde_json::{Value, json};

use super::*;
use crate::body::{Chain, Limit, LocalBody};
use crate::config::{self, ConfigError, Format};
use crate::error::{Error, ErrorKind};
use crate::platform::{Clock, KeyValue, Platform, Upstream, UpstreamTarget};

const KEYS: &str = include_str!("testdata/keys.json");
const TOKENS: &str = include_str!("testdata/tokens.json");
const SECRET_NAME: &str = "JWT_SECRET";
const START_UNIX_MILLIS: u64 = 1_700_000_000_000;

fn keys() -> Value {
    serde_json::from_str(KEYS).unwrap()
}

fn token(name: &str) -> String {
    let tokens: Value = serde_json::from_str(TOKENS).unwrap();
    tokens[name].as_str().unwrap().to_owned()
}

fn public(name: &str) -> Value {
    keys()[name]["public"].clone()
}

struct TestClock {
    now: Cell<Duration>,
}

impl Clock for TestClock {
    fn unix_millis(&self) -> u64 {
        START_UNIX_MILLIS + self.now.get().as_millis() as u64
    }

    fn monotonic(&self) -> Duration {
        self.now.get()
    }

    // Time moves only when a sleep is polled, so a sleep raced against a ready fetch
    // never advances the clock.
    async fn sleep(&self, duration: Duration) {
        self.now.set(self.now.get() + duration);
    }
}

/// A JWKS endpoint: `None` is down, otherwise the status, body and Cache-Control.
type Endpoint = Option<(u16, String, Option<&'static str>)>;

struct FakeUpstream {
    endpoint: RefCell<Endpoint>,
    fetches: Cell<u32>,
}

impl Upstream for FakeUpstream {
    type Body = LocalBody;

    async fn send(
        &self,
        _request: http::Request<LocalBody>,
        _target: &UpstreamTarget<'_>,
    ) -> Result<Response<LocalBody>, Error> {
        Err(Error::internal("not used"))
    }

    async fn fetch(
        &self,
        _request: http::Request<Bytes>,
        _timeout: Duration,
        _max_body_bytes: usize,
    ) -> Result<Response<Bytes>, Error> {
        self.fetches.set(self.fetches.get() + 1);
        let Some((status, body, cache_control)) = self.endpoint.borrow().clone() else {
            return Err(Error::bad_gateway("connection refused"));
        };
        let mut response = Response::new(Bytes::from(body));
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        if let Some(value) = cache_control {
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static(value));
        }
        Ok(response)
    }
}

/// A key-value store in a map, which fails every operation while `down` is set.
#[derive(Default)]
struct FakeStore {
    entries: RefCell<BTreeMap<String, Bytes>>,
    down: Cell<bool>,
    reads: Cell<usize>,
}

impl KeyValue for FakeStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        self.reads.set(self.reads.get() + 1);
        if self.down.get() {
            return Err(crate::key_value::store_failed(
                "get",
                "the test store is down",
            ));
        }
        Ok(self.entries.borrow().get(key).cloned())
    }

    async fn put(&self, key: &str, value: Bytes, _ttl: Option<Duration>) -> Result<(), Error> {
        self.entries.borrow_mut().insert(key.to_owned(), value);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        self.entries.borrow_mut().remove(key);
        Ok(())
    }
}

struct TestPlatform {
    clock: TestClock,
    upstream: FakeUpstream,
    secrets: BTreeMap<String, String>,
    /// The key-value store, or `None` for a platform without one.
    store: Option<FakeStore>,
    cache: crate::cache::MemoryResponseCache,
}

impl TestPlatform {
    fn new() -> Self {
        let secret = keys()["hmac_secret"].as_str().unwrap().to_owned();
        Self {
            clock: TestClock {
                now: Cell::new(Duration::from_secs(1)),
            },
            upstream: FakeUpstream {
                endpoint: RefCell::new(None),
                fetches: Cell::new(0),
            },
            secrets: BTreeMap::from([(SECRET_NAME.to_owned(), secret)]),
            store: Some(FakeStore::default()),
            cache: crate::cache::MemoryResponseCache::new(1 << 20),
        }
    }

    fn serve_jwks(&self, keys: &[&str], cache_control: Option<&'static str>) {
        let keys: Vec<Value> = keys.iter().map(|name| public(name)).collect();
        let body = json!({ "keys": keys }).to_string();
        *self.upstream.endpoint.borrow_mut() = Some((200, body, cache_control));
    }

    fn endpoint_down(&self) {
        *self.upstream.endpoint.borrow_mut() = None;
    }

    fn advance(&self, seconds: u64) {
        self.clock
            .now
            .set(self.clock.now.get() + Duration::from_secs(seconds));
    }
}

impl Platform for TestPlatform {
    type Body = LocalBody;
    type Clock = TestClock;
    type Upstream = FakeUpstream;
    type KeyValue = FakeStore;
    type ResponseCache = crate::cache::MemoryResponseCache;

    fn limit_body(&self, body: LocalBody, max_bytes: u64) -> LocalBody {
        LocalBody::boxed(Limit::new(body, max_bytes))
    }

    fn chain_body(&self, prefix: Bytes, rest: LocalBody) -> LocalBody {
        LocalBody::boxed(Chain::new(prefix, rest))
    }
    type Counters = crate::platform::NoSharedStores;

    fn clock(&self) -> &TestClock {
        &self.clock
    }

    fn response_cache(&self) -> &crate::cache::MemoryResponseCache {
        &self.cache
    }

    fn upstream(&self) -> &FakeUpstream {
        &self.upstream
    }

    fn counters(&self) -> &crate::platform::NoSharedStores {
        &crate::platform::NoSharedStores
    }

    fn random_u64(&self) -> u64 {
        4
    }

    fn secret(&self, name: &str) -> Option<String> {
        self.secrets.get(name).cloned()
    }

    fn key_value(&self) -> Option<&FakeStore> {
        self.store.as_ref()
    }
}

/// Compiles the policies of a `[policies]` TOML document, failing on any problem.
fn policies(text: &str) -> BTreeMap<String, crate::policy::CompiledPolicy> {
    let (compiled, errors) = compile_text(text);
    assert!(errors.is_empty(), "{errors:?}");
    compiled
}

fn compile_text(
    text: &str,
) -> (
    BTreeMap<String, crate::policy::CompiledPolicy>,
    Vec<ConfigError>,
) {
    let config = config::load(text, Format::Toml).unwrap();
    let mut errors = Vec::new();
    let consumers = std::sync::Arc::new(ConsumerTable::compile(&config.consumers, &mut errors));
    let compiled =
        crate::policy::compile_policies(&config.policies, &consumers, &config.stores, &mut errors);
    (compiled, errors)
}

fn config_errors(text: &str) -> Vec<String> {
    compile_text(text)
        .1
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn authenticator(text: &str) -> Authenticator {
    match policies(text).remove("auth") {
        Some(crate::policy::CompiledPolicy::Authenticate(authenticator)) => authenticator,
        other => panic!("policy auth is not an authentication policy: {other:?}"),
    }
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    headers
}

fn run(
    authenticator: &Authenticator,
    headers: &HeaderMap,
    platform: &TestPlatform,
) -> Result<Authenticated, Error> {
    block_on(authenticator.authenticate(headers, None, platform))
}

fn static_keys_policy() -> String {
    let keys = keys();
    format!(
        r#"
        [policies.auth.jwt]
        issuer = ["https://issuer.test"]
        audience = "orders"
        keys = [
          {{ alg = "HS256", secret = "{SECRET_NAME}" }},
          {{ kid = "rsa-1", alg = "RS256", jwk = {rsa} }},
          {{ kid = "ec-1", alg = "ES256", jwk = {ec} }},
          {{ kid = "ed-1", alg = "EdDSA", jwk = {ed} }},
        ]
        "#,
        rsa = toml_inline(&keys["rsa1"]["public"]),
        ec = toml_inline(&keys["ec"]["public"]),
        ed = toml_inline(&keys["ed"]["public"]),
    )
}

/// Writes a flat JSON object of strings as a TOML inline table.
fn toml_inline(object: &Value) -> String {
    let fields: Vec<String> = object
        .as_object()
        .unwrap()
        .iter()
        .map(|(key, value)| format!("{key} = {value}"))
        .collect();
    format!("{{ {} }}", fields.join(", "))
}

fn jwks_policy(extra: &str) -> String {
    format!(
        r#"
        [policies.auth.jwt]
        jwks = {{ url = "http://127.0.0.1:9/jwks.json" {extra} }}
        "#
    )
}

/// Signs an HS256 token with the test secret and the given claims.
fn hs256(claims: Value) -> String {
    let secret = keys()["hmac_secret"].as_str().unwrap().to_owned();
    let Value::Object(map) = claims else {
        panic!("claims must be an object")
    };
    Hs256
        .token(
            &Header::empty(),
            &Claims::new(map),
            &Hs256Key::new(secret.as_bytes()),
        )
        .unwrap()
}

/// A token with an unknown `kid`: it fails at key lookup, before any signature check.
fn unknown_kid_token(kid: &str) -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = engine.encode(json!({ "alg": "RS256", "kid": kid }).to_string());
    let claims = engine.encode(json!({ "sub": "x" }).to_string());
    format!("{header}.{claims}.{}", engine.encode([7u8; 256]))
}

fn assert_401(result: Result<Authenticated, Error>, code: Option<&str>) {
    let error = result.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unauthorized, "{error}");
    let challenge = error.challenge().expect("a 401 has a challenge");
    assert_eq!(challenge.error, code, "{error}");
}

#[test]
fn static_keys_verify_each_algorithm() {
    let platform = TestPlatform::new();
    let policy = authenticator(&static_keys_policy());
    for name in ["hs256", "rs256", "es256", "eddsa"] {
        let authenticated = run(&policy, &bearer(&token(name)), &platform)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(authenticated.identity.subject.as_deref(), Some("alice"));
        assert_eq!(authenticated.identity.scopes, ["orders:read"]);
    }
}

#[test]
fn unsigned_and_confused_tokens_rejected() {
    let platform = TestPlatform::new();
    let policy = authenticator(&static_keys_policy());
    assert_401(
        run(&policy, &bearer(&token("none")), &platform),
        Some("invalid_token"),
    );
    // HS256 signed with the RSA public key: the HS256 key is the secret, never the
    // RSA key, so the signature fails.
    assert_401(
        run(&policy, &bearer(&token("confusion")), &platform),
        Some("invalid_token"),
    );
}

#[test]
fn time_and_audience_claims_checked() {
    let platform = TestPlatform::new();
    let policy = authenticator(&static_keys_policy());
    for name in ["expired", "not_yet_valid", "wrong_aud", "wrong_iss"] {
        assert_401(
            run(&policy, &bearer(&token(name)), &platform),
            Some("invalid_token"),
        );
    }
}

#[test]
fn leeway_allows_small_skew() {
    let platform = TestPlatform::new();
    let policy = authenticator(&static_keys_policy());
    let now = (platform.clock.unix_millis() / 1000) as i64;
    let base = json!({ "sub": "a", "iss": "https://issuer.test", "aud": "orders" });
    let with = |key: &str, value: i64| {
        let mut claims = base.clone();
        claims[key] = json!(value);
        bearer(&hs256(claims))
    };
    assert!(run(&policy, &with("exp", now - 30), &platform).is_ok());
    assert!(run(&policy, &with("exp", now - 61), &platform).is_err());
    assert!(run(&policy, &with("nbf", now + 30), &platform).is_ok());
    assert!(run(&policy, &with("nbf", now + 61), &platform).is_err());
}

#[test]
fn missing_and_duplicate_tokens() {
    let platform = TestPlatform::new();
    let text = static_keys_policy().replace(
        "audience = \"orders\"",
        "audience = \"orders\"\ntoken_from = [\"bearer\", { cookie = \"session\" }]",
    );
    let policy = authenticator(&text);
    assert_401(run(&policy, &HeaderMap::new(), &platform), None);

    let mut headers = bearer(&token("hs256"));
    headers.insert(
        COOKIE,
        format!("a=b; session={}", token("hs256")).parse().unwrap(),
    );
    let error = run(&policy, &headers, &platform).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadRequest);

    let mut cookie_only = HeaderMap::new();
    cookie_only.insert(
        COOKIE,
        format!("session={}", token("hs256")).parse().unwrap(),
    );
    assert!(run(&policy, &cookie_only, &platform).is_ok());
}

#[test]
fn unset_secret_is_internal_error() {
    let mut platform = TestPlatform::new();
    platform.secrets.clear();
    let policy = authenticator(&static_keys_policy());
    let error = run(&policy, &bearer(&token("hs256")), &platform).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Internal);
    assert!(!error.detail().contains(SECRET_NAME), "{}", error.detail());
}

#[test]
fn jwks_rotation_fetches_new_keys() {
    let platform = TestPlatform::new();
    let policy = authenticator(&jwks_policy(""));
    platform.serve_jwks(&["rsa1"], None);
    assert!(run(&policy, &bearer(&token("rs256")), &platform).is_ok());
    assert!(run(&policy, &bearer(&token("rs256")), &platform).is_ok());
    assert_eq!(platform.upstream.fetches.get(), 1);

    // The issuer rotates; within the refetch interval the new kid is unknown.
    platform.serve_jwks(&["rsa2"], None);
    assert_401(
        run(&policy, &bearer(&token("rs256_rotated")), &platform),
        Some("invalid_token"),
    );
    platform.advance(31);
    assert!(run(&policy, &bearer(&token("rs256_rotated")), &platform).is_ok());
    assert_eq!(platform.upstream.fetches.get(), 2);
}

#[test]
fn unknown_kid_flood_fetches_once_per_interval() {
    let platform = TestPlatform::new();
    let policy = authenticator(&jwks_policy(""));
    platform.serve_jwks(&["rsa1"], None);
    for index in 0..200 {
        let token = unknown_kid_token(&format!("random-{index}"));
        assert_401(
            run(&policy, &bearer(&token), &platform),
            Some("invalid_token"),
        );
    }
    assert_eq!(platform.upstream.fetches.get(), 1);
    platform.advance(30);
    for index in 0..200 {
        let token = unknown_kid_token(&format!("again-{index}"));
        assert!(run(&policy, &bearer(&token), &platform).is_err());
    }
    assert_eq!(platform.upstream.fetches.get(), 2);
    // Known keys keep working throughout.
    assert!(run(&policy, &bearer(&token("rs256")), &platform).is_ok());
}

#[test]
fn jwks_down_without_keys_is_unavailable() {
    let platform = TestPlatform::new();
    let policy = authenticator(&jwks_policy(""));
    platform.endpoint_down();
    let error = run(&policy, &bearer(&token("rs256")), &platform).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    // Retried only after the interval, not on every request.
    assert!(run(&policy, &bearer(&token("rs256")), &platform).is_err());
    assert_eq!(platform.upstream.fetches.get(), 1);

    let mut bad_document = TestPlatform::new();
    bad_document.upstream.endpoint = RefCell::new(Some((200, "{}".to_owned(), None)));
    let error = run(&policy_fresh(), &bearer(&token("rs256")), &bad_document).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
}

fn policy_fresh() -> Authenticator {
    authenticator(&jwks_policy(""))
}

#[test]
fn stale_keys_used_within_grace() {
    let platform = TestPlatform::new();
    let policy = authenticator(&jwks_policy(", stale_grace = \"10m\""));
    platform.serve_jwks(&["rsa1"], Some("public, max-age=120"));
    assert!(run(&policy, &bearer(&token("rs256")), &platform).is_ok());

    platform.endpoint_down();
    platform.advance(121);
    assert!(run(&policy, &bearer(&token("rs256")), &platform).is_ok());
    assert_eq!(platform.upstream.fetches.get(), 2);
    // An unknown kid while the endpoint is down is the endpoint's fault: 503.
    let error = run(&policy, &bearer(&unknown_kid_token("new")), &platform).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);

    platform.advance(600);
    let error = run(&policy, &bearer(&token("rs256")), &platform).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
}

#[test]
fn max_age_clamped_to_bounds() {
    let platform = TestPlatform::new();
    let policy = authenticator(&jwks_policy(
        ", min_ttl = \"60s\", refetch_interval = \"1s\"",
    ));
    platform.serve_jwks(&["rsa1"], Some("max-age=5"));
    assert!(run(&policy, &bearer(&token("rs256")), &platform).is_ok());
    platform.advance(30);
    assert!(run(&policy, &bearer(&token("rs256")), &platform).is_ok());
    assert_eq!(
        platform.upstream.fetches.get(),
        1,
        "max-age=5 is raised to 60s"
    );
    platform.advance(31);
    assert!(run(&policy, &bearer(&token("rs256")), &platform).is_ok());
    assert_eq!(platform.upstream.fetches.get(), 2);
}

#[test]
fn jwks_never_supplies_hmac_keys() {
    let document = json!({ "keys": [{ "kty": "oct", "k": "c2VjcmV0", "alg": "HS256" }] });
    let result = jwks::parse_jwks(document.to_string().as_bytes(), &[keys::Alg::Rs256]);
    assert!(result.is_err());
}

const CONSUMERS: &str = r#"
    [consumers.acme]
    api_key_sha256 = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
    plan = "gold"
    groups = ["partners"]

    [consumers.globex]
    api_key_sha256 = ["fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9"]
"#;

#[test]
fn api_key_identifies_consumer() {
    let platform = TestPlatform::new();
    let policy = authenticator(&format!("{CONSUMERS}\n[policies.auth.api_key]\n"));
    let with_key = |key: &str| {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", key.parse().unwrap());
        headers
    };
    // SHA-256 of "foo" is the hash of acme.
    let authenticated = run(&policy, &with_key("foo"), &platform).unwrap();
    assert_eq!(authenticated.identity.consumer.as_deref(), Some("acme"));
    assert_eq!(authenticated.identity.groups, ["partners"]);
    assert_eq!(authenticated.identity.claims["plan"], "gold");
    assert_eq!(
        authenticated
            .remove_header
            .as_ref()
            .map(|name| name.as_str()),
        Some("x-api-key")
    );

    assert_401(
        run(&policy, &with_key("wrong"), &platform),
        Some("invalid_token"),
    );
    assert_401(run(&policy, &HeaderMap::new(), &platform), None);
}

#[test]
fn api_key_from_query_and_consumer_filter() {
    let text = format!(
        "{CONSUMERS}\n[policies.auth.api_key]\nkey_from = [{{ query = \"key\" }}]\nconsumers = [\"globex\"]\n"
    );
    let Authenticator::ApiKey(policy) = authenticator(&text) else {
        panic!("expected api_key")
    };
    let platform = TestPlatform::new();
    let run =
        |query: &str| block_on(policy.authenticate(&HeaderMap::new(), Some(query), &platform));
    // SHA-256 of "bar" is the hash of globex.
    assert!(run("a=1&key=bar").is_ok());
    assert!(run("key=foo").is_err());
    let twice = run("key=bar&key=bar").unwrap_err();
    assert_eq!(twice.kind(), ErrorKind::BadRequest);
}

/// SHA-256 of "stored-key", the key of the consumer the tests put in the store.
const STORED_KEY_SHA256: &str = "c1f8fdb114cdd1062d18dcd8b85962b9b1a551e15d48136fb68d69121622fe1c";

fn with_api_key(key: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", key.parse().unwrap());
    headers
}

fn store_consumer(platform: &TestPlatform, record: &str) {
    let store = platform.store.as_ref().unwrap();
    store.entries.borrow_mut().insert(
        format!("api-key:{STORED_KEY_SHA256}"),
        Bytes::copy_from_slice(record.as_bytes()),
    );
}

#[test]
fn api_key_found_in_key_value_store() {
    let platform = TestPlatform::new();
    store_consumer(
        &platform,
        r#"{"name": "initech", "plan": "free", "groups": ["beta"], "note": "ignored"}"#,
    );
    let policy = authenticator(&format!(
        "{CONSUMERS}\n[policies.auth.api_key]\nkey_value_prefix = \"api-key:\"\n"
    ));

    let authenticated = run(&policy, &with_api_key("stored-key"), &platform).unwrap();
    assert_eq!(authenticated.identity.consumer.as_deref(), Some("initech"));
    assert_eq!(authenticated.identity.subject.as_deref(), Some("initech"));
    assert_eq!(authenticated.identity.groups, ["beta"]);
    assert_eq!(authenticated.identity.claims["plan"], "free");

    // Keys of [consumers] are found without reading the store.
    let reads = platform.store.as_ref().unwrap().reads.get();
    let authenticated = run(&policy, &with_api_key("foo"), &platform).unwrap();
    assert_eq!(authenticated.identity.consumer.as_deref(), Some("acme"));
    assert_eq!(platform.store.as_ref().unwrap().reads.get(), reads);

    assert_401(
        run(&policy, &with_api_key("unknown"), &platform),
        Some("invalid_token"),
    );
}

#[test]
fn api_key_store_needs_no_consumers_table() {
    let platform = TestPlatform::new();
    store_consumer(&platform, r#"{"name": "initech"}"#);
    let policy = authenticator(
        "[policies.auth.api_key]\nkey_value_prefix = \"api-key:\"\nconsumers = [\"initech\"]\n",
    );
    let authenticated = run(&policy, &with_api_key("stored-key"), &platform).unwrap();
    assert_eq!(authenticated.identity.consumer.as_deref(), Some("initech"));
    assert!(authenticated.identity.claims.is_empty());

    store_consumer(&platform, r#"{"name": "umbrella"}"#);
    assert_401(
        run(&policy, &with_api_key("stored-key"), &platform),
        Some("invalid_token"),
    );
}

#[test]
fn api_key_store_failure_is_503() {
    let platform = TestPlatform::new();
    store_consumer(&platform, r#"{"name": "initech"}"#);
    platform.store.as_ref().unwrap().down.set(true);
    let policy = authenticator("[policies.auth.api_key]\nkey_value_prefix = \"api-key:\"\n");
    let error = run(&policy, &with_api_key("stored-key"), &platform).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert_eq!(error.error_source(), crate::ErrorSource::Platform);
    assert!(error.challenge().is_none());
}

#[test]
fn api_key_invalid_stored_record_is_500() {
    let platform = TestPlatform::new();
    let policy = authenticator("[policies.auth.api_key]\nkey_value_prefix = \"api-key:\"\n");
    for record in ["not json", r#"{"plan": "gold"}"#, r#"{"name": ""}"#] {
        store_consumer(&platform, record);
        let error = run(&policy, &with_api_key("stored-key"), &platform).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Internal, "{record}");
        assert!(!error.detail().contains("stored-key"), "{record}");
    }
}

#[test]
fn api_key_store_missing_on_platform_is_501() {
    let mut platform = TestPlatform::new();
    platform.store = None;
    let policy = authenticator("[policies.auth.api_key]\nkey_value_prefix = \"api-key:\"\n");
    let error = run(&policy, &with_api_key("stored-key"), &platform).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotImplemented);
}

#[test]
fn authorize_checks_scopes_roles_claims_groups() {
    let compiled = policies(
        r#"
        [policies.write.authorize]
        scopes = ["orders:write"]
        [policies.admin.authorize]
        roles = ["admin"]
        claims = { iss = "https://issuer.test" }
        [policies.partners.authorize]
        groups = ["partners"]
        "#,
    );
    let get = |name: &str| match &compiled[name] {
        crate::policy::CompiledPolicy::Authorize(policy) => policy.clone(),
        _ => panic!("not authorize"),
    };
    let mut identity = Identity {
        scopes: vec!["orders:read".into()],
        ..Identity::default()
    };
    let error = get("write").check(&identity, "Bearer").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Forbidden);
    assert_eq!(error.challenge().unwrap().error, Some("insufficient_scope"));
    identity.scopes.push("orders:write".into());
    assert!(get("write").check(&identity, "Bearer").is_ok());

    assert!(get("admin").check(&identity, "Bearer").is_err());
    identity
        .claims
        .insert("roles".into(), json!(["user", "admin"]));
    identity
        .claims
        .insert("iss".into(), json!("https://issuer.test"));
    assert!(get("admin").check(&identity, "Bearer").is_ok());

    assert!(get("partners").check(&identity, "ApiKey").is_err());
    identity.groups.push("partners".into());
    assert!(get("partners").check(&identity, "ApiKey").is_ok());
}

#[test]
fn identity_headers_replace_forgeries() {
    let mut headers = HeaderMap::new();
    headers.insert(SUBJECT_HEADER, "mallory".parse().unwrap());
    headers.insert(GROUPS_HEADER, "admins".parse().unwrap());
    strip_identity_headers(&mut headers);
    assert!(headers.is_empty());

    let authenticated = Authenticated {
        identity: Identity {
            subject: Some("alice".into()),
            scopes: vec!["a".into(), "b".into()],
            ..Identity::default()
        },
        scheme: "Bearer",
        identity_headers: true,
        remove_header: Some(AUTHORIZATION),
    };
    headers.insert(AUTHORIZATION, "Bearer x".parse().unwrap());
    authenticated.apply(&mut headers);
    assert_eq!(headers[SUBJECT_HEADER], "alice");
    assert_eq!(headers[SCOPES_HEADER], "a b");
    assert!(!headers.contains_key(AUTHORIZATION));
    assert!(!headers.contains_key(CONSUMER_HEADER));
}

#[test]
fn config_problems_reported_with_paths() {
    let keys = keys();
    let ec = toml_inline(&keys["ec"]["public"]);
    let text = format!(
        r#"
        [consumers.short]
        api_key_sha256 = "abc"

        [policies.empty.jwt]

        [policies.mismatch.jwt]
        keys = [
          {{ alg = "RS256", jwk = {ec} }},
          {{ alg = "RS256", secret = "S" }},
          {{ alg = "none", secret = "S" }},
          {{ alg = "HS256", jwk = {{ kty = "oct", k = "c2VjcmV0" }} }},
          {{ alg = "RS256", jwk = {{ kty = "RSA", n = "AQAB" }} }},
        ]
        audience = []
        jwks = {{ url = "ftp://x/jwks", algorithms = ["HS256"] }}

        [policies.keys.api_key]
        consumers = ["nobody"]

        [policies.long_prefix.api_key]
        key_value_prefix = "{long_prefix}"

        [policies.cache_prefix.api_key]
        key_value_prefix = "gatehouse-cache:keys:"
        "#,
        long_prefix = "p".repeat(300),
    );
    let errors = config_errors(&text);
    let expected = [
        "consumers.short.api_key_sha256: must be 64 hexadecimal digits",
        "policies.empty.jwt: has no verification keys",
        "policies.mismatch.jwt.keys[0].jwk: the key type does not fit RS256",
        "policies.mismatch.jwt.keys[1].secret: RS256 needs a public key",
        "policies.mismatch.jwt.keys[2].alg: unsupported algorithm \"none\"",
        "policies.mismatch.jwt.keys[3].jwk: HS256 keys are secrets",
        "policies.mismatch.jwt.keys[4].jwk: invalid JWK",
        "policies.mismatch.jwt.audience: is an empty list",
        "policies.mismatch.jwt.jwks.url: invalid JWKS URL",
        "policies.mismatch.jwt.jwks.algorithms[0]: HS256 is not accepted from a JWKS",
        "policies.keys.api_key.consumers[0]: consumer \"nobody\" is not defined",
        "policies.long_prefix.api_key.key_value_prefix: must be at most 256 bytes",
        "policies.cache_prefix.api_key.key_value_prefix: \"gatehouse-cache:keys:\" starts with",
    ];
    for prefix in expected {
        assert!(
            errors.iter().any(|error| error.starts_with(prefix)),
            "missing {prefix:?} in {errors:#?}"
        );
    }
    assert!(
        !errors.iter().any(|error| error.contains("c2VjcmV0")),
        "key material in {errors:#?}"
    );
}

#[test]
fn debug_output_names_secret_only() {
    let policy = authenticator(&static_keys_policy());
    let text = format!("{policy:?}");
    assert!(text.contains(SECRET_NAME), "{text}");
    let secret = keys()["hmac_secret"].as_str().unwrap().to_owned();
    assert!(!text.contains(&secret), "{text}");
}

fn hmac_policy(cache: &str) -> Authenticator {
    authenticator(&format!(
        r#"
        [policies.auth.jwt]
        keys = [{{ alg = "HS256", secret = "{SECRET_NAME}" }}]
        leeway = "0s"
        verified_cache = {cache}
        "#
    ))
}

#[test]
fn verified_token_skips_signature_check_until_max_age() {
    let mut platform = TestPlatform::new();
    let policy = hmac_policy(r#"{ max_tokens = 100, max_age = "30s" }"#);
    let token = hs256(json!({ "sub": "alice" }));
    assert!(run(&policy, &bearer(&token), &platform).is_ok());
    // With the secret changed, only the cache can still accept the token.
    platform
        .secrets
        .insert(SECRET_NAME.to_owned(), "another secret".to_owned());
    let identity = run(&policy, &bearer(&token), &platform).expect("served from the cache");
    assert_eq!(identity.identity.subject.as_deref(), Some("alice"));
    platform.advance(30);
    let error = run(&policy, &bearer(&token), &platform).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unauthorized);
}

#[test]
fn verified_cache_off_checks_every_signature() {
    let mut platform = TestPlatform::new();
    let policy = hmac_policy("{ max_tokens = 0 }");
    let token = hs256(json!({ "sub": "alice" }));
    assert!(run(&policy, &bearer(&token), &platform).is_ok());
    platform
        .secrets
        .insert(SECRET_NAME.to_owned(), "another secret".to_owned());
    assert!(run(&policy, &bearer(&token), &platform).is_err());
}

#[test]
fn cached_token_is_not_accepted_past_exp() {
    let platform = TestPlatform::new();
    let policy = hmac_policy(r#"{ max_age = "1h" }"#);
    let now_secs = platform.clock.unix_millis() / 1000;
    let token = hs256(json!({ "sub": "alice", "exp": now_secs + 10 }));
    assert!(run(&policy, &bearer(&token), &platform).is_ok());
    platform.advance(9);
    assert!(run(&policy, &bearer(&token), &platform).is_ok());
    platform.advance(1);
    let error = run(&policy, &bearer(&token), &platform).unwrap_err();
    assert!(error.detail().contains("expired"), "{}", error.detail());
}

#[test]
fn cached_token_claims_are_checked_again() {
    let platform = TestPlatform::new();
    let policy = hmac_policy(r#"{ max_age = "1h" }"#);
    let now_secs = platform.clock.unix_millis() / 1000;
    // Not valid yet: rejected, so never cached, and accepted once its time comes.
    let token = hs256(json!({ "sub": "alice", "nbf": now_secs + 5 }));
    assert!(run(&policy, &bearer(&token), &platform).is_err());
    platform.advance(5);
    assert!(run(&policy, &bearer(&token), &platform).is_ok());
}

#[test]
fn joined_authorization_values_count_as_two_tokens() {
    let platform = TestPlatform::new();
    let policy = authenticator(&static_keys_policy());
    let token = token("hs256");
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        format!("Bearer {token}, Bearer {token}").parse().unwrap(),
    );
    let error = run(&policy, &headers, &platform).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadRequest, "{}", error.detail());
}

#[test]
fn joined_api_key_values_count_as_two_keys() {
    let platform = TestPlatform::new();
    let policy = authenticator(
        r#"
        [consumers.acme]
        api_key_sha256 = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"

        [policies.auth.api_key]
        "#,
    );
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", "foo, foo".parse().unwrap());
    let error = run(&policy, &headers, &platform).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadRequest, "{}", error.detail());
    headers.insert("x-api-key", "foo".parse().unwrap());
    assert!(run(&policy, &headers, &platform).is_ok());
}
