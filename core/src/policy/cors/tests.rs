use super::*;
use crate::config::ConfigDuration;

fn policy(configure: impl FnOnce(&mut CorsConfig)) -> CorsPolicy {
    let mut config = CorsConfig {
        allow_origins: vec![
            "https://app.example.com".into(),
            "https://*.example.org".into(),
        ],
        allow_methods: vec!["GET".into(), "put".into()],
        allow_headers: vec!["X-Api-Version".into()],
        expose_headers: vec!["x-total-count".into()],
        allow_credentials: true,
        max_age: Some(ConfigDuration::from_millis(600_000)),
    };
    configure(&mut config);
    let mut errors = Vec::new();
    let compiled = CorsPolicy::compile(&config, "policies.web.cors", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    compiled
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    map
}

#[test]
fn preflight_allowed_origin_gets_headers() {
    let request = headers(&[
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "PUT"),
        (
            "access-control-request-headers",
            "x-api-version, content-type",
        ),
    ]);
    let answer = policy(|_| {}).preflight(&request, &Method::PUT).unwrap();
    assert_eq!(
        answer[ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.com"
    );
    assert_eq!(answer[ACCESS_CONTROL_ALLOW_METHODS], "GET, PUT");
    assert_eq!(answer[ACCESS_CONTROL_ALLOW_HEADERS], "x-api-version");
    assert_eq!(answer[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    assert_eq!(answer[ACCESS_CONTROL_MAX_AGE], "600");
    assert!(answer[VARY].to_str().unwrap().starts_with("Origin"));
}

#[test]
fn lookalike_origins_rejected() {
    let policy = policy(|_| {});
    for origin in [
        "https://evil-example.com",
        "https://app.example.com.evil.test",
        "http://app.example.com",
        "https://example.org",
        "https://app.example.com:8443",
        "null",
    ] {
        let request = headers(&[("origin", origin)]);
        let error = policy.preflight(&request, &Method::GET).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Forbidden, "{origin}");
        assert!(
            error.detail().contains("origin"),
            "{origin}: {}",
            error.detail()
        );
    }
}

#[test]
fn subdomain_pattern_matches_nested_labels() {
    let policy = policy(|_| {});
    for origin in [
        "https://a.example.org",
        "https://a.b.example.org",
        "HTTPS://A.EXAMPLE.ORG",
    ] {
        let request = headers(&[("origin", origin)]);
        assert!(policy.preflight(&request, &Method::GET).is_ok(), "{origin}");
    }
}

#[test]
fn preflight_rejects_method_and_header() {
    let policy = policy(|_| {});
    let origin = ("origin", "https://app.example.com");
    let error = policy
        .preflight(&headers(&[origin]), &Method::DELETE)
        .unwrap_err();
    assert!(error.detail().contains("method"), "{}", error.detail());
    let request = headers(&[origin, ("access-control-request-headers", "x-secret")]);
    let error = policy.preflight(&request, &Method::GET).unwrap_err();
    assert!(error.detail().contains("header"), "{}", error.detail());
}

#[test]
fn actual_response_gets_origin_and_vary() {
    let policy = policy(|_| {});
    let mut response = HeaderMap::new();
    policy.apply(
        Some(&"https://app.example.com".parse().unwrap()),
        &mut response,
    );
    assert_eq!(
        response[ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.com"
    );
    assert_eq!(response[ACCESS_CONTROL_EXPOSE_HEADERS], "x-total-count");
    assert_eq!(response[VARY], "Origin");

    let mut response = HeaderMap::new();
    policy.apply(
        Some(&"https://evil-example.com".parse().unwrap()),
        &mut response,
    );
    assert!(!response.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
    assert_eq!(response[VARY], "Origin");
}

#[test]
fn wildcard_without_credentials_answers_star() {
    let policy = policy(|config| {
        config.allow_origins = vec!["*".into()];
        config.allow_credentials = false;
    });
    let mut response = HeaderMap::new();
    policy.apply(Some(&"https://anyone.test".parse().unwrap()), &mut response);
    assert_eq!(response[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert!(!response.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
}

#[test]
fn wildcard_with_credentials_is_config_error() {
    let config = CorsConfig {
        allow_origins: vec!["*".into()],
        allow_credentials: true,
        ..CorsConfig::default()
    };
    let mut errors = Vec::new();
    CorsPolicy::compile(&config, "policies.web.cors", &mut errors);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "policies.web.cors.allow_origins");
}

#[test]
fn invalid_origins_reported() {
    let config = CorsConfig {
        allow_origins: vec![
            "app.example.com".into(),
            "https://a.*.example.com".into(),
            "https://x.test/path".into(),
        ],
        ..CorsConfig::default()
    };
    let mut errors = Vec::new();
    CorsPolicy::compile(&config, "p", &mut errors);
    let paths: Vec<&str> = errors.iter().map(|error| error.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "p.allow_origins[0]",
            "p.allow_origins[1]",
            "p.allow_origins[2]"
        ]
    );
}

#[test]
fn preflight_method_detected() {
    let preflight = Request::options("/x")
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "PUT")
        .body(())
        .unwrap();
    assert_eq!(CorsPolicy::preflight_method(&preflight), Some(Method::PUT));
    let plain_options = Request::options("/x").body(()).unwrap();
    assert_eq!(CorsPolicy::preflight_method(&plain_options), None);
}
