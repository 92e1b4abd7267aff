//! Batched Redis decisions against a real `redis-server`, started on a free loopback
//! port and stopped by its PID. Concurrent decisions on one connection go out as
//! multi-key script calls and stay exact, and a key that fails does not fail the rest.
//!
//! The tests skip with a message when `redis-server` is not on `PATH`, and fail
//! instead when `GATEHOUSE_REQUIRE_REDIS=1`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::redis_server::RedisServer;
use gatehouse::counters::NativeCounters;
use gatehouse_core::config::{ConfigDuration, RedisStoreConfig, StoreConfig, StoreMode};
use gatehouse_core::limit::redis_script::{DECIDE_SCRIPT, script_key};
use gatehouse_core::limit::{GcraLimit, Limit};
use gatehouse_core::platform::{CounterRequest, Counters};

/// Builds the store `shared` with one connection, so every decision shares one lane.
fn one_connection_store(url: &str) -> Arc<NativeCounters> {
    let store = RedisStoreConfig {
        url: url.to_owned(),
        password: None,
        username: None,
        pool_size: 1,
        // Far above any round trip here, so a loaded machine never turns an admission
        // into an error.
        timeout: ConfigDuration::from_millis(10_000),
        async_max_in_flight: 8,
        error_log_interval: ConfigDuration::from_millis(10_000),
    };
    let stores = BTreeMap::from([("shared".to_owned(), StoreConfig::Redis(store))]);
    Arc::new(NativeCounters::from_config(&stores).expect("store config"))
}

/// Returns a GCRA limit of `limit` requests with a burst of `limit` that refills one
/// request per 100 hours, so exactly `limit` pass during a test.
fn no_refill(limit: u64) -> Limit {
    let period = Duration::from_secs(100 * 3_600 * limit);
    Limit::Gcra(GcraLimit::new(limit, period, limit).expect("valid limit"))
}

/// Decides each key of `keys` under `limit` in `strict` mode, all at once, and
/// returns the results in key order.
async fn decide_all(
    counters: &Arc<NativeCounters>,
    keys: Vec<String>,
    limit: Limit,
) -> Vec<Result<bool, String>> {
    let tasks: Vec<_> = keys
        .into_iter()
        .map(|key| {
            let counters = Arc::clone(counters);
            tokio::spawn(async move {
                let request = CounterRequest {
                    store: "shared",
                    key: &key,
                    limit: &limit,
                    cost: 1,
                    mode: StoreMode::Strict,
                    timeout: Duration::from_secs(10),
                    now_unix_micros: 0,
                };
                counters
                    .decide(&request)
                    .await
                    .map(|decision| decision.allowed)
                    .map_err(|error| format!("{error:?}"))
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("decision task"));
    }
    results
}

/// Returns how many times the server ran `EVALSHA`, from `INFO commandstats`.
fn evalsha_calls(connection: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(connection)
        .expect("INFO commandstats");
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().expect("a call count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_decisions_batched_and_exact() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let counters = one_connection_store(&redis.url());
    let keys = vec!["one-client".to_owned(); 300];

    let results = decide_all(&counters, keys, no_refill(40)).await;

    let allowed = results.iter().filter(|result| **result == Ok(true)).count();
    let rejected = results
        .iter()
        .filter(|result| **result == Ok(false))
        .count();
    assert_eq!(allowed, 40, "{results:?}");
    assert_eq!(rejected, 260, "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_share_script_calls() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let counters = one_connection_store(&redis.url());
    let keys: Vec<String> = (0..200).map(|index| format!("client-{index}")).collect();

    let results = decide_all(&counters, keys, no_refill(5)).await;

    assert!(
        results.iter().all(|result| *result == Ok(true)),
        "{results:?}"
    );
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut connection = client.get_connection().expect("connect");
    let calls = evalsha_calls(&mut connection);
    // One call per decision, plus the first one, rejected with NOSCRIPT, would be 201.
    assert!(calls < 100, "{calls} EVALSHA calls for 200 decisions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_key_spares_its_batch() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let limit = no_refill(1_000);
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut connection = client.get_connection().expect("connect");
    // A list where the script expects a string: every decision on this key fails with
    // WRONGTYPE.
    let _: i64 = redis::cmd("LPUSH")
        .arg(script_key("broken", &limit))
        .arg("not a counter")
        .query(&mut connection)
        .expect("LPUSH");
    let counters = one_connection_store(&redis.url());
    let keys: Vec<String> = (0..200)
        .map(|index| {
            if index % 4 == 0 {
                "broken".to_owned()
            } else {
                format!("client-{index}")
            }
        })
        .collect();

    let results = decide_all(&counters, keys, limit).await;

    for (index, result) in results.iter().enumerate() {
        if index % 4 == 0 {
            let error = result.as_ref().expect_err("a decision on the list key");
            assert!(error.contains("WRONGTYPE"), "decision {index}: {error}");
        } else {
            assert_eq!(result, &Ok(true), "decision {index}");
        }
    }
    let calls = evalsha_calls(&mut connection);
    assert!(calls < 100, "{calls} EVALSHA calls for 200 decisions");
}

#[test]
fn script_replies_per_key() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut connection = client.get_connection().expect("connect");
    let _: i64 = redis::cmd("LPUSH")
        .arg("list")
        .arg("x")
        .query(&mut connection)
        .expect("LPUSH");
    let gcra = ["gcra", "1", "1000000", "5000000", "5"];
    let mut batch = redis::cmd("EVAL");
    batch
        .arg(DECIDE_SCRIPT)
        .arg(4)
        .arg(&["first", "list", "window-key", "first"][..])
        .arg(&gcra[..])
        .arg(&gcra[..])
        .arg(&["window", "1", "3", "1000000", ""][..])
        .arg(&["sideways", "1", "3", "1000000", ""][..]);
    // `req_command` keeps errors nested in the reply, where `query` would raise them.
    let reply = redis::ConnectionLike::req_command(&mut connection, &batch)
        .expect("one reply for the whole batch");

    let redis::Value::Array(items) = reply else {
        panic!("expected an array, got {reply:?}");
    };
    assert_eq!(items.len(), 4, "{items:?}");
    let numbers = |value: &redis::Value| -> Vec<i64> {
        let redis::Value::Array(fields) = value else {
            panic!("expected a decision, got {value:?}");
        };
        fields
            .iter()
            .map(|field| match field {
                redis::Value::Int(number) => *number,
                other => panic!("expected an integer, got {other:?}"),
            })
            .collect()
    };
    assert_eq!(numbers(&items[0])[..3], [1, 4, 0]);
    assert!(
        matches!(&items[1], redis::Value::ServerError(error)
            if error.to_string().contains("WRONGTYPE")),
        "{:?}",
        items[1]
    );
    assert_eq!(numbers(&items[2])[..3], [1, 2, 0]);
    assert!(
        matches!(&items[3], redis::Value::ServerError(error)
            if error.to_string().contains("unknown algorithm sideways")),
        "{:?}",
        items[3]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_server_fails_queued_decisions() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let counters = one_connection_store(&redis.url());
    let first = decide_all(&counters, vec!["warm-up".to_owned()], no_refill(5)).await;
    assert_eq!(first, vec![Ok(true)], "the connection opens");
    redis.kill();
    let keys: Vec<String> = (0..100).map(|index| format!("client-{index}")).collect();

    let started = std::time::Instant::now();
    let results = decide_all(&counters, keys, no_refill(5)).await;

    // Every decision, queued or sent, fails instead of waiting for the 10 s timeout.
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    for (index, result) in results.iter().enumerate() {
        assert!(result.is_err(), "decision {index}: {result:?}");
    }
}
