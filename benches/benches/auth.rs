//! Cost of authentication per request.
//!
//! - `jwt_signature`: the signature check alone, with `jwt-compact`, for HS256, RS256
//!   and ES256.
//! - `jwt_request`: a whole request through the pipeline with a `jwt` policy, with the
//!   cache of verified tokens off (every request checks the signature) and on (a
//!   repeated token skips it).
//! - `plain_request`: the same request on a route without policies, the baseline.
//! - `api_key_request`: a request with an API key among 100,000 consumers.
//!
//! The policy chain's own cost is `jwt_request/*/uncached` minus `plain_request` minus
//! the matching `jwt_signature`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_benches::platform::{BenchPlatform, run};
use gatehouse_core::Gateway;
use gatehouse_core::body::LocalBody;
use gatehouse_core::config::Format;
use http::{Request, StatusCode};
use jwt_compact::alg::{Es256, Hs256, Hs256Key, Rsa};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{Algorithm, AlgorithmExt, UntrustedToken};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

const KEYS: &str = include_str!("../../core/src/auth/testdata/keys.json");
const TOKENS: &str = include_str!("../../core/src/auth/testdata/tokens.json");
const SECRET_NAME: &str = "JWT_SECRET";
const ALGORITHMS: [&str; 3] = ["hs256", "rs256", "es256"];

type Claims = Map<String, Value>;

fn keys() -> Value {
    serde_json::from_str(KEYS).expect("test keys are JSON")
}

fn token(name: &str) -> String {
    let tokens: Value = serde_json::from_str(TOKENS).expect("test tokens are JSON");
    tokens[name].as_str().expect("token is a string").to_owned()
}

fn public_jwk(name: &str) -> JsonWebKey<'static> {
    serde_json::from_value(keys()[name]["public"].clone()).expect("public key is a JWK")
}

/// Writes a flat JSON object of strings as a TOML inline table.
fn toml_inline(object: &Value) -> String {
    let fields: Vec<String> = object
        .as_object()
        .expect("a JSON object")
        .iter()
        .map(|(key, value)| format!("{key} = {value}"))
        .collect();
    format!("{{ {} }}", fields.join(", "))
}

fn validate<A: Algorithm>(algorithm: &A, key: &A::VerifyingKey, token: &UntrustedToken<'_>) {
    algorithm
        .validator::<Claims>(key)
        .validate(token)
        .expect("the test token is valid");
}

fn jwt_signature(c: &mut Criterion) {
    let mut group = c.benchmark_group("jwt_signature");
    let secret = keys()["hmac_secret"].as_str().expect("secret").to_owned();
    let hmac = Hs256Key::new(secret.as_bytes());
    let hs256 = token("hs256");
    let hs256 = UntrustedToken::new(&hs256).expect("token");
    group.bench_function("hs256", |b| {
        b.iter(|| validate(&Hs256, &hmac, black_box(&hs256)))
    });

    let rsa = jwt_compact::alg::RsaPublicKey::try_from(&public_jwk("rsa1")).expect("RSA key");
    let rs256 = token("rs256");
    let rs256 = UntrustedToken::new(&rs256).expect("token");
    group.bench_function("rs256", |b| {
        b.iter(|| validate(&Rsa::rs256(), &rsa, black_box(&rs256)))
    });

    let ec = <Es256 as Algorithm>::VerifyingKey::try_from(&public_jwk("ec")).expect("EC key");
    let es256 = token("es256");
    let es256 = UntrustedToken::new(&es256).expect("token");
    group.bench_function("es256", |b| {
        b.iter(|| validate(&Es256, &ec, black_box(&es256)))
    });
    group.finish();
}

