//! The only types that cross the network: agent <-> server messages and public API shapes.
