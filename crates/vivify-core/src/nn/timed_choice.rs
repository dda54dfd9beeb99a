//! Picks the fastest of several ways to compute the same result by running each on the real
//! inputs, as `torch.backends.cudnn.benchmark` does for cuDNN's algorithms: which way is fastest
//! depends on the card and the shape, and no heuristic got it right at every shape on the H200
//! (bench/gpu/RESULTS.md). `nn::cuda::conv_path` uses it per convolution shape. Not behind the
//! `cuda` feature so that CPU tests cover it.

use candle_core::Result;
use std::time::Instant;

/// What timing one way gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Milliseconds per run.
    Ms(f64),
    /// The way does not apply to these inputs (no kernel for the shape).
    Unavailable,
    /// The way failed; the error is reported, not raised: another way may still run.
    Failed(String),
}

/// Runs each candidate once (a warm-up, which also builds whatever it caches per shape), then
/// `runs` more times between two `sync`s (the device finishes queued work), and gives each one's
/// outcome in the candidates' order. A candidate answers Ok(false) where it does not apply.
/// Only `sync`'s own error is raised: after a failed synchronisation nothing else would run.
pub fn time_each<P: Copy, F: Fn() -> Result<bool>>(
    candidates: &[(P, F)],
    runs: usize,
    sync: &dyn Fn() -> Result<()>,
) -> Result<Vec<(P, Outcome)>> {
    let runs = runs.max(1);
    let mut outcomes = Vec::with_capacity(candidates.len());
    for (path, run) in candidates {
        let path = *path;
        let warm = run();
        sync()?;
        let outcome = match warm {
            Ok(false) => Outcome::Unavailable,
            Err(e) => Outcome::Failed(e.to_string()),
            Ok(true) => {
                let start = Instant::now();
                let mut failed = None;
                for _ in 0..runs {
                    if let Err(e) = run() {
                        failed = Some(e.to_string());
                        break;
                    }
                }
                sync()?;
                match failed {
                    Some(e) => Outcome::Failed(e),
                    None => Outcome::Ms(start.elapsed().as_secs_f64() * 1e3 / runs as f64),
                }
            }
        };
        outcomes.push((path, outcome));
    }
    Ok(outcomes)
}

/// The fastest timed way and its milliseconds; None when none ran. Ties go to the earlier
/// candidate.
pub fn fastest<P: Copy>(outcomes: &[(P, Outcome)]) -> Option<(P, f64)> {
    outcomes
        .iter()
        .filter_map(|(p, o)| match o {
            Outcome::Ms(ms) => Some((*p, *ms)),
            _ => None,
        })
        .fold(None, |best, (p, ms)| match best {
            Some((_, b)) if b <= ms => best,
            _ => Some((p, ms)),
        })
}

/// One line per way for logs: "name 0.123 ms", "name: no kernel", "name failed: why".
pub fn describe<P: Copy>(outcomes: &[(P, Outcome)], name: impl Fn(P) -> &'static str) -> String {
    outcomes
        .iter()
        .map(|(p, o)| match o {
            Outcome::Ms(ms) => format!("{} {ms:.3} ms", name(*p)),
            Outcome::Unavailable => format!("{}: no kernel", name(*p)),
            Outcome::Failed(e) => format!("{} failed: {e}", name(*p)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::time::Duration;

    #[test]
    fn the_fastest_way_that_runs_is_chosen_and_each_is_timed_after_a_warm_up() {
        let calls = [Cell::new(0), Cell::new(0), Cell::new(0), Cell::new(0)];
        let syncs = Cell::new(0);
        let counted = |i: usize, sleep_ms: u64, answer: Result<bool>| {
            let calls = &calls;
            move || -> Result<bool> {
                calls[i].set(calls[i].get() + 1);
                std::thread::sleep(Duration::from_millis(sleep_ms));
                match &answer {
                    Ok(b) => Ok(*b),
                    Err(e) => Err(candle_core::Error::Msg(e.to_string())),
                }
            }
        };
        let slow = counted(0, 6, Ok(true));
        let fast = counted(1, 1, Ok(true));
        let missing = counted(2, 0, Ok(false));
        let broken = counted(3, 0, Err(candle_core::Error::Msg("out of memory".into())));
        let sync = || {
            syncs.set(syncs.get() + 1);
            Ok(())
        };
        let candidates: [(&str, &dyn Fn() -> Result<bool>); 4] = [
            ("slow", &slow),
            ("fast", &fast),
            ("missing", &missing),
            ("broken", &broken),
        ];
        let outcomes = time_each(&candidates, 3, &sync).unwrap();
        // A warm-up and three timed runs for the ways that run, one call for the others.
        let counts: Vec<i32> = calls.iter().map(Cell::get).collect();
        assert_eq!(counts, [4, 4, 1, 1]);
        // A sync after each warm-up and after each timed batch.
        assert_eq!(syncs.get(), 6);
        let (best, ms) = fastest(&outcomes).unwrap();
        assert_eq!(best, "fast");
        assert!((1.0..6.0).contains(&ms), "{ms}");
        assert!(matches!(outcomes[0].1, Outcome::Ms(ms) if ms >= 6.0));
        assert_eq!(outcomes[2].1, Outcome::Unavailable);
        assert!(matches!(&outcomes[3].1, Outcome::Failed(e) if e.contains("out of memory")));
        let log = describe(&outcomes, |p| p);
        assert!(log.contains("missing: no kernel"), "{log}");
        assert!(log.contains("broken failed: out of memory"), "{log}");
    }

    #[test]
    fn nothing_is_chosen_when_no_way_runs_and_ties_go_to_the_first() {
        let outcomes = [
            ("a", Outcome::Unavailable),
            ("b", Outcome::Failed("x".into())),
        ];
        assert_eq!(fastest(&outcomes), None);
        let tie = [("a", Outcome::Ms(1.0)), ("b", Outcome::Ms(1.0))];
        assert_eq!(fastest(&tie), Some(("a", 1.0)));
    }

    #[test]
    fn a_failed_synchronisation_is_raised() {
        let run = || Ok(true);
        let candidates: [(u8, &dyn Fn() -> Result<bool>); 1] = [(0, &run)];
        let sync = || Err(candle_core::Error::Msg("illegal address".into()));
        let err = time_each(&candidates, 2, &sync).unwrap_err();
        assert!(err.to_string().contains("illegal address"));
    }
}
