//! Batching of Redis decisions per connection slot.
//!
//! Each slot has a lane with at most one script call in flight. A decision that finds
//! its lane idle sends its own call at once, so a lone decision waits for nothing.
//! Decisions that arrive while a call is in flight queue on the lane, and when the
//! call returns they go out together as one script call with one key per decision.
//! Redis then runs Lua once for the whole batch instead of once per decision. The
//! script stays atomic, so batched decisions are as exact as single ones.

use std::mem;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use gatehouse_core::limit::Decision;
use gatehouse_core::limit::redis_script::{ScriptArgument, decision_from_reply};
use redis::{Cmd, RedisError, Value};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Failure, RedisShared};

/// Decisions per script call at most, so one call never holds Redis's single thread
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
    /// Whether a call is in flight, or about to be sent, on this lane.
    busy: bool,
    queue: Vec<Queued>,
}

/// The queue of one connection slot.
#[derive(Default)]
pub(super) struct Lane {
    state: Mutex<LaneState>,
}

impl Lane {
    fn lock(&self) -> MutexGuard<'_, LaneState> {
        // The state stays consistent under every panic: each change is one assignment.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What [`claim`] returns: either the lane is now the caller's to send on, or the
/// caller's decision is queued and arrives on the receiver.
pub(super) enum Claim {
    Send(Busy, Entry),
    Queued(oneshot::Receiver<Outcome>),
}

/// Claims lane `index` for a call of `entry`, or queues `entry` when a call is in
/// flight there. `deadline` is when the caller stops waiting.
pub(super) fn claim(
    shared: &Arc<RedisShared>,
    index: usize,
    entry: Entry,
    deadline: Instant,
) -> Claim {
    let mut state = shared.lanes[index].lock();
    if state.busy {
        let (reply, receiver) = oneshot::channel();
        state.queue.push(Queued {
            entry,
            deadline,
            reply,
        });
        return Claim::Queued(receiver);
    }
    state.busy = true;
    let busy = Busy {
        shared: Arc::clone(shared),
        index,
    };
    Claim::Send(busy, entry)
}

/// Ownership of a busy lane. Dropping it, when its call returned or was cancelled,
/// sends what queued meanwhile from a new task, or marks the lane idle.
pub(super) struct Busy {
    shared: Arc<RedisShared>,
    index: usize,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let lane = &self.shared.lanes[self.index];
        let mut state = lane.lock();
        if state.queue.is_empty() {
            state.busy = false;
            return;
        }
        drop(state);
        let next = Busy {
            shared: Arc::clone(&self.shared),
            index: self.index,
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(flush(next));
            }
            Err(_) => {
                // Outside a runtime, as while it shuts down, nothing can send the
                // queue: dropping it closes each waiter's channel, which fails its
                // decision, and dropping `next` finds the lane empty.
                let queue = mem::take(&mut lane.lock().queue);
                drop(queue);
            }
        }
    }
}

/// Sends one batch of what queued on the lane of `busy`, then drops `busy`, which
/// sends the next batch from a new task if more queued.
async fn flush(busy: Busy) {
    let shared = Arc::clone(&busy.shared);
    let batch = {
        let mut state = shared.lanes[busy.index].lock();
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
    let outcomes =
        match tokio::time::timeout_at(deadline, shared.evaluate(busy.index, &entries)).await {
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
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        // A caller that stopped waiting dropped its receiver; nothing to tell it.
        let _ = reply.send(outcome);
    }
    drop(busy);
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

/// Why one decision of a script reply failed.
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
