//! Exponential backoff of a failed on-chain duty, in chain seconds (sans-IO: time is passed in),
//! shared by the async drivers ([`Client`](crate::client::Client) and
//! [`PartyNode`](crate::party_node::PartyNode)).

/// When a failed duty may be tried again: 1 s after the first failure, doubling up to a cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Backoff {
    failures: u32,
    next_at: u64,
}

impl Backoff {
    /// Whether the duty may be tried at `now`.
    pub(crate) fn ready(&self, now: u64) -> bool {
        now >= self.next_at
    }

    /// Records a failure at `now`; the next try waits `2^(failures-1)` s, at most `max_interval`
    /// (at least 1).
    pub(crate) fn failed(&mut self, now: u64, max_interval: u64) {
        self.failures = self.failures.saturating_add(1);
        let wait = 1u64
            .checked_shl(self.failures - 1)
            .unwrap_or(u64::MAX)
            .min(max_interval.max(1));
        self.next_at = now.saturating_add(wait);
    }
}

#[cfg(test)]
mod tests {
    use super::Backoff;

    #[test]
    fn backoff_doubles_from_one_second_up_to_the_cap() {
        let mut b = Backoff::default();
        assert!(b.ready(0));
        let mut now = 1_000;
        let mut waits = Vec::new();
        for _ in 0..8 {
            b.failed(now, 10);
            assert!(!b.ready(b.next_at - 1));
            assert!(b.ready(b.next_at));
            waits.push(b.next_at - now);
            now = b.next_at;
        }
        assert_eq!(waits, [1, 2, 4, 8, 10, 10, 10, 10]);
        for _ in 0..100 {
            b.failed(now, 10);
        }
        assert_eq!(b.next_at - now, 10, "no overflow after many failures");
    }

    #[test]
    fn backoff_from_one_fixed_time_stops_at_the_cap() {
        let mut b = Backoff::default();
        b.failed(100, 8);
        assert_eq!(b.next_at, 101);
        b.failed(100, 8);
        assert_eq!(b.next_at, 102);
        for _ in 0..10 {
            b.failed(100, 8);
        }
        assert_eq!(b.next_at, 108);
    }
}
