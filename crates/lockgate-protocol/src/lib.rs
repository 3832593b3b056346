//! The only types that cross the network: the agent protocol ([`agent`]: lease, heartbeat, events,
//! artifacts, finish) and the shapes of the public REST API ([`api`]). Both sides serialise these as JSON.

pub mod agent;
pub mod api;
