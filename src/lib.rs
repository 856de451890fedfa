//! pagegate: a reverse-proxy authentication gateway.
//!
//! A request travels `server` (accept, TLS, HTTP/1.1 or HTTP/2) → `gateway` (edge checks and
//! pagegate's own endpoints) → `routing` (host → site) → `proxy` (forward upstream, stream back).
//! `config` owns the file and its validation; `ui` the pages pagegate writes itself; `metrics`
//! and `access_log` what it tells operators.
//! See `docs/architecture.md` for the picture.

pub mod access_log;
pub mod api;
pub mod auth;
pub mod body;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod input;
pub mod mail;
pub mod metrics;
pub mod proxy;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod store;
pub mod ui;

pub use server::{RunningGateway, StartError, start};
