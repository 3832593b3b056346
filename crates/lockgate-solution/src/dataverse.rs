//! dataverse (in progress).
