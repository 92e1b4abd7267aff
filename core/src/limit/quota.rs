//! Calendar quotas: a count per UTC calendar period (minute, hour, day or month) that
//! starts again at zero when the period ends.
//!
//! Minutes, hours and days have fixed lengths in Unix time, which has no leap seconds.
//! Months are found from the civil date of the time, so a quota for March ends at
//! 00:00 UTC on April 1st and a February quota of a leap year lasts 29 days. Rolling
//! quotas are sliding windows ([`super::WindowLimit`]) and do not use this module.

use std::time::Duration;

use super::gcra::Decision;

const MICROS_PER_DAY: u64 = 86_400_000_000;

/// The calendar period of a quota, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalendarPeriod {
    /// From second 0 of each minute.
    Minute,
    /// From minute 0 of each hour.
    Hour,
    /// From 00:00 UTC of each day.
    Day,
    /// From 00:00 UTC on the first day of each month.
    Month,
}

impl CalendarPeriod {
    /// Returns the start and end, in Unix microseconds, of the period that contains
    /// `now_micros`.
    pub fn bounds(self, now_micros: u64) -> (u64, u64) {
        let fixed = |length: u64| {
            let start = now_micros - now_micros % length;
            (start, start.saturating_add(length))
        };
        match self {
            Self::Minute => fixed(60_000_000),
            Self::Hour => fixed(3_600_000_000),
            Self::Day => fixed(MICROS_PER_DAY),
            Self::Month => {
                let days = now_micros / MICROS_PER_DAY;
                let (year, month, _) = civil_from_days(days);
                let start = days_from_civil(year, month, 1) * MICROS_PER_DAY;
                let (next_year, next_month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                let end = days_from_civil(next_year, next_month, 1) * MICROS_PER_DAY;
                (start, end)
            }
        }
    }

    /// Returns a typical length of the period, for the `w` parameter of the
    /// `RateLimit-Policy` header: 30 days for a month.
    pub fn nominal_seconds(self) -> u64 {
        match self {
            Self::Minute => 60,
            Self::Hour => 3_600,
            Self::Day => 86_400,
            Self::Month => 30 * 86_400,
        }
    }
}

/// A quota of `limit` units per calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalendarQuota {
    limit: u64,
    period: CalendarPeriod,
}

/// The usage of one key: the start of the period it counts in and the units used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaState {
    /// Start of the counted period, in Unix microseconds.
    pub period_start: u64,
    /// Units admitted in that period.
    pub used: u64,
}

impl CalendarQuota {
    /// Creates a quota, or returns `None` when `limit` is zero.
    pub fn new(limit: u64, period: CalendarPeriod) -> Option<Self> {
        (limit > 0).then_some(Self { limit, period })
    }

    /// Returns the units allowed per period.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Returns the calendar period.
    pub fn period(&self) -> CalendarPeriod {
        self.period
    }

    /// Decides a request of `cost` units at `now_micros` (Unix time) and returns the
    /// state to store. A clock that stepped back into an earlier period keeps counting
    /// in the stored, later period, so a step back never grants a fresh quota.
    pub fn decide(&self, state: QuotaState, now_micros: u64, cost: u64) -> (Decision, QuotaState) {
        let (start, end) = self.period.bounds(now_micros);
        let (state, end) = if start > state.period_start {
            (
                QuotaState {
                    period_start: start,
                    used: 0,
                },
                end,
            )
        } else if start == state.period_start {
            (state, end)
        } else {
            (state, self.period.bounds(state.period_start).1)
        };
        let reset_after = Duration::from_micros(end.saturating_sub(now_micros));

        if state.used.saturating_add(cost) > self.limit {
            let decision = Decision {
                allowed: false,
                remaining: self.limit.saturating_sub(state.used),
                // The whole quota returns when the period ends; a cost above the limit
                // never passes, and the end of the period is still the honest answer.
                retry_after: reset_after,
                reset_after,
            };
            return (decision, state);
        }
        let used = state.used + cost;
        let decision = Decision {
            allowed: true,
            remaining: self.limit - used,
            retry_after: Duration::ZERO,
            reset_after,
        };
        (decision, QuotaState { used, ..state })
    }
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day), with
/// the era-based method: 400-year eras of 146,097 days, years starting in March so
/// that the leap day falls at the end.
pub(crate) fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the origin to 0000-03-01, which starts an era.
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March: 0 is March, 11 is February.
    let march_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Converts a proleptic Gregorian date from 1970 on to days since 1970-01-01; the
