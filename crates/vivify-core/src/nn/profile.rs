//! Where a forward pass spends its time, by kind of operation: `VIVIFY_PROFILE=1` makes each
//! scope synchronize the device on entry and exit and charge its time, less that of the scopes
//! inside it, to its name. Off (the default) a scope costs one flag check. The synchronizing
//! slows the run down, so the figures are shares, not speeds; `vivify bench-unet` prints them.

use candle_core::Device;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Instant;

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("VIVIFY_PROFILE").is_some_and(|v| v != "0"))
}

struct Open {
    start: Instant,
    /// Time spent in scopes opened inside this one.
    inner: f64,
}

#[derive(Default)]
struct State {
    stack: Vec<Open>,
    /// name -> (exclusive seconds, calls)
    totals: BTreeMap<&'static str, (f64, u64)>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Charges the time until the guard drops to `name`.
pub struct Scope {
    name: &'static str,
    device: Option<Device>,
}

/// Opens a scope on `device` (a no-op unless VIVIFY_PROFILE is set).
pub fn scope(name: &'static str, device: &Device) -> Scope {
    if !enabled() {
        return Scope { name, device: None };
    }
    let _ = device.synchronize();
    STATE.with(|s| {
        s.borrow_mut().stack.push(Open {
            start: Instant::now(),
            inner: 0.0,
        })
    });
    Scope {
        name,
        device: Some(device.clone()),
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let Some(device) = self.device.take() else {
            return;
        };
        let _ = device.synchronize();
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let Some(open) = s.stack.pop() else { return };
            let elapsed = open.start.elapsed().as_secs_f64();
            if let Some(parent) = s.stack.last_mut() {
                parent.inner += elapsed;
            }
            let entry = s.totals.entry(self.name).or_default();
            entry.0 += elapsed - open.inner;
            entry.1 += 1;
        });
    }
}

/// The totals so far, (name, exclusive seconds, calls), largest first; empty when off.
pub fn totals() -> Vec<(&'static str, f64, u64)> {
    let mut rows: Vec<_> = STATE.with(|s| {
        s.borrow()
            .totals
            .iter()
            .map(|(name, (secs, calls))| (*name, *secs, *calls))
            .collect()
    });
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    rows
}

/// Forgets the totals (after a warm-up run).
pub fn reset() {
    STATE.with(|s| s.borrow_mut().totals.clear());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_charge_their_own_time_when_enabled() {
        // The flag is read once per process; this test only checks the bookkeeping when on.
        if !enabled() {
            let _s = scope("x", &Device::Cpu);
            assert!(totals().is_empty());
            return;
        }
        reset();
        {
            let _outer = scope("outer", &Device::Cpu);
            std::thread::sleep(std::time::Duration::from_millis(20));
            let _inner = scope("inner", &Device::Cpu);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let t = totals();
        assert_eq!(t.len(), 2);
        assert!(
            t.iter()
                .all(|(_, secs, calls)| *secs >= 0.015 && *calls == 1)
        );
    }
}
