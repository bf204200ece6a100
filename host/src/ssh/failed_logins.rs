//! Failed logins per source address, across connections. Past a threshold
//! the address is refused for a cool-down, so password guessing cannot go on
//! at full speed (SFTPGo's defender and fail2ban are the models). Other
//! addresses are not affected.
//!
//! The table is bounded: when it is full, forgotten entries go first, then
//! the ones whose first failure is oldest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most addresses remembered at once (about 40 bytes each).
const MAX_TRACKED: usize = 16_384;

pub struct FailedLogins {
    /// Failures that start a ban; 0 turns the whole thing off.
    threshold: u32,
    /// How long failures are remembered, and how long a ban lasts.
    period: Duration,
    capacity: usize,
    table: Mutex<HashMap<IpAddr, Record>>,
}

struct Record {
    /// Failures since `first`.
    failures: u32,
    first: Instant,
    banned_until: Option<Instant>,
}

impl Record {
    /// Whether the record no longer says anything (window over, no ban).
    fn expired(&self, now: Instant, period: Duration) -> bool {
        let banned = self.banned_until.is_some_and(|until| now < until);
        !banned && now.duration_since(self.first) >= period
    }
}

impl FailedLogins {
    pub fn new(threshold: u32, period: Duration) -> Self {
        Self::with_capacity(threshold, period, MAX_TRACKED)
    }

    fn with_capacity(threshold: u32, period: Duration, capacity: usize) -> Self {
        Self { threshold, period, capacity: capacity.max(1), table: Mutex::new(HashMap::new()) }
    }

    fn table(&self) -> MutexGuard<'_, HashMap<IpAddr, Record>> {
        // Every update is a single step: a poisoned table is still consistent.
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `ip` is refused right now.
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        if self.threshold == 0 {
            return false;
        }
        let now = Instant::now();
        self.table().get(&ip).and_then(|r| r.banned_until).is_some_and(|until| now < until)
    }

    /// Counts a failed login from `ip`; the one that reaches the threshold
    /// starts the ban (and is the only one logged).
    pub fn record_failure(&self, ip: IpAddr) {
        if self.threshold == 0 {
            return;
        }
        let now = Instant::now();
        let mut table = self.table();
        if !table.contains_key(&ip) && table.len() >= self.capacity {
            self.make_room(&mut table, now);
        }
        let record = table.entry(ip).or_insert(Record { failures: 0, first: now, banned_until: None });
        if record.banned_until.is_some_and(|until| now < until) {
            // Already refused; failures meanwhile do not extend the ban.
            return;
        }
        if record.expired(now, self.period) {
            *record = Record { failures: 0, first: now, banned_until: None };
        }
        record.failures += 1;
        if record.failures >= self.threshold {
            record.banned_until = Some(now + self.period);
            record.failures = 0;
            record.first = now;
            tracing::warn!(
                peer = %ip,
                "{} failed logins from {ip}; refusing it for {:?}",
                self.threshold,
                self.period
            );
            metrics::counter!("wasftp_addresses_banned_total").increment(1);
        }
    }

    fn make_room(&self, table: &mut HashMap<IpAddr, Record>, now: Instant) {
        table.retain(|_, r| !r.expired(now, self.period));
        while table.len() >= self.capacity {
            // Bans are kept longest: a flood of new addresses should not lift them.
            let banned = |r: &Record| r.banned_until.is_some_and(|until| now < until);
            let Some(oldest) = table.iter().min_by_key(|(_, r)| (banned(r), r.first)).map(|(ip, _)| *ip) else {
                break;
            };
            table.remove(&oldest);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.table().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn threshold_bans_only_that_address_for_the_period() {
        let failures = FailedLogins::new(3, Duration::from_millis(200));
        failures.record_failure(ip(2));
        failures.record_failure(ip(2));
        assert!(!failures.is_banned(ip(2)));
        failures.record_failure(ip(3));
        failures.record_failure(ip(2));
        assert!(failures.is_banned(ip(2)));
        assert!(!failures.is_banned(ip(3)), "other addresses are not affected");
        std::thread::sleep(Duration::from_millis(250));
        assert!(!failures.is_banned(ip(2)), "the ban ends");
        failures.record_failure(ip(2));
        assert!(!failures.is_banned(ip(2)), "counting starts again after the ban");
    }

    #[test]
    fn zero_threshold_never_bans() {
        let failures = FailedLogins::new(0, Duration::from_secs(60));
        for _ in 0..100 {
            failures.record_failure(ip(2));
        }
        assert!(!failures.is_banned(ip(2)));
    }

    #[test]
    fn table_is_bounded() {
        let failures = FailedLogins::with_capacity(2, Duration::from_secs(60), 8);
        failures.record_failure(ip(1));
        failures.record_failure(ip(1));
        for last in 2..=200 {
            failures.record_failure(ip(last));
        }
        assert!(failures.tracked() <= 8, "{} addresses tracked", failures.tracked());
        assert!(failures.is_banned(ip(1)), "a ban outlives a flood of other addresses");
    }
}
