//! Batching of Redis decisions per connection slot.
//!
//! Each slot has a lane with at most [`MAX_CALLS_IN_FLIGHT`] script calls in flight. A
//! decision that finds its lane with nothing in flight sends its own call at once, so
//! a lone decision waits for nothing. Decisions that arrive while a call is in flight
//! queue on the lane and go out together as one script call with one key per
//! decision, from a task started when the lane has room. Redis then runs Lua once
//! for the whole batch instead of once per decision. The script stays atomic, so
//! batched decisions are as exact as single ones.

use std::mem;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use gatehouse_core::limit::Decision;
use gatehouse_core::limit::redis_script::{ScriptArgument, decision_from_reply};
use redis::{Cmd, RedisError, Value};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Failure, RedisShared};

/// Script calls in flight per lane at most. Two let the client handle the replies
/// of one batch while Redis runs the next.
const MAX_CALLS_IN_FLIGHT: usize = 2;

/// Decisions per script call at most, so one call never blocks Redis's single thread
/// for long: about 64 times the cost of one decision.
const MAX_BATCH: usize = 64;

/// Arguments per decision in a batch: the longest group the script takes (GCRA's).
/// Shorter groups are padded with empty strings, as the script expects.
const GROUP_LENGTH: usize = 5;

/// The decision of one queued request, or the cause of its failure, already counted
/// in the store's error metrics.
pub(super) type Outcome = Result<Decision, String>;

/// One decision for the script: its Redis key and arguments.
pub(super) struct Entry {
    pub(super) key: String,
    pub(super) arguments: Vec<ScriptArgument>,
}

/// A decision queued on a busy lane.
pub(super) struct Queued {
    entry: Entry,
    deadline: Instant,
    reply: oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct LaneState {
    /// Calls in flight on this lane, counting a batch task that has not sent yet.
    in_flight: usize,
    /// Whether a batch task was started and has not taken the queue yet.
    scheduled: bool,
    queue: Vec<Queued>,
}

/// The queue of one connection slot.
#[derive(Default)]
pub(super) struct Lane {
    state: Mutex<LaneState>,
}

impl Lane {
    fn lock(&self) -> MutexGuard<'_, LaneState> {
        // Every change to the state is complete before any call that could panic, so
        // the state of a poisoned lock is consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The result of [`claim`]: either the caller sends its decision itself, or the
/// decision is queued and its outcome arrives on the receiver.
pub(super) enum Claim {
    Send(Busy, Entry),
    Queued(oneshot::Receiver<Outcome>),
}

/// Claims lane `index` for a call of `entry` when nothing is in flight there, or
/// queues `entry` for the next batch. `deadline` is when the caller stops waiting.
pub(super) fn claim(
    shared: &Arc<RedisShared>,
    index: usize,
    entry: Entry,
    deadline: Instant,
) -> Claim {
    let mut state = shared.lanes[index].lock();
    if state.in_flight == 0 {
        state.in_flight = 1;
        let busy = Busy {
            shared: Arc::clone(shared),
            index,
        };
        return Claim::Send(busy, entry);
    }
    let (reply, receiver) = oneshot::channel();
    state.queue.push(Queued {
        entry,
        deadline,
        reply,
    });
    let next = schedule(shared, index, &mut state);
    drop(state);
    if let Some(next) = next {
        start_batch(next);
    }
    Claim::Queued(receiver)
}

/// One call in flight on a lane, or a batch task about to send one. Dropping it,
/// when its call returned or was cancelled, starts a batch task for what queued
/// meanwhile.
pub(super) struct Busy {
    shared: Arc<RedisShared>,
    index: usize,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.shared.lanes[self.index].lock();
        state.in_flight -= 1;
        let next = schedule(&self.shared, self.index, &mut state);
        drop(state);
        if let Some(next) = next {
            start_batch(next);
        }
    }
}

/// Counts a new batch task on lane `index` and returns its [`Busy`] when decisions
/// are queued, no task is waiting to take them, and fewer than
/// [`MAX_CALLS_IN_FLIGHT`] calls are in flight.
fn schedule(shared: &Arc<RedisShared>, index: usize, state: &mut LaneState) -> Option<Busy> {
    if state.queue.is_empty() || state.scheduled || state.in_flight >= MAX_CALLS_IN_FLIGHT {
        return None;
    }
    state.in_flight += 1;
    state.scheduled = true;
    Some(Busy {
        shared: Arc::clone(shared),
        index,
    })
}

/// Runs [`send_batch`] for `busy` on a new task.
fn start_batch(busy: Busy) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(send_batch(busy));
        }
        Err(_) => {
            // Outside a runtime, as while it shuts down, nothing can send the queue.
            // Dropping it closes each waiter's channel, which fails its decision, and
            // dropping `busy` then finds nothing to schedule.
            let queue = {
                let mut state = busy.shared.lanes[busy.index].lock();
                state.scheduled = false;
                mem::take(&mut state.queue)
            };
            drop(queue);
        }
    }
}

