//! The gateway config embedded at build time, and the optional override from a
//! platform variable.

use gatehouse_core::Gateway;
use gatehouse_core::config::{Config, ConfigErrors, Format, check_store_support};

/// Name of the platform variable (Worker var or secret, Spin variable) that replaces
/// the embedded config with TOML text. Deployments normally leave it unset; it serves
/// local testing, where upstream ports are chosen at run time.
pub const CONFIG_VARIABLE: &str = "GATEHOUSE_CONFIG";

/// The platform's name in config errors.
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
pub const PLATFORM_NAME: &str = "Cloudflare Workers";
/// The platform's name in config errors.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub const PLATFORM_NAME: &str = "Spin";

/// The `[stores]` types this build can reach: Durable Objects on the Worker, Redis
/// (through Spin's outbound Redis) in the Spin component.
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
pub const STORE_TYPES: &[&str] = &["durable_object"];
/// The `[stores]` types this build can reach: Durable Objects on the Worker, Redis
/// (through Spin's outbound Redis) in the Spin component.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub const STORE_TYPES: &[&str] = &["redis"];

/// The config validated by the build script, as JSON.
pub const EMBEDDED_CONFIG_JSON: &str =
    include_str!(concat!(env!("OUT_DIR"), "/gatehouse-config.json"));

/// Builds the gateway from `override_toml` when given, or else from the embedded
/// config. The embedded config passed the same checks at build time, so only an
/// override can fail here.
pub fn build_gateway(override_toml: Option<&str>) -> Result<Gateway, ConfigErrors> {
    let gateway = parse_gateway(override_toml)?;
    let errors = check_store_support(gateway.config(), PLATFORM_NAME, STORE_TYPES);
    if errors.is_empty() {
        Ok(gateway)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn parse_gateway(override_toml: Option<&str>) -> Result<Gateway, ConfigErrors> {
    match override_toml {
        Some(text) => Gateway::from_text(text, Format::Toml),
        None => {
            let config: Config = serde_json::from_str(EMBEDDED_CONFIG_JSON).map_err(|error| {
                ConfigErrors(vec![gatehouse_core::config::ConfigError::new(
                    "",
                    format!("the embedded config is unreadable: {error}"),
                )])
            })?;
            Gateway::new(config)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_config_builds() {
        let gateway = build_gateway(None).expect("the build script validated it");
        assert!(!gateway.config().routes.is_empty());
    }

    #[test]
    fn override_errors_are_reported() {
        let errors = build_gateway(Some("[[routes]]\nupstream = \"missing\"\n")).unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert!(
            errors.0[0].to_string().starts_with("routes[0].upstream: "),
            "{errors}"
        );
    }

    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    #[test]
    fn redis_store_rejected_on_worker() {
        let config = "[stores.shared.redis]\nurl = \"redis://127.0.0.1:6379\"\n";
        let errors = build_gateway(Some(config)).unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert_eq!(errors.0[0].path, "stores.shared.redis");
    }

    #[test]
    fn redis_cache_store_rejected_on_the_edge() {
        let config = "[stores.shared.redis]\nurl = \"redis://127.0.0.1:6379\"\n\
                      [policies.pages.cache]\nstore = \"shared\"\n";
        // The Worker also rejects the store itself; Spin reaches Redis stores.
        let errors = build_gateway(Some(config)).unwrap_err();
        let cache_error = errors
            .0
            .iter()
            .find(|error| error.path == "policies.pages.cache.store")
            .expect("an error at the policy's store field");
        assert!(
            cache_error
                .to_string()
                .contains("a redis response cache store is not available on"),
            "{errors}"
        );
    }

    /// Host builds check as the Spin component does, which reaches Redis stores only.
    #[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
    #[test]
    fn redis_store_accepted_on_spin() {
        let config = "[stores.shared.redis]\nurl = \"redis://127.0.0.1:6379\"\n";
        let gateway = build_gateway(Some(config)).expect("Spin reaches redis stores");
        assert_eq!(gateway.config().stores.len(), 1);
    }

    /// Host builds check as the Spin component does, which reaches Redis stores only.
    #[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
    #[test]
    fn durable_object_store_rejected_on_spin() {
        let config = "[stores.shared.durable_object]\n";
        let errors = build_gateway(Some(config)).unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert_eq!(errors.0[0].path, "stores.shared.durable_object");
        assert!(errors.0[0].to_string().contains("Spin"), "{errors}");
    }
}
