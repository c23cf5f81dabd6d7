//! One integration test binary: every test drives the real `meridian` binary over real sockets.

mod check;
mod common;
mod deploy;
mod dns;
mod drains;
mod health;
mod hostile;
mod k8s;
mod operators;
mod ops;
mod quorum;
mod reload;
mod shutdown;
mod status_page;
