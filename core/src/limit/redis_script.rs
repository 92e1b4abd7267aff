//! The Lua script that Redis counter stores run for each decision, with the key and
//! arguments it takes and the reply it returns, so every runtime that talks to Redis
//! (the native runtime and the Spin component) sends the same call.
//!
//! The script reads the server's clock with `TIME` and applies the algorithms of this
//! module in integer microseconds; see the header of [`DECIDE_SCRIPT`] for the
//! argument layout.

use std::time::Duration;

use super::{CalendarPeriod, Decision, Limit};

/// The text of `decide.lua`: decides one request atomically at the Redis server's
/// clock and returns `{allowed, remaining, retry_after_us, reset_after_us}`.
pub const DECIDE_SCRIPT: &str = include_str!("decide.lua");

/// One argument of the script (`ARGV`), as text or as an integer that Redis receives
/// in decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptArgument {
    /// A name, such as the algorithm.
    Text(&'static str),
    /// A count or a number of microseconds.
    Integer(u64),
}

/// Returns the Redis key of the counter `key` under `limit`. The algorithm is part of
/// the key, so a policy whose algorithm changed in a new config never reads a value of
/// another shape.
pub fn script_key(key: &str, limit: &Limit) -> String {
    let algorithm = match limit {
        Limit::Gcra(_) => "gcra",
        Limit::Window(_) => "window",
        Limit::Calendar(_) => "calendar",
    };
    format!("gatehouse:{algorithm}:{key}")
}

/// Returns the script's `ARGV` for a request of `cost` units under `limit`.
pub fn script_arguments(limit: &Limit, cost: u64) -> Vec<ScriptArgument> {
    use ScriptArgument::{Integer, Text};
    match limit {
        Limit::Gcra(gcra) => vec![
            Text("gcra"),
            Integer(cost),
            Integer(gcra.emission_micros()),
            Integer(gcra.tolerance_micros()),
            Integer(gcra.burst()),
        ],
        Limit::Window(window) => vec![
            Text("window"),
            Integer(cost),
            Integer(window.limit()),
            Integer(window.window_micros()),
        ],
        Limit::Calendar(quota) => {
            let period = match quota.period() {
                CalendarPeriod::Minute => "minute",
                CalendarPeriod::Hour => "hour",
                CalendarPeriod::Day => "day",
                CalendarPeriod::Month => "month",
            };
            vec![
                Text("calendar"),
                Integer(cost),
                Integer(quota.limit()),
                Text(period),
            ]
        }
    }
}

/// Reads the script's reply, four integers, as a decision; `None` for any other
/// shape. Negative numbers, which the script never returns, count as zero.
pub fn decision_from_reply(reply: &[i64]) -> Option<Decision> {
    let [allowed, remaining, retry_after, reset_after] = *reply else {
        return None;
    };
    let micros = |value: i64| Duration::from_micros(u64::try_from(value).unwrap_or(0));
    Some(Decision {
        allowed: allowed == 1,
        remaining: u64::try_from(remaining).unwrap_or(0),
        retry_after: micros(retry_after),
        reset_after: micros(reset_after),
    })
}

/// Returns `url` (`redis://[USER@]HOST...`, checked to carry no password) with
/// `username` and `password` as its user info, percent-encoded. A user name in the
/// URL is kept when `username` is not set.
pub fn url_with_credentials(
    url: &str,
    username: Option<&str>,
    password: &str,
) -> Result<String, String> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| format!("the url {url:?} does not start with redis://"))?;
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (url_user, host_and_path) = match rest[..authority_end].rsplit_once('@') {
        Some((user, _)) => (Some(user), &rest[user.len() + 1..]),
        None => (None, rest),
    };
    let user = match username {
        Some(username) => percent_encode(username),
        None => url_user.unwrap_or_default().to_owned(),
    };
    Ok(format!(
        "redis://{user}:{}@{host_and_path}",
        percent_encode(password)
    ))
}

/// Percent-encodes every byte but the unreserved characters of RFC 3986, so the value
/// is safe inside a URL's user info.
fn percent_encode(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::{CalendarQuota, GcraLimit, WindowLimit};

    #[test]
    fn key_names_algorithm() {
        let gcra = Limit::Gcra(GcraLimit::new(5, Duration::from_secs(10), 3).unwrap());
        let window = Limit::Window(WindowLimit::new(4, Duration::from_secs(10)).unwrap());
        assert_eq!(script_key("p:a", &gcra), "gatehouse:gcra:p:a");
        assert_eq!(script_key("p:a", &window), "gatehouse:window:p:a");
    }

    #[test]
    fn arguments_follow_script_layout() {
        let gcra = Limit::Gcra(GcraLimit::new(5, Duration::from_secs(10), 3).unwrap());
        let arguments = script_arguments(&gcra, 2);
        assert_eq!(arguments[0], ScriptArgument::Text("gcra"));
        assert_eq!(arguments[1], ScriptArgument::Integer(2));
        assert_eq!(arguments[2], ScriptArgument::Integer(2_000_000));
        assert_eq!(arguments.len(), 5);

        let quota = Limit::Calendar(CalendarQuota::new(7, CalendarPeriod::Month).unwrap());
        assert_eq!(
            script_arguments(&quota, 1),
            vec![
                ScriptArgument::Text("calendar"),
                ScriptArgument::Integer(1),
                ScriptArgument::Integer(7),
                ScriptArgument::Text("month"),
            ]
        );
    }

    #[test]
    fn reply_of_other_shape_rejected() {
        assert_eq!(decision_from_reply(&[1, 2, 3]), None);
        let decision = decision_from_reply(&[0, 3, 1_500, -1]).unwrap();
        assert!(!decision.allowed);
        assert_eq!(decision.remaining, 3);
        assert_eq!(decision.retry_after, Duration::from_micros(1_500));
        assert_eq!(decision.reset_after, Duration::ZERO);
    }

    #[test]
    fn credentials_join_url() {
        let address = url_with_credentials("redis://10.0.0.5:6379/2", None, "p@ss:w/rd");
        assert_eq!(address.unwrap(), "redis://:p%40ss%3Aw%2Frd@10.0.0.5:6379/2");
    }

    #[test]
    fn username_replaces_url_user() {
        let address = url_with_credentials("redis://old@cache:6379", Some("app"), "secret");
        assert_eq!(address.unwrap(), "redis://app:secret@cache:6379");
        let kept = url_with_credentials("redis://old@cache:6379", None, "secret");
        assert_eq!(kept.unwrap(), "redis://old:secret@cache:6379");
    }
}
