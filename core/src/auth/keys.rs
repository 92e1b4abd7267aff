//! JWS algorithms and verification keys, with signature checks done by `jwt-compact`.

use std::fmt;

use jwt_compact::alg::{Ed25519, Es256, Hs256, Hs256Key, Hs384, Hs384Key, Hs512, Hs512Key, Rsa};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{Algorithm, AlgorithmExt, Token, UntrustedToken, ValidationError};
use serde_json::{Map, Value};

/// Claims of a token as JSON, besides `exp`, `nbf` and `iat`, which `jwt-compact`
/// parses itself.
pub(crate) type CustomClaims = Map<String, Value>;

/// A JWS algorithm the gateway verifies. `none` is deliberately absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// HMAC with SHA-256.
    Hs256,
    /// HMAC with SHA-384.
    Hs384,
    /// HMAC with SHA-512.
    Hs512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// RSASSA-PSS with SHA-384.
    Ps384,
    /// RSASSA-PSS with SHA-512.
    Ps512,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

/// Names accepted in config, for hints.
pub(crate) const ALG_NAMES: &str =
    "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, EdDSA";

/// The family of key an algorithm needs. An algorithm only ever meets keys of its own
/// family, which is what rules out algorithm confusion (an RSA public key used as an
/// HMAC secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyFamily {
    Hmac,
    Rsa,
    P256,
    Ed25519,
}

impl Alg {
    /// Parses a JWS `alg` name, case-sensitively as RFC 7515 requires.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "HS256" => Self::Hs256,
            "HS384" => Self::Hs384,
            "HS512" => Self::Hs512,
            "RS256" => Self::Rs256,
            "RS384" => Self::Rs384,
            "RS512" => Self::Rs512,
            "PS256" => Self::Ps256,
            "PS384" => Self::Ps384,
            "PS512" => Self::Ps512,
            "ES256" => Self::Es256,
            "EdDSA" => Self::EdDsa,
            _ => return None,
        })
    }

    /// Returns the JWS name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Hs384 => "HS384",
            Self::Hs512 => "HS512",
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    pub(crate) fn family(self) -> KeyFamily {
        match self {
            Self::Hs256 | Self::Hs384 | Self::Hs512 => KeyFamily::Hmac,
            Self::Rs256 | Self::Rs384 | Self::Rs512 | Self::Ps256 | Self::Ps384 | Self::Ps512 => {
                KeyFamily::Rsa
            }
            Self::Es256 => KeyFamily::P256,
            Self::EdDsa => KeyFamily::Ed25519,
        }
    }

    fn rsa(self) -> Option<Rsa> {
        Some(match self {
            Self::Rs256 => Rsa::rs256(),
            Self::Rs384 => Rsa::rs384(),
            Self::Rs512 => Rsa::rs512(),
            Self::Ps256 => Rsa::ps256(),
            Self::Ps384 => Rsa::ps384(),
            Self::Ps512 => Rsa::ps512(),
            _ => return None,
        })
    }
}

/// A public key for asymmetric algorithms. HMAC keys are secrets and are never held
/// here: they are read from the platform per request.
#[derive(Clone)]
pub(crate) enum PublicKey {
    Rsa(<Rsa as Algorithm>::VerifyingKey),
    P256(<Es256 as Algorithm>::VerifyingKey),
    Ed25519(<Ed25519 as Algorithm>::VerifyingKey),
}

// Public keys are not secret, but their bytes are long and say nothing useful in logs.
impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let family = match self {
            Self::Rsa(_) => "Rsa",
            Self::P256(_) => "P256",
            Self::Ed25519(_) => "Ed25519",
        };
        f.debug_tuple("PublicKey").field(&family).finish()
    }
}

impl PublicKey {
    pub(crate) fn family(&self) -> KeyFamily {
        match self {
            Self::Rsa(_) => KeyFamily::Rsa,
            Self::P256(_) => KeyFamily::P256,
            Self::Ed25519(_) => KeyFamily::Ed25519,
        }
    }

