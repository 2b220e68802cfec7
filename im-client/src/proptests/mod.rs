//! Property tests (the `proptest` crate) of the client's plain state
//! machines, run against small models in proptest's state-machine style by
//! hand: a generated `Vec` of operations is applied to the real type and to
//! a model, and the invariants are checked after every step.

mod outbox;
mod sync;
