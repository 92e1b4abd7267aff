//! The `authorize` policy: requirements on the identity of an authenticated request.

use serde_json::Value;

use super::Identity;
use crate::config::{AuthorizeConfig, ConfigError};
use crate::error::{Challenge, Error, ErrorKind, ErrorSource};

/// A compiled `authorize` policy.
#[derive(Debug, Clone)]
pub struct AuthorizePolicy {
    scopes: Vec<String>,
    roles: Vec<String>,
    claims: Vec<(String, Value)>,
    groups: Vec<String>,
    consumers: Vec<String>,
}

impl AuthorizePolicy {
    /// Validates `config`, reporting problems under `path`.
    pub fn compile(config: &AuthorizeConfig, path: &str, errors: &mut Vec<ConfigError>) -> Self {
        let empty = config.scopes.is_empty()
            && config.roles.is_empty()
            && config.claims.is_empty()
            && config.groups.is_empty()
            && config.consumers.is_empty();
        if empty {
            errors.push(
                ConfigError::new(path, "lists no requirement")
                    .with_hint("set scopes, roles, claims, groups or consumers"),
            );
        }
        for (name, value) in &config.claims {
            if !matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                errors.push(
                    ConfigError::new(
                        format!("{path}.claims.{name}"),
                        "must be a string, number or boolean",
                    )
                    .with_hint("a list claim passes when it contains this value"),
                );
            }
        }
        Self {
            scopes: config.scopes.clone(),
            roles: config.roles.clone(),
            claims: config
                .claims
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
            groups: config.groups.clone(),
            consumers: config.consumers.clone(),
        }
    }

    /// Checks `identity`, rejecting with 403 when a requirement fails. `scheme` names
    /// the authentication scheme in the challenge.
    pub fn check(&self, identity: &Identity, scheme: &'static str) -> Result<(), Error> {
        let forbidden = |detail: &'static str, code: Option<&'static str>| {
            Error::new(ErrorKind::Forbidden, ErrorSource::Client, detail).with_challenge(
                Challenge {
                    scheme,
                    error: code,
                },
            )
        };
        if self
            .scopes
            .iter()
            .any(|scope| !identity.scopes.contains(scope))
        {
            return Err(forbidden(
                "the token lacks a required scope",
                Some("insufficient_scope"),
            ));
        }
        if !self.roles.is_empty() {
            let has_role = self.roles.iter().any(|role| {
                claim_contains(identity.claims.get("roles"), &Value::String(role.clone()))
            });
            if !has_role {
                return Err(forbidden("the identity lacks a required role", None));
            }
        }
        for (name, expected) in &self.claims {
            if !claim_contains(identity.claims.get(name), expected) {
                return Err(forbidden("a claim does not have the required value", None));
            }
        }
        if !self.groups.is_empty()
            && !self
                .groups
                .iter()
                .any(|group| identity.groups.contains(group))
        {
            return Err(forbidden("the consumer is not in a permitted group", None));
        }
        if !self.consumers.is_empty()
            && !identity
                .consumer
                .as_ref()
                .is_some_and(|consumer| self.consumers.contains(consumer))
        {
            return Err(forbidden("the consumer is not permitted here", None));
        }
        Ok(())
    }
}

/// A claim fits when it equals `expected`, or is a list containing it, or is a
/// space-separated string containing it (the OAuth convention for `scope`).
fn claim_contains(claim: Option<&Value>, expected: &Value) -> bool {
    match (claim, expected) {
        (Some(Value::Array(values)), expected) => values.contains(expected),
        (Some(Value::String(text)), Value::String(wanted)) => {
            text == wanted || text.split_whitespace().any(|word| word == wanted)
        }
        (Some(value), expected) => value == expected,
        (None, _) => false,
    }
}
