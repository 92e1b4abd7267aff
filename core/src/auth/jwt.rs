//! The `jwt` policy: verifies a JSON Web Token against static keys or a JWKS.

use std::fmt;
use std::time::Duration;

use http::HeaderMap;
use jwt_compact::UntrustedToken;
use serde_json::Value;

use super::credential::{self, Found, Source};
use super::jwks::JwksSource;
use super::keys::{ALG_NAMES, Alg, CustomClaims, KeyFamily, PublicKey, VerifyingKey, verify};
use super::verified::VerifiedTokens;
use super::{Authenticated, Identity, ambiguous_credentials, unauthorized};
use crate::config::{ConfigError, JwtConfig, JwtKeyConfig};
use crate::error::Error;
use crate::platform::{Clock, Platform};

const SCHEME: &str = "Bearer";

/// Most keys tried for one token, which bounds the signature checks a token without
/// `kid` can cause.
const MAX_CANDIDATES: usize = 8;

/// Claims the gateway reads from `jwt-compact`'s typed fields rather than the map.
const TIME_CLAIMS: [&str; 3] = ["exp", "nbf", "iat"];

/// Key material of a static key.
enum Material {
    /// Name of the platform secret with the HMAC key, read per request so a rotated
    /// secret takes effect without a reload.
    Secret(String),
    Public(PublicKey),
}

// Written by hand so that no key material could ever reach a log: only the secret's
// name is shown.
impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret(name) => f.debug_tuple("Secret").field(name).finish(),
            Self::Public(key) => key.fmt(f),
        }
    }
}

#[derive(Debug)]
struct StaticKey {
    kid: Option<String>,
    alg: Alg,
    material: Material,
}

/// A compiled `jwt` policy, with its JWKS cache.
#[derive(Debug)]
pub struct JwtPolicy {
    sources: Vec<Source>,
    keys: Vec<StaticKey>,
    jwks: Option<JwksSource>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway: Duration,
    required_claims: Vec<String>,
    forward_token: bool,
    identity_headers: bool,
    /// Tokens whose signature was checked, or `None` when the cache is off.
    verified: Option<VerifiedTokens>,
    verified_max_age: Duration,
}

impl JwtPolicy {
    /// Validates `config`, reporting problems under `path`.
    pub fn compile(config: &JwtConfig, path: &str, errors: &mut Vec<ConfigError>) -> Self {
        let sources = credential::Source::compile_all(
            &config.token_from,
            &format!("{path}.token_from"),
            true,
            errors,
        );
        let keys = config
            .keys
            .iter()
            .enumerate()
            .filter_map(|(index, key)| compile_key(key, &format!("{path}.keys[{index}]"), errors))
            .collect();
        let jwks = config
            .jwks
            .as_ref()
            .map(|jwks| JwksSource::compile(jwks, &format!("{path}.jwks"), errors));
        if config.keys.is_empty() && config.jwks.is_none() {
            errors.push(
                ConfigError::new(path, "has no verification keys")
                    .with_hint("add keys = [{ alg = \"RS256\", jwk = { ... } }], keys = [{ alg = \"HS256\", secret = \"NAME\" }] or jwks = { url = \"...\" }"),
            );
        }
        let issuers = non_empty_list(config.issuer.as_ref(), &format!("{path}.issuer"), errors);
        let audiences = non_empty_list(
            config.audience.as_ref(),
            &format!("{path}.audience"),
            errors,
        );
        for (index, claim) in config.required_claims.iter().enumerate() {
            if claim.is_empty() {
                errors.push(ConfigError::new(
                    format!("{path}.required_claims[{index}]"),
                    "must not be empty",
                ));
            }
        }
        if config.leeway.get() > Duration::from_secs(3600) {
            errors.push(
                ConfigError::new(
                    format!("{path}.leeway"),
                    format!("{} is longer than 1h", config.leeway),
                )
                .with_hint("leeway covers clock skew between servers, usually under a few minutes"),
            );
        }
        Self {
            sources,
            keys,
            jwks,
            issuers,
            audiences,
            leeway: config.leeway.get(),
            required_claims: config.required_claims.clone(),
            forward_token: config.forward_token,
            identity_headers: config.identity_headers,
            verified: VerifiedTokens::new(config.verified_cache.max_tokens),
            verified_max_age: config.verified_cache.max_age.get(),
        }
    }

    /// Returns the JWKS source, if the policy has one.
    pub fn jwks(&self) -> Option<&JwksSource> {
        self.jwks.as_ref()
    }

    /// Verifies the token of a request and returns its identity.
    pub(crate) async fn authenticate<P: Platform>(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        platform: &P,
    ) -> Result<Authenticated, Error> {
        let (token, source) = match credential::find(&self.sources, headers, query) {
            Found::None => {
                return Err(unauthorized(SCHEME, None, "the request carries no token"));
            }
            Found::Several => {
                return Err(ambiguous_credentials(
                    SCHEME,
                    "the request carries more than one token",
                ));
            }
            Found::One { value, source } => (value, source),
        };
        let identity = self.verify_token(&token, platform).await?;
        Ok(Authenticated {
            identity,
            scheme: SCHEME,
            identity_headers: self.identity_headers,
            remove_header: if self.forward_token {
                None
            } else {
                source.header()
            },
        })
    }

