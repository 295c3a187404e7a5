//! The downloader's budget: wei locked in the deposits of channels we pay on, and wei spent on
//! the ones that closed, against [`DownloadConfig::budget`](super::DownloadConfig::budget).

/// What we committed to paying: `reserved` (deposits of open payer channels) plus `spent`
/// (what closed ones paid) never exceeds `limit` for a channel we chose to join. Channels we
/// did not choose (restored from the store, adopted) are counted even past the limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Budget {
    limit: u128,
    reserved: u128,
    spent: u128,
}

impl Budget {
    /// A budget of `limit` wei with nothing committed.
    pub(super) fn new(limit: u128) -> Self {
        Self {
            limit,
            reserved: 0,
            spent: 0,
        }
    }

    /// Wei that may still be committed.
    pub(super) fn room(&self) -> u128 {
        self.limit
            .saturating_sub(self.reserved.saturating_add(self.spent))
    }

    /// Reserves `deposit` if it fits in the [room](Self::room); returns whether it did.
    pub(super) fn try_reserve(&mut self, deposit: u128) -> bool {
        if deposit > self.room() {
            return false;
        }
        self.reserve(deposit);
        true
    }

    /// Reserves `deposit` whatever the room: a channel that exists already (restored or
    /// adopted) is locked in, whether or not we would have joined it.
    pub(super) fn reserve(&mut self, deposit: u128) {
        self.reserved = self.reserved.saturating_add(deposit);
    }

    /// Gives back a reserved `deposit` that was never used (the channel was not set up).
    pub(super) fn release(&mut self, deposit: u128) {
        self.reserved = self.reserved.saturating_sub(deposit);
    }

    /// A channel with `deposit` reserved closed after paying `paid` of it: the deposit is
    /// released and what was paid is spent for good.
    pub(super) fn spend(&mut self, deposit: u128, paid: u128) {
        self.release(deposit);
        self.spent = self.spent.saturating_add(paid);
    }

    /// `(reserved, spent)`.
    pub(super) fn used(&self) -> (u128, u128) {
        (self.reserved, self.spent)
    }
}

#[cfg(test)]
mod tests {
    use super::Budget;

    #[test]
    fn reserve_within_room_only() {
        let mut b = Budget::new(100);
        assert!(b.try_reserve(60));
        assert_eq!(b.room(), 40);
        assert!(!b.try_reserve(41));
        assert_eq!(b.used(), (60, 0));
        assert!(b.try_reserve(40));
        assert_eq!(b.room(), 0);
    }

    #[test]
    fn closing_spends_what_was_paid_and_frees_the_rest() {
        let mut b = Budget::new(100);
        assert!(b.try_reserve(60));
        b.spend(60, 25);
        assert_eq!(b.used(), (0, 25));
        assert_eq!(b.room(), 75);
        assert!(!b.try_reserve(76));
    }

    #[test]
    fn release_and_forced_reserve() {
        let mut b = Budget::new(10);
        b.reserve(30);
        assert_eq!(b.room(), 0);
        assert!(!b.try_reserve(1));
        b.release(30);
        assert_eq!(b.used(), (0, 0));
        assert_eq!(b.room(), 10);
        // Never underflows.
        b.release(5);
        assert_eq!(b.used(), (0, 0));
    }
}