/// Sends what queued on the lane of `busy` as one script call and hands each caller
/// its outcome.
async fn send_batch(busy: Busy) {
    // Tasks that are ready to run often decide at once, as callers do that just
    // received their outcomes. Letting them run first puts their decisions in this
    // batch instead of the next one.
    tokio::task::yield_now().await;
    let shared = Arc::clone(&busy.shared);
    let batch = {
        let mut state = shared.lanes[busy.index].lock();
        state.scheduled = false;
        // A decision whose caller gave up (timed out or went away) is not sent, so it
        // uses no units.
        state.queue.retain(|queued| !queued.reply.is_closed());
        if state.queue.len() <= MAX_BATCH {
            mem::take(&mut state.queue)
        } else {
            state.queue.drain(..MAX_BATCH).collect()
        }
    };
    let Some(deadline) = batch.iter().map(|queued| queued.deadline).max() else {
        return;
    };

    let (entries, replies): (Vec<Entry>, Vec<_>) = batch
        .into_iter()
        .map(|queued| (queued.entry, queued.reply))
        .unzip();

    let call = shared.evaluate(busy.index, &entries);
    let outcomes = match tokio::time::timeout_at(deadline, call).await {
        Ok(outcomes) => outcomes,
        Err(_) => {
            let cause = format!("store {:?} did not answer in time", shared.name);
            entries
                .iter()
                .map(|_| {
                    shared.log.record(Failure::Timeout, None);
                    Err(cause.clone())
                })
                .collect()
        }
    };

    // Frees the lane before waking the callers, so a decision they make next can
    // start the following batch at once.
    drop(busy);
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        // A caller that stopped waiting dropped its receiver; nothing to tell it.
        let _ = reply.send(outcome);
    }
}

/// Builds the `EVALSHA` call of `entries`. One decision is sent as its own argument
/// group, the layout the Spin component uses too; several are padded to equal groups.
pub(super) fn script_call(hash: &str, entries: &[Entry]) -> Cmd {
    let mut command = redis::cmd("EVALSHA");
    command.arg(hash).arg(entries.len());
    for entry in entries {
        command.arg(entry.key.as_str());
    }
    let pad = entries.len() > 1;
    for entry in entries {
        for argument in &entry.arguments {
            match argument {
                ScriptArgument::Text(text) => command.arg(*text),
                ScriptArgument::Integer(number) => command.arg(*number),
            };
        }
        if pad {
            for _ in entry.arguments.len()..GROUP_LENGTH {
                command.arg("");
            }
        }
    }
    command
}

/// The failure of one decision in a script reply.
pub(super) enum ReplyError {
    /// The script failed for this key, as for a key holding another type.
    Server(RedisError),
    /// The reply has a shape the script never returns.
    Shape,
}

/// Reads the reply to a call of `count` decisions, one result per decision. The
/// script returns one decision with one key and a list of them with several keys.
pub(super) fn read_reply(reply: Value, count: usize) -> Vec<Result<Decision, ReplyError>> {
    if count == 1 {
        return vec![decision_of(reply)];
    }
    match reply {
        Value::Array(items) if items.len() == count => items.into_iter().map(decision_of).collect(),
        _ => (0..count).map(|_| Err(ReplyError::Shape)).collect(),
    }
}

fn decision_of(value: Value) -> Result<Decision, ReplyError> {
    let items = match value {
        Value::Array(items) => items,
        Value::ServerError(error) => return Err(ReplyError::Server(error.into())),
        _ => return Err(ReplyError::Shape),
    };
    let mut numbers = [0_i64; 4];
    if items.len() != numbers.len() {
        return Err(ReplyError::Shape);
    }
    for (number, item) in numbers.iter_mut().zip(items) {
        let Value::Int(value) = item else {
            return Err(ReplyError::Shape);
        };
        *number = value;
    }
    decision_from_reply(&numbers).ok_or(ReplyError::Shape)
}