    /// Parses the public part of a JWK of type RSA, EC (P-256) or OKP (Ed25519).
    ///
    /// Error messages name the problem but never quote key material.
    pub(crate) fn from_jwk(jwk: &Value) -> Result<Self, String> {
        let kty = jwk.get("kty").and_then(Value::as_str).unwrap_or_default();
        if kty == "oct" {
            return Err("symmetric (\"oct\") keys are not accepted here".to_owned());
        }
        let parsed: JsonWebKey<'_> = serde_json::from_value(jwk.clone())
            .map_err(|_| format!("invalid JWK of type {kty:?}"))?;
        let key = match &parsed {
            JsonWebKey::Rsa { .. } => <Rsa as Algorithm>::VerifyingKey::try_from(&parsed)
                .map(Self::Rsa)
                .map_err(|error| format!("invalid RSA JWK: {error}"))?,
            JsonWebKey::EllipticCurve { curve, .. } if curve == "P-256" => {
                <Es256 as Algorithm>::VerifyingKey::try_from(&parsed)
                    .map(Self::P256)
                    .map_err(|error| format!("invalid P-256 JWK: {error}"))?
            }
            JsonWebKey::KeyPair { curve, .. } if curve == "Ed25519" => {
                <Ed25519 as Algorithm>::VerifyingKey::try_from(&parsed)
                    .map(Self::Ed25519)
                    .map_err(|error| format!("invalid Ed25519 JWK: {error}"))?
            }
            JsonWebKey::EllipticCurve { curve, .. } | JsonWebKey::KeyPair { curve, .. } => {
                return Err(format!(
                    "unsupported curve {curve:?}; use P-256 (ES256) or Ed25519 (EdDSA)"
                ));
            }
            _ => return Err(format!("unsupported key type {kty:?}")),
        };
        if let JsonWebKey::Rsa { modulus, .. } = &parsed
            && modulus.len() * 8 < 2048
        {
            return Err(format!(
                "RSA key of {} bits is too short; 2048 bits is the minimum",
                modulus.len() * 8
            ));
        }
        Ok(key)
    }
}

/// Key material for one signature check.
pub(crate) enum VerifyingKey<'a> {
    Hmac(&'a [u8]),
    Public(&'a PublicKey),
}

/// Checks the signature of `token` with `alg` and `key` and parses its claims.
///
/// The caller has already checked that the token's `alg` is `alg`; `jwt-compact`
/// checks it again. A key of another family than `alg` needs fails, so a misrouted
/// key can never verify anything.
pub(crate) fn verify(
    alg: Alg,
    key: VerifyingKey<'_>,
    token: &UntrustedToken<'_>,
) -> Result<Token<CustomClaims>, ValidationError> {
    match (alg, key) {
        (Alg::Hs256, VerifyingKey::Hmac(secret)) => Hs256
            .validator::<CustomClaims>(&Hs256Key::new(secret))
            .validate(token),
        (Alg::Hs384, VerifyingKey::Hmac(secret)) => Hs384
            .validator::<CustomClaims>(&Hs384Key::new(secret))
            .validate(token),
        (Alg::Hs512, VerifyingKey::Hmac(secret)) => Hs512
            .validator::<CustomClaims>(&Hs512Key::new(secret))
            .validate(token),
        (Alg::Es256, VerifyingKey::Public(PublicKey::P256(key))) => {
            Es256.validator::<CustomClaims>(key).validate(token)
        }
        (Alg::EdDsa, VerifyingKey::Public(PublicKey::Ed25519(key))) => {
            Ed25519.validator::<CustomClaims>(key).validate(token)
        }
        (alg, VerifyingKey::Public(PublicKey::Rsa(key))) => match alg.rsa() {
            Some(rsa) => rsa.validator::<CustomClaims>(key).validate(token),
            None => Err(ValidationError::InvalidSignature),
        },
        _ => Err(ValidationError::InvalidSignature),
    }
}
