//! The request path on arbitrary bytes: `respond` must never panic, and every answer it writes
//! must be a well-formed DNS message (decodable by an independent implementation, hickory)
//! carrying the query's ID.
#![no_main]

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use meridian::app::{SourceArgs, load};
use meridian::dns::answer::{Transport, respond};
use meridian::snapshot::Snapshot;

static SNAP: LazyLock<Snapshot> = LazyLock::new(|| {
    let zones = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../zones");
    let loaded = load(&SourceArgs { zones, geoip: None })
        .unwrap_or_else(|e| panic!("demo zones must load: {e:?}"));
    Snapshot::new(Arc::new(loaded.compiled), loaded.geo)
});

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let src: IpAddr = "127.0.1.1".parse().expect("ip");
    for t in [Transport::Udp, Transport::Tcp] {
        if respond(&SNAP, data, src, t, 7, &mut out).is_some() {
            let m = Message::from_vec(&out)
                .unwrap_or_else(|e| panic!("undecodable answer {out:02x?} to {data:02x?}: {e}"));
            assert_eq!(&out[..2], &data[..2], "answer carries the query ID");
            assert!(m.metadata.message_type == hickory_proto::op::MessageType::Response);
            if t == Transport::Udp {
                assert!(out.len() <= 1232.max(512), "UDP answers fit the advertised size");
            }
        }
    }
});
