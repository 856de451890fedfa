//! The `pagegate` command's work, one module a command; `main.rs` parses the arguments and
//! calls in here.

pub mod logging;
