//! Rate limits: how many messages, and how many joins, one connection may send.
//!
//! Owns the [`Quota`] (a burst, refilled at a steady rate: a token bucket), the
//! [`Bucket`] each connection keeps per quota (8 bytes: the bucket is kept as the time
//! at which it will be full again, the GCRA form, so nothing runs between messages), and
//! the [`Verdict`] on each message: passed, limited, or so far past the limit that the
//! connection should go. Must not know messages or connections: the session counts, and
//! decides what a limited message gets.

use std::sync::OnceLock;
use std::time::Instant;

/// A client that goes on sending while limited is closed after this many bursts' worth
/// of refused messages (counted until its bucket is full again).
pub(crate) const CLOSE_AFTER_BURSTS: u32 = 10;

/// A burst of `burst` messages, refilled at one per `interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Quota {
    burst: u32,
    per_sec: u32,
    /// Nanoseconds per message at the sustained rate.
    interval: u64,
}

impl Quota {
    /// `burst` messages at once, refilled at `per_sec` a second; `None` (no limit) when
    /// `per_sec` is 0.
    pub(crate) fn per_second(burst: u32, per_sec: u32) -> Option<Quota> {
        (per_sec > 0).then(|| Quota {
            burst: burst.max(1),
            per_sec,
            interval: 1_000_000_000 / u64::from(per_sec),
        })
    }

    /// `burst` at once, refilled at one per `interval` (rates below one a second, for tests).
    #[cfg(test)]
    pub(crate) fn every(burst: u32, interval: std::time::Duration) -> Quota {
        Quota {
            burst: burst.max(1),
            per_sec: 0,
            interval: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    pub(crate) fn burst(&self) -> u32 {
        self.burst
    }

    pub(crate) fn per_sec(&self) -> u32 {
        self.per_sec
    }

    /// Refused messages after which a client still sending is closed.
    pub(crate) fn close_after(&self) -> u32 {
        self.burst.saturating_mul(CLOSE_AFTER_BURSTS)
    }

    /// Counts one message at `now` (nanoseconds on [`now`]'s clock) against `bucket`.
    pub(crate) fn check(&self, bucket: &mut Bucket, now: u64) -> Verdict {
        if bucket.full_at <= now {
            // Full again: whatever was refused before is forgiven.
            bucket.refused = 0;
        }
        let full_at = bucket.full_at.max(now);
        let tolerance = u64::from(self.burst - 1).saturating_mul(self.interval);
        if full_at - now <= tolerance {
            bucket.full_at = full_at.saturating_add(self.interval);
            return Verdict::Passed;
        }
        bucket.refused = bucket.refused.saturating_add(1);
        match bucket.refused {
            1 => Verdict::Limited { first: true },
            n if n < self.close_after() => Verdict::Limited { first: false },
            n => Verdict::Exceeded {
                first: n == self.close_after(),
            },
        }
    }
}

/// One connection's use of one quota.
#[derive(Default)]
pub(crate) struct Bucket {
    /// When the bucket will be full again (nanoseconds on [`now`]'s clock).
    full_at: u64,
    /// Messages refused since the bucket was last full.
    refused: u32,
}

/// What a message gets from its quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Passed,
    /// Over the limit: refuse this message. `first` for the first since the bucket was full.
    Limited {
        first: bool,
    },
    /// Refused [`Quota::close_after`] times since the bucket was last full: close the
    /// connection (`first` on the message that reached it).
    Exceeded {
        first: bool,
    },
}

/// Nanoseconds since the first call: the clock every bucket reads.
pub(crate) fn now() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let elapsed = START.get_or_init(Instant::now).elapsed();
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_burst_passes_then_the_rate_refills_it() {
        let quota = Quota::per_second(5, 2).unwrap();
        let mut bucket = Bucket::default();
        let t = 10 * SEC;
        for _ in 0..5 {
            assert_eq!(quota.check(&mut bucket, t), Verdict::Passed);
        }
        assert_eq!(
            quota.check(&mut bucket, t),
            Verdict::Limited { first: true }
        );
        assert_eq!(
            quota.check(&mut bucket, t + SEC / 4),
            Verdict::Limited { first: false }
        );
        // Half a second refills one at 2/s.
        assert_eq!(quota.check(&mut bucket, t + SEC / 2), Verdict::Passed);
        assert_eq!(
            quota.check(&mut bucket, t + SEC / 2),
            Verdict::Limited { first: false }
        );
        // Once full again, the whole burst passes and earlier refusals are forgotten.
        let later = t + 10 * SEC;
        for _ in 0..5 {
            assert_eq!(quota.check(&mut bucket, later), Verdict::Passed);
        }
        assert_eq!(
            quota.check(&mut bucket, later),
            Verdict::Limited { first: true }
        );
    }

    #[test]
    fn the_sustained_rate_passes_forever() {
        let quota = Quota::per_second(1, 1000).unwrap();
        let mut bucket = Bucket::default();
        for i in 0..10_000 {
            let at = SEC + i * SEC / 1000;
            assert_eq!(quota.check(&mut bucket, at), Verdict::Passed, "message {i}");
        }
    }

    #[test]
    fn a_client_that_keeps_going_is_told_to_go_once() {
        let quota = Quota::every(3, Duration::from_secs(3600));
        let mut bucket = Bucket::default();
        let verdicts: Vec<Verdict> = (0..40).map(|_| quota.check(&mut bucket, SEC)).collect();
        assert_eq!(verdicts[..3], [Verdict::Passed; 3]);
        assert_eq!(verdicts[3], Verdict::Limited { first: true });
        assert_eq!(quota.close_after(), 30);
        assert_eq!(verdicts[4..32], [Verdict::Limited { first: false }; 28]);
        assert_eq!(verdicts[32], Verdict::Exceeded { first: true });
        assert_eq!(verdicts[33], Verdict::Exceeded { first: false });
    }

    #[test]
    fn zero_per_second_is_no_limit() {
        assert_eq!(Quota::per_second(100, 0), None);
        let quota = Quota::per_second(0, 10).unwrap();
        assert_eq!(quota.burst(), 1, "a burst of at least one");
        assert!(now() <= now());
    }
}