    /// Verifies `token`: algorithm, key, signature, then claims.
    ///
    /// A token found in the cache of verified tokens skips the first three; its claims
    /// are checked again, because time has passed since.
    pub async fn verify_token<P: Platform>(
        &self,
        token: &str,
        platform: &P,
    ) -> Result<Identity, Error> {
        let now_ms = platform.clock().unix_millis();
        let digest = self
            .verified
            .as_ref()
            .map(|_| VerifiedTokens::digest(token));
        if let (Some(cache), Some(digest)) = (&self.verified, &digest)
            && let Some(claims) = cache.get(digest, now_ms)
        {
            self.check_claims(&claims, now_ms)?;
            return Ok(identity_from(claims.custom.clone()));
        }
        let invalid = |detail| unauthorized(SCHEME, Some("invalid_token"), detail);
        let untrusted =
            UntrustedToken::new(token).map_err(|_| invalid("the token is not a valid JWT"))?;
        // `none` and every unknown name fail here, before any key is looked at.
        let alg = Alg::parse(untrusted.algorithm())
            .ok_or_else(|| invalid("the token's algorithm is not accepted"))?;
        let kid = untrusted.header().key_id.as_deref();

        let mut verified = None;
        let mut any_key = false;
        for key in self
            .keys
            .iter()
            .filter(|key| key.alg == alg && kid_fits(kid, key.kid.as_deref()))
            .take(MAX_CANDIDATES)
        {
            any_key = true;
            let result = match &key.material {
                Material::Secret(name) => {
                    let secret = platform.secret(name).ok_or_else(|| missing_secret(name))?;
                    verify(alg, VerifyingKey::Hmac(secret.as_bytes()), &untrusted)
                }
                Material::Public(public) => verify(alg, VerifyingKey::Public(public), &untrusted),
            };
            if let Ok(token) = result {
                verified = Some(token);
                break;
            }
        }
        if verified.is_none()
            && !any_key
            && let Some(jwks) = &self.jwks
            && alg.family() != KeyFamily::Hmac
        {
            let keys = jwks.keys_for(platform, kid, alg).await?;
            for public in keys.iter().take(MAX_CANDIDATES) {
                any_key = true;
                if let Ok(token) = verify(alg, VerifyingKey::Public(public), &untrusted) {
                    verified = Some(token);
                    break;
                }
            }
        }
        let Some(token) = verified else {
            return Err(if any_key {
                invalid("the token signature is invalid")
            } else {
                invalid("no key matches the token's kid and algorithm")
            });
        };
        let (_, claims) = token.into_parts();
        self.check_claims(&claims, now_ms)?;
        if let (Some(cache), Some(digest)) = (&self.verified, digest) {
            let max_age = u64::try_from(self.verified_max_age.as_millis()).unwrap_or(u64::MAX);
            let mut deadline = now_ms.saturating_add(max_age);
            if let Some(expiration) = claims.expiration {
                let expiration = u64::try_from(expiration.timestamp_millis()).unwrap_or(0);
                deadline = deadline.min(expiration);
            }
            let claims = std::sync::Arc::new(claims);
            cache.insert(digest, std::sync::Arc::clone(&claims), now_ms, deadline);
            return Ok(identity_from(claims.custom.clone()));
        }
        Ok(identity_from(claims.custom))
    }

    fn check_claims(
        &self,
        claims: &jwt_compact::Claims<CustomClaims>,
        now_millis: u64,
    ) -> Result<(), Error> {
        let invalid = |detail| unauthorized(SCHEME, Some("invalid_token"), detail);
        let now = i64::try_from(now_millis).unwrap_or(i64::MAX);
        let leeway = i64::try_from(self.leeway.as_millis()).unwrap_or(i64::MAX);
        if let Some(expiration) = claims.expiration
            && now >= expiration.timestamp_millis().saturating_add(leeway)
        {
            return Err(invalid("the token has expired"));
        }
        if let Some(not_before) = claims.not_before
            && now.saturating_add(leeway) < not_before.timestamp_millis()
        {
            return Err(invalid("the token is not valid yet"));
        }
        for claim in &self.required_claims {
            let present = match claim.as_str() {
                "exp" => claims.expiration.is_some(),
                "nbf" => claims.not_before.is_some(),
                "iat" => claims.issued_at.is_some(),
                other => claims
                    .custom
                    .get(other)
                    .is_some_and(|value| !value.is_null()),
            };
            if !present {
                return Err(invalid("the token lacks a required claim"));
            }
        }
        if !self.issuers.is_empty() {
            let issuer = claims.custom.get("iss").and_then(Value::as_str);
            if !issuer.is_some_and(|issuer| self.issuers.iter().any(|known| known == issuer)) {
                return Err(invalid("the token's issuer is not accepted"));
            }
        }
        if !self.audiences.is_empty() {
            let accepted = |audience: &str| self.audiences.iter().any(|known| known == audience);
            let fits = match claims.custom.get("aud") {
                Some(Value::String(audience)) => accepted(audience),
                Some(Value::Array(audiences)) => {
                    audiences.iter().filter_map(Value::as_str).any(accepted)
                }
                _ => false,
            };
            if !fits {
                return Err(invalid("the token is not meant for this audience"));
            }
        }
        Ok(())
    }
}

