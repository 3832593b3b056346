//! The Lockgate server: HTTP API, web UI, Git hosting, scheduler, checks and approvals.
