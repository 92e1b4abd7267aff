//! Rate-limit algorithms, pure functions of a stored state and the time, so every
//! store (memory, Redis, Durable Objects) applies exactly the same rules.

pub mod gcra;
pub mod memory;
pub mod window;

pub use gcra::{Decision, GcraLimit};
pub use memory::MemoryCounters;
pub use window::{WindowLimit, WindowState};
