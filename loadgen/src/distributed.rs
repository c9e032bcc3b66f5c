//! One worker's share of a run spread over several machines (`loadgen run --worker I/N
//! --start-at T`): which part of each cell's connections and requests it takes, and when
//! each cell starts. The schedule split itself (ticket k to worker k mod N) is in
//! `engine::Share` and `engine/worker.rs`; the merge is `report merge`.

use std::time::{Duration, SystemTime};

use crate::plan::Plan;

/// One worker of a run spread over several machines.
#[derive(Debug, Clone, PartialEq)]
pub struct Distributed {
    /// 0-based.
    pub index: u32,
    pub count: u32,
    /// The shared start of the first cell; without it each worker starts when ready.
    pub start_at: Option<SystemTime>,
}

/// Time between the shared starts of consecutive cells of a distributed run, beyond the
/// cell's warmup, measured window and drain: room for each worker's target set-up.
pub const CELL_GAP: Duration = Duration::from_secs(5);

impl Distributed {
    /// Parse `I/N` (1-based I, as a user counts; `JOB_COMPLETION_INDEX` is 0-based and
    /// converted by the caller).
    pub fn parse_share(s: &str) -> Result<(u32, u32), String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}`: expected I/N, e.g. 2/3"))?;
        let i: u32 = i
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: I is not a whole number"))?;
        let n: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: N is not a whole number"))?;
        if n == 0 || n > MAX_WORKERS {
            return Err(format!("`{s}`: N must be 1..{MAX_WORKERS}"));
        }
        if i == 0 || i > n {
            return Err(format!(
                "`{s}`: I must be 1..{n} (workers are counted from 1)"
            ));
        }
        Ok((i - 1, n))
    }

    /// This worker's part of `total` (connections, closed-loop requests): as even as
    /// possible, the first `total mod N` workers one more.
    pub fn part(&self, total: u64) -> u64 {
        let n = u64::from(self.count);
        total / n + u64::from(u64::from(self.index) < total % n)
    }

    /// The time each cell's schedule takes from its shared start to the next cell's.
    pub fn cell_slot(plan: &Plan) -> Option<Duration> {
        let window = plan.load.duration.map(|d| d.0)?;
        Some(
            plan.load.warmup.0
                + window
                + plan.request.timeout.0
                + Duration::from_secs(1)
                + CELL_GAP,
        )
    }
}

/// The most workers one distributed run may have.
pub const MAX_WORKERS: u32 = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_parse_one_based_and_parts_add_up() {
        assert_eq!(Distributed::parse_share("2/3"), Ok((1, 3)));
        for (bad, want) in [
            ("0/3", "I must be 1..3"),
            ("4/3", "I must be 1..3"),
            ("1/0", "N must be 1..1000"),
            ("3", "expected I/N"),
            ("a/2", "I is not a whole number"),
        ] {
            let e = Distributed::parse_share(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
        for (total, n) in [(16u64, 3u32), (2, 2), (7, 7), (100, 6)] {
            let parts: Vec<u64> = (0..n)
                .map(|index| {
                    Distributed {
                        index,
                        count: n,
                        start_at: None,
                    }
                    .part(total)
                })
                .collect();
            assert_eq!(parts.iter().sum::<u64>(), total);
            assert!(
                parts.iter().max().unwrap() - parts.iter().min().unwrap() <= 1,
                "{parts:?}"
            );
        }
    }
}