/// inverse of [`civil_from_days`].
pub(crate) fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year % 400;
    let march_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * march_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = MICROS_PER_DAY;

    /// Returns Unix microseconds at 00:00 UTC of a date.
    fn date(year: u64, month: u64, day: u64) -> u64 {
        days_from_civil(year, month, day) * DAY
    }

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        for days in (0..200_000).step_by(7) {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(
                days_from_civil(year, month, day),
                days,
                "{year}-{month}-{day}"
            );
        }
    }

    #[test]
    fn month_bounds_follow_the_calendar() {
        let cases = [
            // (a time inside the month, its first day, the first day of the next)
            (date(2026, 1, 31) + 5, date(2026, 1, 1), date(2026, 2, 1)),
            (date(2026, 2, 14), date(2026, 2, 1), date(2026, 3, 1)),
            (
                date(2028, 2, 29) + DAY - 1,
                date(2028, 2, 1),
                date(2028, 3, 1),
            ),
            (
                date(2026, 12, 31) + DAY - 1,
                date(2026, 12, 1),
                date(2027, 1, 1),
            ),
            (date(2100, 2, 28), date(2100, 2, 1), date(2100, 3, 1)),
        ];
        for (now, start, end) in cases {
            assert_eq!(CalendarPeriod::Month.bounds(now), (start, end), "at {now}");
        }
        // 2100 is not a leap year: February has 28 days.
        assert_eq!(date(2100, 3, 1) - date(2100, 2, 1), 28 * DAY);
        assert_eq!(date(2028, 3, 1) - date(2028, 2, 1), 29 * DAY);
    }

    #[test]
    fn quota_rolls_over_at_month_end() {
        let quota = CalendarQuota::new(2, CalendarPeriod::Month).unwrap();
        let last_micro_of_january = date(2026, 2, 1) - 1;
        let mut state = QuotaState::default();
        for _ in 0..2 {
            let (decision, next) = quota.decide(state, date(2026, 1, 10), 1);
            assert!(decision.allowed);
            state = next;
        }
        let (rejected, state) = quota.decide(state, last_micro_of_january, 1);
        assert!(!rejected.allowed);
        assert_eq!(rejected.retry_after, Duration::from_micros(1));
        let (february, _) = quota.decide(state, date(2026, 2, 1), 1);
        assert!(february.allowed);
        assert_eq!(february.remaining, 1);
        assert_eq!(february.reset_after, Duration::from_micros(28 * DAY));
    }

    #[test]
    fn quota_rolls_over_at_day_and_minute() {
        let daily = CalendarQuota::new(1, CalendarPeriod::Day).unwrap();
        let noon = date(2026, 6, 30) + DAY / 2;
        let (first, state) = daily.decide(QuotaState::default(), noon, 1);
        assert!(first.allowed);
        let (second, state) = daily.decide(state, noon + 1, 1);
        assert!(!second.allowed);
        assert_eq!(second.retry_after, Duration::from_micros(DAY / 2 - 1));
        assert!(daily.decide(state, date(2026, 7, 1), 1).0.allowed);

        let minutely = CalendarQuota::new(3, CalendarPeriod::Minute).unwrap();
        let start = date(2026, 6, 30) + 59_000_000;
        let (decision, state) = minutely.decide(QuotaState::default(), start, 3);
        assert!(decision.allowed);
        assert!(!minutely.decide(state, start + 999_999, 1).0.allowed);
        assert!(minutely.decide(state, start + 1_000_000, 3).0.allowed);
    }

    #[test]
    fn clock_step_back_keeps_the_later_period() {
        let quota = CalendarQuota::new(1, CalendarPeriod::Day).unwrap();
        let (_, state) = quota.decide(QuotaState::default(), date(2026, 3, 2), 1);
        let (decision, kept) = quota.decide(state, date(2026, 3, 1) + 10, 1);
        assert!(
            !decision.allowed,
            "a step back must not grant a fresh quota"
        );
        assert_eq!(kept, state);
    }

    #[test]
    fn cost_counts_against_quota() {
        let quota = CalendarQuota::new(10, CalendarPeriod::Hour).unwrap();
        let (decision, state) = quota.decide(QuotaState::default(), 0, 7);
        assert_eq!(decision.remaining, 3);
        let (decision, _) = quota.decide(state, 1, 4);
        assert!(!decision.allowed);
        assert_eq!(decision.remaining, 3);
    }
}