fn kid_fits(wanted: Option<&str>, own: Option<&str>) -> bool {
    match (wanted, own) {
        (Some(wanted), Some(own)) => wanted == own,
        _ => true,
    }
}

/// A secret that is not set is a deployment problem, not the client's: 500, with the
/// secret's name in the cause for the operator's log and not in the response.
fn missing_secret(name: &str) -> Error {
    Error::internal("a token verification key is not configured on this platform")
        .with_cause(format!("secret {name:?} is not set"))
}

fn identity_from(mut claims: CustomClaims) -> Identity {
    for claim in TIME_CLAIMS {
        claims.remove(claim);
    }
    let subject = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
    let scopes = match claims.get("scope").or_else(|| claims.get("scp")) {
        Some(Value::String(scopes)) => scopes.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(scopes)) => scopes
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    Identity {
        subject,
        consumer: None,
        api_key_id: None,
        scopes,
        groups: Vec::new(),
        claims,
    }
}

fn non_empty_list(
    value: Option<&crate::config::OneOrMany>,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<String> {
    let Some(value) = value else {
        return Vec::new();
    };
    let list = value.to_vec();
    if list.is_empty() {
        errors.push(
            ConfigError::new(path, "is an empty list")
                .with_hint("list at least one value, or remove the key to accept any"),
        );
    }
    if list.iter().any(String::is_empty) {
        errors.push(ConfigError::new(path, "contains an empty string"));
    }
    list
}

fn compile_key(
    config: &JwtKeyConfig,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<StaticKey> {
    let Some(alg) = Alg::parse(&config.alg) else {
        let hint = if config.alg.eq_ignore_ascii_case("none") {
            "unsigned tokens are never accepted".to_owned()
        } else {
            format!("use one of {ALG_NAMES}")
        };
        errors.push(
            ConfigError::new(
                format!("{path}.alg"),
                format!("unsupported algorithm {:?}", config.alg),
            )
            .with_hint(hint),
        );
        return None;
    };
    let material = match (&config.jwk, &config.secret) {
        (Some(_), Some(_)) | (None, None) => {
            errors.push(
                ConfigError::new(path, "must set exactly one of jwk and secret")
                    .with_hint("use jwk for RSA, EC and Ed25519 public keys and secret = \"NAME\" for HMAC keys"),
            );
            return None;
        }
        (None, Some(_)) if alg.family() != KeyFamily::Hmac => {
            errors.push(
                ConfigError::new(
                    format!("{path}.secret"),
                    format!("{} needs a public key, not a secret", alg.name()),
                )
                .with_hint(
                    "an HMAC secret is never used as an RSA or EC key; set jwk to the public key",
                ),
            );
            return None;
        }
        (None, Some(name)) => {
            if name.is_empty() {
                errors.push(ConfigError::new(
                    format!("{path}.secret"),
                    "must name a secret",
                ));
            }
            Material::Secret(name.clone())
        }
        (Some(_), None) if alg.family() == KeyFamily::Hmac => {
            errors.push(
                ConfigError::new(
                    format!("{path}.jwk"),
                    format!(
                        "{} keys are secrets and cannot be written in the config",
                        alg.name()
                    ),
                )
                .with_hint("store the key in a platform secret and set secret = \"NAME\""),
            );
            return None;
        }
        (Some(jwk), None) => match PublicKey::from_jwk(jwk) {
            Ok(key) if key.family() == alg.family() => Material::Public(key),
            Ok(_) => {
                errors.push(
                    ConfigError::new(format!("{path}.jwk"), format!("the key type does not fit {}", alg.name()))
                        .with_hint("RS* and PS* need an RSA key, ES256 an EC P-256 key, EdDSA an OKP Ed25519 key"),
                );
                return None;
            }
            Err(message) => {
                errors.push(
                    ConfigError::new(format!("{path}.jwk"), message)
                        .with_hint("give the public key as a JWK table, such as { kty = \"EC\", crv = \"P-256\", x = \"...\", y = \"...\" }"),
                );
                return None;
            }
        },
    };
    if let Some(jwk) = &config.jwk
        && let Some(jwk_alg) = jwk.get("alg").and_then(Value::as_str)
        && jwk_alg != alg.name()
    {
        errors.push(ConfigError::new(
            format!("{path}.jwk.alg"),
            format!("is {jwk_alg:?} but the key's alg is {:?}", alg.name()),
        ));
    }
    Some(StaticKey {
        kid: config.kid.clone(),
        alg,
        material,
    })
}
