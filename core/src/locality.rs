//! Zone preference and priority failover: which of an upstream's endpoints a request
//! may go to, before the balancer picks one of them.
//!
//! Endpoints are grouped into tiers by priority (0 first). A tier's load share is its
//! healthy share times the overprovisioning factor, capped at 100%; what a tier cannot
//! take passes to the next. Within the chosen tier, the local zone takes traffic in
//! proportion to its healthy share against `local_min_healthy_percent`, and the rest
//! spills to the tier's other zones. The choice is a pair of draws from one random
//! number, so every balancing algorithm works unchanged on the chosen subset.

use std::sync::Arc;

use crate::config::{EndpointConfig, LocalityConfig};

/// The zone part of a [`Scope`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneScope {
    /// Endpoints of any zone.
    Any,
    /// Endpoints in the gateway's zone.
    Local,
    /// Endpoints outside the gateway's zone.
    Remote,
}

/// The endpoints a request may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every endpoint: one tier and no zone preference, or nothing healthy anywhere.
    All,
    /// The endpoints of tier `tier` (an index into the tiers in priority order) in
    /// the given zones.
    Tier {
        /// Index of the tier, 0 for the lowest priority value.
        tier: usize,
        /// The zones of the tier.
        zones: ZoneScope,
    },
}

/// The priority tiers and zones of one upstream's endpoints.
#[derive(Debug)]
pub struct Locality {
    tier_of: Vec<usize>,
    tiers: Vec<Vec<usize>>,
    zone_of: Vec<Option<Arc<str>>>,
    local_min_healthy_percent: u64,
    overprovisioning_percent: u64,
}

