//! Redaction of secrets from the config before the admin listener shows it.
//!
//! The rules are generic rather than a list of today's policy fields, so that policy
//! types added later are covered without changes here:
//! - a table written as `{ secret = "..." }` is replaced as a whole;
//! - the value of any key whose name contains `secret`, `password`, `token` or
//!   `authorization`, or the word `key`, is replaced, unless that value is a table, in
//!   which case the rules apply inside it.

use serde_json::Value;

/// The text that replaces a redacted value.
pub const REDACTED: &str = "[redacted]";

/// Parts of a key name, ignoring case, that mark its value as a secret wherever they
/// appear, so `client_secret`, `clientSecret` and `X-Auth-Token` match.
const SENSITIVE_PARTS: &[&str] = &[
    "secret",
    "password",
    "passwd",
    "passphrase",
    "token",
    "credential",
    "apikey",
    "privatekey",
    "authorization",
];

/// Words that mark a key as a secret only as a whole word, because as parts of longer
/// words they are common: `X-Api-Key` and `signing_keys` match, `keyspace` does not.
/// Words are split at every character that is not a letter or digit.
const SENSITIVE_WORDS: &[&str] = &["key", "keys", "cookie", "signature"];

/// Replaces every secret in `value` with [`REDACTED`], in place.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.len() == 1 && map.contains_key("secret") {
                *value = Value::String(REDACTED.to_owned());
                return;
            }
            for (key, child) in map.iter_mut() {
                if is_sensitive(key) && !child.is_object() {
                    if !child.is_null() {
                        *child = Value::String(REDACTED.to_owned());
                    }
                } else {
                    redact(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

fn is_sensitive(key: &str) -> bool {
    let lowercase = key.to_ascii_lowercase();
    SENSITIVE_PARTS.iter().any(|part| lowercase.contains(part))
        || lowercase
            .split(|character: char| !character.is_ascii_alphanumeric())
            .any(|word| SENSITIVE_WORDS.contains(&word))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secret_tables_and_sensitive_keys_are_redacted() {
        let mut value = json!({
            "policies": {
                "auth": { "jwt": {
                    "hmac_key": { "secret": "JWT_KEY" },
                    "issuer": "https://issuer.example",
                    "client_secret": "s3cr3t",
                    "keys": [{ "kid": "a", "k": "AAAA" }],
                }},
                "tag": { "transform": { "request": { "set": {
                    "x-api-key": "abc123",
                    "Authorization": "Bearer xyz",
                    "x-gateway": "local",
                }}}},
            },
            "upstreams": { "token-service": { "endpoints": [{ "address": "127.0.0.1:9001" }] } },
            "server": { "max_body_bytes": 1024, "password": null },
        });
        redact(&mut value);
        let jwt = &value["policies"]["auth"]["jwt"];
        assert_eq!(jwt["hmac_key"], REDACTED);
        assert_eq!(jwt["client_secret"], REDACTED);
        assert_eq!(jwt["keys"], REDACTED);
        assert_eq!(jwt["issuer"], "https://issuer.example");
        let set = &value["policies"]["tag"]["transform"]["request"]["set"];
        assert_eq!(set["x-api-key"], REDACTED);
        assert_eq!(set["Authorization"], REDACTED);
        assert_eq!(set["x-gateway"], "local");
        // A table under a sensitive name keeps its structure.
        assert_eq!(
            value["upstreams"]["token-service"]["endpoints"][0]["address"],
            "127.0.0.1:9001"
        );
        assert_eq!(value["server"]["max_body_bytes"], 1024);
        assert_eq!(value["server"]["password"], Value::Null);
    }

    #[test]
    fn key_words_are_whole_words() {
        assert!(is_sensitive("api_key"));
        assert!(is_sensitive("X-Api-Key"));
        assert!(is_sensitive("privateKey"));
        assert!(is_sensitive("clientSecret"));
        assert!(is_sensitive("X-Auth-Token"));
        assert!(!is_sensitive("max_age"));
        assert!(!is_sensitive("keyspace"));
        assert!(!is_sensitive("hash_on"));
    }
}
