//! A hand-driven clock and the executor that drives it, so the in-process runner tests
//! timeouts without sleeping.
//!
//! Sleeps register deadlines. [`drive`] polls a future until it is idle (pending with no
//! wake-up), then moves time to the earliest deadline and wakes its sleepers, like
//! Tokio's paused clock. Time therefore only moves when nothing else can happen, and a
//! 15-second timeout takes microseconds.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use gatehouse_core::platform::Clock;

/// Wall-clock time at which every manual clock starts: 2023-11-14T22:13:20Z. A fixed
/// value keeps runs reproducible.
const START_UNIX_MILLIS: u64 = 1_700_000_000_000;

/// A clock whose time moves only when [`drive`] finds every task idle.
///
/// Clones share one time line. It is single-threaded, as the core's platform traits
/// allow.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    state: Rc<ClockState>,
}

#[derive(Debug, Default)]
struct ClockState {
    now: Cell<Duration>,
    next_id: Cell<u64>,
    /// Pending sleeps by (deadline, id), each with the waker of its last poll.
    timers: RefCell<BTreeMap<(Duration, u64), Option<Waker>>>,
}

impl ManualClock {
    /// Creates a clock at monotonic time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the current monotonic time.
    pub fn now(&self) -> Duration {
        self.state.now.get()
    }

    /// Returns the earliest deadline of a pending sleep.
    fn earliest_deadline(&self) -> Option<Duration> {
        self.state
            .timers
            .borrow()
            .keys()
            .next()
            .map(|(deadline, _)| *deadline)
    }

    /// Moves time to `deadline` (never backwards) and wakes every sleep due by then.
    fn advance_to(&self, deadline: Duration) {
        if deadline > self.now() {
            self.state.now.set(deadline);
        }
        let now = self.now();
        let due: Vec<Waker> = self
            .state
            .timers
            .borrow_mut()
            .range_mut(..=(now, u64::MAX))
            .filter_map(|(_, waker)| waker.take())
            .collect();
        // Wake after releasing the borrow, because a waker may poll nothing but could
        // in principle touch the clock.
        for waker in due {
            waker.wake();
        }
    }
}

impl Clock for ManualClock {
    fn unix_millis(&self) -> u64 {
        START_UNIX_MILLIS + self.now().as_millis() as u64
    }

    fn monotonic(&self) -> Duration {
        self.now()
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> {
        Sleep {
            clock: self.clone(),
            duration,
            key: None,
        }
    }
}

/// A sleep on a [`ManualClock`]. The deadline is fixed at the first poll, as with
/// `async fn` sleeps that start when awaited.
#[derive(Debug)]
struct Sleep {
    clock: ManualClock,
    duration: Duration,
    key: Option<(Duration, u64)>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let now = self.clock.now();
        let key = match self.key {
            Some(key) => key,
            None => {
                let id = self.clock.state.next_id.get();
                self.clock.state.next_id.set(id + 1);
                let key = (now + self.duration, id);
                self.key = Some(key);
                key
            }
        };
        let mut timers = self.clock.state.timers.borrow_mut();
        if key.0 <= now {
            timers.remove(&key);
            return Poll::Ready(());
        }
        timers.insert(key, Some(cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for Sleep {
    /// Unregisters a sleep that was cancelled, such as a timeout timer after the
    /// upstream responded, so it no longer counts as a deadline to advance to.
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.clock.state.timers.borrow_mut().remove(&key);
        }
    }
}

/// Limits on one [`drive`] call.
#[derive(Debug, Clone, Copy)]
pub struct DriveLimits {
    /// Maximum manual-clock time the future may take.
    pub virtual_time: Duration,
    /// Maximum real time spent polling, which catches a future that keeps waking itself.
    pub real_time: Duration,
}

/// Sets a flag when woken, so [`drive`] can tell an idle future from a busy one.
struct WakeFlag(AtomicBool);

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Runs `future` to completion on the current thread, advancing `clock` whenever the
/// future is idle.
///
/// Fails when the future is idle with no sleep pending (it would wait forever, because
/// nothing outside can wake it in process), or when it exceeds `limits`.
pub fn drive<F: Future>(
    clock: &ManualClock,
    future: F,
    limits: DriveLimits,
) -> Result<F::Output, String> {
    let flag = Arc::new(WakeFlag(AtomicBool::new(false)));
    let waker = Waker::from(Arc::clone(&flag));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    let started_real = Instant::now();
    let started_virtual = clock.now();

    loop {
        flag.0.store(false, Ordering::SeqCst);
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return Ok(output);
        }
        if started_real.elapsed() > limits.real_time {
            return Err(format!(
                "did not finish within {} ms of real time",
                limits.real_time.as_millis()
            ));
        }
        if flag.0.load(Ordering::SeqCst) {
            continue;
        }
        let Some(deadline) = clock.earliest_deadline() else {
            return Err("stalled: the request is waiting, but not on any timer".to_owned());
        };
        if deadline.saturating_sub(started_virtual) > limits.virtual_time {
            return Err(format!(
                "did not finish within {} ms of manual-clock time",
                limits.virtual_time.as_millis()
            ));
        }
        clock.advance_to(deadline);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests report failures by panicking")]
mod tests {
    use futures::future::{Either, select};

    use super::*;

    const LIMITS: DriveLimits = DriveLimits {
        virtual_time: Duration::from_secs(60),
        real_time: Duration::from_secs(5),
    };

    #[test]
    fn sleep_advances_exactly() {
        let clock = ManualClock::new();
        let sleeper = clock.clone();
        drive(
            &clock,
            async move { sleeper.sleep(Duration::from_millis(1500)).await },
            LIMITS,
        )
        .unwrap();
        assert_eq!(clock.now(), Duration::from_millis(1500));
        assert_eq!(clock.unix_millis(), START_UNIX_MILLIS + 1500);
    }

    #[test]
    fn earlier_timer_wins_and_later_is_dropped() {
        let clock = ManualClock::new();
        let sleeper = clock.clone();
        let winner = drive(
            &clock,
            async move {
                let slow = pin!(sleeper.sleep(Duration::from_millis(1500)));
                let fast = pin!(sleeper.sleep(Duration::from_millis(200)));
                match select(slow, fast).await {
                    Either::Left(_) => "slow",
                    Either::Right(_) => "fast",
                }
            },
            LIMITS,
        )
        .unwrap();
        assert_eq!(winner, "fast");
        assert_eq!(clock.now(), Duration::from_millis(200));
        assert_eq!(clock.earliest_deadline(), None);
    }

    #[test]
    fn waiting_forever_is_reported() {
        let clock = ManualClock::new();
        let error = drive(&clock, futures::future::pending::<()>(), LIMITS).unwrap_err();
        assert!(error.contains("stalled"), "{error}");
    }

    #[test]
    fn virtual_time_limit_enforced() {
        let clock = ManualClock::new();
        let sleeper = clock.clone();
        let error = drive(
            &clock,
            async move { sleeper.sleep(Duration::from_secs(61)).await },
            LIMITS,
        )
        .unwrap_err();
        assert!(error.contains("manual-clock"), "{error}");
    }
}