/// A gateway with one route behind a `jwt` policy over the test keys, and one route
/// without policies.
fn jwt_gateway(max_tokens: usize) -> Gateway {
    let keys = keys();
    let text = format!(
        r#"
        [upstreams.backend]
        endpoints = [{{ address = "127.0.0.1:9" }}]

        [policies.auth.jwt]
        issuer = "https://issuer.test"
        audience = "orders"
        required_claims = ["sub", "exp"]
        verified_cache = {{ max_tokens = {max_tokens} }}
        keys = [
          {{ alg = "HS256", secret = "{SECRET_NAME}" }},
          {{ kid = "rsa-1", alg = "RS256", jwk = {rsa} }},
          {{ kid = "ec-1", alg = "ES256", jwk = {ec} }},
        ]

        [[routes]]
        match = {{ path_prefix = "/orders" }}
        upstream = "backend"
        policies = ["auth"]

        [[routes]]
        match = {{ path_prefix = "/open" }}
        upstream = "backend"
        "#,
        rsa = toml_inline(&keys["rsa1"]["public"]),
        ec = toml_inline(&keys["ec"]["public"]),
    );
    Gateway::from_text(&text, Format::Toml).expect("benchmark config is valid")
}

fn request(path: &str, header: Option<(&str, &str)>) -> Request<LocalBody> {
    let mut builder = Request::get(format!("http://api.test{path}"));
    if let Some((name, value)) = header {
        builder = builder.header(name, value);
    }
    builder
        .body(LocalBody::from(bytes::Bytes::new()))
        .expect("valid request")
}

fn jwt_request(c: &mut Criterion) {
    let secret = keys()["hmac_secret"].as_str().expect("secret").to_owned();
    let platform = BenchPlatform::new(&[(SECRET_NAME, &secret)]);
    let mut group = c.benchmark_group("jwt_request");
    for (cache, max_tokens) in [("uncached", 0), ("cached", 10_000)] {
        let gateway = jwt_gateway(max_tokens);
        for name in ALGORITHMS {
            let authorization = format!("Bearer {}", token(name));
            let send = || {
                run(
                    &gateway,
                    &platform,
                    request("/orders/1", Some(("authorization", &authorization))),
                )
            };
            assert_eq!(send(), StatusCode::OK, "{name} token must be accepted");
            group.bench_function(format!("{name}/{cache}"), |b| b.iter(|| black_box(send())));
        }
    }
    group.finish();

    let gateway = jwt_gateway(0);
    let send = || run(&gateway, &platform, request("/open/1", None));
    assert_eq!(send(), StatusCode::OK);
    c.bench_function("plain_request", |b| b.iter(|| black_box(send())));
}

fn api_key_request(c: &mut Criterion) {
    const CONSUMERS: usize = 100_000;
    let mut text = String::from(
        r#"
        [upstreams.backend]
        endpoints = [{ address = "127.0.0.1:9" }]

        [policies.keys.api_key]

        [[routes]]
        upstream = "backend"
        policies = ["keys"]
        "#,
    );
    for index in 0..CONSUMERS {
        let digest = Sha256::digest(format!("key-{index}").as_bytes());
        let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        text.push_str(&format!(
            "\n[consumers.consumer-{index}]\napi_key_sha256 = \"{hex}\"\n"
        ));
    }
    let gateway = Gateway::from_text(&text, Format::Toml).expect("benchmark config is valid");
    let platform = BenchPlatform::new(&[]);
    let key = format!("key-{}", CONSUMERS / 2);
    let send = |key: &str| run(&gateway, &platform, request("/", Some(("x-api-key", key))));
    assert_eq!(send(&key), StatusCode::OK);
    assert_eq!(send("not-a-key"), StatusCode::UNAUTHORIZED);
    let mut group = c.benchmark_group("api_key_request");
    group.bench_function("known_100k", |b| b.iter(|| black_box(send(&key))));
    group.bench_function("unknown_100k", |b| b.iter(|| black_box(send("not-a-key"))));
    group.finish();
}

criterion_group!(benches, jwt_signature, jwt_request, api_key_request);
criterion_main!(benches);
