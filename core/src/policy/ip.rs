//! The `ip` policy: client address allow and deny lists.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::client_ip::parse_network;
use crate::config::{ConfigError, IpPolicyConfig};
use crate::error::{Error, ErrorKind, ErrorSource};

/// Compiled allow and deny lists.
#[derive(Debug, Clone, Default)]
pub struct IpPolicy {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl IpPolicy {
    /// Parses the lists, reporting each invalid entry under `path`.
    pub fn compile(config: &IpPolicyConfig, path: &str, errors: &mut Vec<ConfigError>) -> Self {
        let mut parse = |list: &[String], name: &str| -> Vec<IpNet> {
            list.iter()
                .enumerate()
                .filter_map(|(index, entry)| match parse_network(entry) {
                    Ok(network) => Some(network),
                    Err(message) => {
                        errors.push(
                            ConfigError::new(format!("{path}.{name}[{index}]"), message)
                                .with_hint("use an address such as \"192.0.2.7\" or a block such as \"192.0.2.0/24\""),
                        );
                        None
                    }
                })
                .collect()
        };
        let allow = parse(&config.allow, "allow");
        let deny = parse(&config.deny, "deny");
        if config.allow.is_empty() && config.deny.is_empty() {
            errors.push(
                ConfigError::new(path, "lists no addresses").with_hint("set allow, deny or both"),
            );
        }
        Self { allow, deny }
    }

    /// Rejects `client` with 403 when a deny entry contains it, or when there is an
    /// allow list and no entry of it contains the client.
    pub fn check(&self, client: IpAddr) -> Result<(), Error> {
        let denied = self.deny.iter().any(|network| network.contains(&client));
        let allowed =
            self.allow.is_empty() || self.allow.iter().any(|network| network.contains(&client));
        if denied || !allowed {
            return Err(Error::new(
                ErrorKind::Forbidden,
                ErrorSource::Client,
                "the client address is not allowed",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], deny: &[&str]) -> IpPolicy {
        let config = IpPolicyConfig {
            allow: allow.iter().map(|entry| (*entry).to_owned()).collect(),
            deny: deny.iter().map(|entry| (*entry).to_owned()).collect(),
        };
        let mut errors = Vec::new();
        let compiled = IpPolicy::compile(&config, "policies.p.ip", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        compiled
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn allow_list_rejects_others() {
        let only_private = policy(&["10.0.0.0/8", "2001:db8::/32"], &[]);
        assert!(only_private.check(ip("10.1.2.3")).is_ok());
        assert!(only_private.check(ip("2001:db8::1")).is_ok());
        let error = only_private.check(ip("192.0.2.1")).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Forbidden);
    }

    #[test]
    fn deny_wins_over_allow() {
        let policy = policy(&["10.0.0.0/8"], &["10.6.6.0/24"]);
        assert!(policy.check(ip("10.1.1.1")).is_ok());
        assert!(policy.check(ip("10.6.6.6")).is_err());
    }

    #[test]
    fn deny_only_allows_rest() {
        let policy = policy(&[], &["192.0.2.7"]);
        assert!(policy.check(ip("192.0.2.8")).is_ok());
        assert!(policy.check(ip("192.0.2.7")).is_err());
    }

    #[test]
    fn invalid_entries_reported_with_path() {
        let config = IpPolicyConfig {
            allow: vec!["10.0.0.0/40".into()],
            deny: vec!["evil.example".into()],
        };
        let mut errors = Vec::new();
        IpPolicy::compile(&config, "policies.p.ip", &mut errors);
        let paths: Vec<&str> = errors.iter().map(|error| error.path.as_str()).collect();
        assert_eq!(paths, ["policies.p.ip.allow[0]", "policies.p.ip.deny[0]"]);
    }

    #[test]
    fn empty_policy_is_an_error() {
        let mut errors = Vec::new();
        IpPolicy::compile(&IpPolicyConfig::default(), "policies.p.ip", &mut errors);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "policies.p.ip");
    }
}
