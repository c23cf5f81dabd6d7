//! meridian: an authoritative DNS server for multi-cluster Kubernetes that answers every query
//! with the nearest healthy cluster. See README.md for the architecture.

pub mod admin;
pub mod app;
pub mod catalog;
pub mod client;
pub mod config;
pub mod dns;
pub mod events;
pub mod explain;
pub mod geo;
pub mod health;
pub mod metrics;
pub mod model;
pub mod routing;
pub mod snapshot;
pub mod source;
