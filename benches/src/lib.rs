//! Builders shared by the benchmarks: route sets and endpoint lists of a given size.

use gatehouse_core::config::{MatchConfig, RouteConfig};

/// Builds `count` routes spread over 50 hosts, a third each exact paths, path
/// templates and path prefixes, so lookups exercise every part of the table.
pub fn routes(count: usize) -> Vec<RouteConfig> {
    (0..count)
        .map(|index| {
            let host = format!("svc{}.example.com", index % 50);
            let mut matcher = MatchConfig {
                hosts: vec![host],
                ..MatchConfig::default()
            };
            match index % 3 {
                0 => matcher.path = Some(format!("/v1/resource{index}/items")),
                1 => matcher.path_template = Some(format!("/v1/resource{index}/{{id}}/detail")),
                _ => matcher.path_prefix = Some(format!("/v1/resource{index}")),
            }
            RouteConfig {
                name: Some(format!("route-{index}")),
                matcher,
                upstream: "backend".to_owned(),
                dispatch: Default::default(),
                aggregate: None,
                strip_prefix: None,
                rewrite: None,
                policies: Vec::new(),
                timeouts: None,
                grpc_web: false,
                websocket: None,
            }
        })
        .collect()
}

/// Returns a host and path that the route at `index` of [`routes`] matches.
pub fn request_for(index: usize) -> (String, String) {
    let host = format!("svc{}.example.com", index % 50);
    let path = match index % 3 {
        0 => format!("/v1/resource{index}/items"),
        1 => format!("/v1/resource{index}/42/detail"),
        _ => format!("/v1/resource{index}/deeper/path"),
    };
    (host, path)
}

/// Builds `count` endpoint ids with weights 1 to 4.
pub fn endpoints(count: usize) -> Vec<(String, u32)> {
    (0..count)
        .map(|index| {
            (
                format!("10.0.{}.{}:8080", index / 250, index % 250 + 1),
                (index % 4) as u32 + 1,
            )
        })
        .collect()
}

pub mod platform;