impl Locality {
    /// Groups `endpoints` by priority and zone.
    pub fn new(endpoints: &[EndpointConfig], config: &LocalityConfig) -> Self {
        let mut priorities: Vec<u32> = endpoints.iter().map(|endpoint| endpoint.priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let mut tiers = vec![Vec::new(); priorities.len()];
        let tier_of = endpoints
            .iter()
            .enumerate()
            .map(|(index, endpoint)| {
                let tier = priorities
                    .binary_search(&endpoint.priority)
                    .unwrap_or_default();
                tiers[tier].push(index);
                tier
            })
            .collect();
        Self {
            tier_of,
            tiers,
            zone_of: endpoints
                .iter()
                .map(|endpoint| endpoint.zone.as_deref().map(Arc::from))
                .collect(),
            local_min_healthy_percent: u64::from(config.local_min_healthy_percent.clamp(1, 100)),
            overprovisioning_percent: u64::from(config.overprovisioning_percent.max(100)),
        }
    }

    /// Returns whether endpoint `index` is in `scope` for a gateway in `local_zone`.
    pub fn contains(&self, scope: Scope, index: usize, local_zone: Option<&str>) -> bool {
        match scope {
            Scope::All => true,
            Scope::Tier { tier, zones } => {
                self.tier_of.get(index) == Some(&tier)
                    && match zones {
                        ZoneScope::Any => true,
                        ZoneScope::Local => self.in_zone(index, local_zone),
                        ZoneScope::Remote => !self.in_zone(index, local_zone),
                    }
            }
        }
    }

    /// Chooses the endpoints for one request. `healthy` returns whether an endpoint
    /// can take traffic, and `random` supplies the draws.
    pub fn choose(
        &self,
        healthy: &dyn Fn(usize) -> bool,
        local_zone: Option<&str>,
        random: u64,
    ) -> Scope {
        let has_local = local_zone
            .is_some_and(|_| (0..self.zone_of.len()).any(|index| self.in_zone(index, local_zone)));
        if self.tiers.len() <= 1 && !has_local {
            return Scope::All;
        }
        // Each tier takes its healthy share times the overprovisioning factor, and
        // passes what it cannot take to the next tier.
        let mut remaining = 100_u64;
        let mut loads = Vec::with_capacity(self.tiers.len());
        for members in &self.tiers {
            let up = members.iter().filter(|index| healthy(**index)).count() as u64;
            let capacity = (up * self.overprovisioning_percent / members.len() as u64).min(100);
            let load = capacity.min(remaining);
            remaining -= load;
            loads.push(load);
        }
        let total: u64 = loads.iter().sum();
        if total == 0 {
            return Scope::All;
        }
        // When every tier together is below 100%, the loads are normalized.
        let mut draw = (random & 0xffff_ffff) % total;
        let tier = loads
            .iter()
            .position(|load| {
                if draw < *load {
                    true
                } else {
                    draw -= load;
                    false
                }
            })
            .unwrap_or(0);
        Scope::Tier {
            tier,
            zones: self.choose_zone(tier, healthy, local_zone, random >> 32),
        }
    }

    fn choose_zone(
        &self,
        tier: usize,
        healthy: &dyn Fn(usize) -> bool,
        local_zone: Option<&str>,
        random: u64,
    ) -> ZoneScope {
        let members = &self.tiers[tier];
        let (mut local, mut local_up, mut remote_up) = (0_u64, 0_u64, 0_u64);
        for index in members {
            let up = healthy(*index);
            if self.in_zone(*index, local_zone) {
                local += 1;
                local_up += u64::from(up);
            } else {
                remote_up += u64::from(up);
            }
        }
        if local == 0 || remote_up == 0 {
            return ZoneScope::Any;
        }
        if local_up == 0 {
            return ZoneScope::Remote;
        }
        // Local share of traffic in parts per 10,000: all of it while the healthy
        // share is at or above the threshold, proportionally less below it.
        let local_share =
            (local_up * 1_000_000 / (local * self.local_min_healthy_percent)).min(10_000);
        if random % 10_000 < local_share {
            ZoneScope::Local
        } else {
            ZoneScope::Remote
        }
    }

    fn in_zone(&self, index: usize, local_zone: Option<&str>) -> bool {
        match (
            self.zone_of.get(index).and_then(Option::as_deref),
            local_zone,
        ) {
            (Some(zone), Some(local)) => zone == local,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(zone: &str, priority: u32) -> EndpointConfig {
        EndpointConfig {
            address: format!("10.0.0.1:{}", 1000 + priority),
            weight: 1,
            zone: (!zone.is_empty()).then(|| zone.to_owned()),
            priority,
        }
    }

    fn shares(
        locality: &Locality,
        healthy: &dyn Fn(usize) -> bool,
        zone: Option<&str>,
    ) -> Vec<usize> {
        let mut counts = vec![0; locality.zone_of.len()];
        let mut state = 1_u64;
        for _ in 0..10_000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let scope = locality.choose(healthy, zone, state);
            let members: Vec<usize> = (0..counts.len())
                .filter(|index| locality.contains(scope, *index, zone) && healthy(*index))
                .collect();
            if !members.is_empty() {
                // Spread evenly over the scope, as a balancer would.
                counts[members[(state >> 20) as usize % members.len()]] += 1;
            }
        }
        counts
    }

    #[test]
    fn single_tier_without_zones_is_all() {
        let locality = Locality::new(
            &[endpoint("", 0), endpoint("", 0)],
            &LocalityConfig::default(),
        );
        assert_eq!(locality.choose(&|_| true, Some("a"), 7), Scope::All);
    }

    #[test]
    fn local_zone_takes_all_while_healthy_enough() {
        let endpoints = [
            endpoint("a", 0),
            endpoint("a", 0),
            endpoint("b", 0),
            endpoint("b", 0),
        ];
        let locality = Locality::new(&endpoints, &LocalityConfig::default());
        let counts = shares(&locality, &|_| true, Some("a"));
        assert_eq!(counts[2] + counts[3], 0, "{counts:?}");
        // Without a local zone, every zone shares the traffic.
        let counts = shares(&locality, &|_| true, None);
        assert!(counts.iter().all(|count| *count > 2_000), "{counts:?}");
    }

    #[test]
    fn local_zone_spills_in_proportion() {
        // Half of zone a is healthy against a 70% threshold: 0.5 / 0.7 = 71% stays.
        let endpoints = [
            endpoint("a", 0),
            endpoint("a", 0),
            endpoint("b", 0),
            endpoint("b", 0),
        ];
        let locality = Locality::new(&endpoints, &LocalityConfig::default());
        let counts = shares(&locality, &|index| index != 0, Some("a"));
        assert_eq!(counts[0], 0);
        let local = counts[1] as f64 / 10_000.0;
        assert!((0.66..0.76).contains(&local), "{counts:?}");
        // A dead local zone sends everything away.
        let counts = shares(&locality, &|index| index >= 2, Some("a"));
        assert_eq!(counts[0] + counts[1], 0, "{counts:?}");
    }

    #[test]
    fn priority_fails_over_in_proportion() {
        let endpoints = [
            endpoint("", 0),
            endpoint("", 0),
            endpoint("", 0),
            endpoint("", 0),
            endpoint("", 1),
        ];
        let locality = Locality::new(&endpoints, &LocalityConfig::default());
        // All of tier 0 healthy: tier 1 idle.
        let counts = shares(&locality, &|_| true, None);
        assert_eq!(counts[4], 0, "{counts:?}");
        // 3 of 4 healthy, times 1.4, is over 100%: still no failover.
        let counts = shares(&locality, &|index| index != 0, None);
        assert_eq!(counts[4], 0, "{counts:?}");
        // 1 of 4 healthy: 35% stays, 65% fails over.
        let counts = shares(&locality, &|index| index == 3 || index == 4, None);
        let failed_over = counts[4] as f64 / 10_000.0;
        assert!((0.60..0.70).contains(&failed_over), "{counts:?}");
        // Nothing healthy: no preference.
        assert_eq!(locality.choose(&|_| false, None, 3), Scope::All);
    }
}
