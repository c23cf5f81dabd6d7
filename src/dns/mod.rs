//! The DNS front: wire parsing, answering, sockets.

pub mod answer;
pub mod rrl;
pub mod server;
pub mod wire;
