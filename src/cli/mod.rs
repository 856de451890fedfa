//! The `pagegate` command's work, one module a command; `main.rs` parses the arguments and
//! calls in here.

pub mod backup;
pub mod check;
pub mod clients;
mod control;
pub mod demo;
pub mod health;
pub mod logging;
pub mod reload;
pub mod restore;
pub mod rotate_key;
pub mod serve;
mod signals;
