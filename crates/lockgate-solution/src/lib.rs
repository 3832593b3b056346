//! Power Platform solution packages (unpack, pack, diff, check, settings, version) and the Dataverse Web API client.
//! Offline operations work on an in-memory [`SolutionPackage`] (the zip's entries) or a [`SourceTree`]
//! (the SolutionPackager folder layout); the online steps live in [`dataverse`] and [`tasks`].

pub mod check;
pub mod dataverse;
pub mod diff;
mod error;
pub mod layout;
pub mod mapping;
pub mod model;
pub mod package;
pub mod settings;
pub mod synthetic;
pub mod tasks;
pub mod version;
pub mod xml;

pub use error::SolutionError;
pub use layout::{PackageType, SourceTree, pack, unpack, unpack_both};
pub use model::Solution;
pub use package::{SolutionPackage, load_solution_input};
