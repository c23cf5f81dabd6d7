//! Stopping: SIGTERM answers what TCP clients already sent, and a lame-duck period keeps
//! answering while `/readyz` takes the replica out of rotation.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

use crate::common::*;

fn read_answer(t: &mut TcpStream) -> std::io::Result<Message> {
    let mut len = [0u8; 2];
    t.read_exact(&mut len)?;
    let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
    t.read_exact(&mut body)?;
    Message::from_vec(&body).map_err(std::io::Error::other)
}

#[test]
fn sigterm_answers_every_query_already_received_over_tcp() {
    let mut s = Server::start(&repo_zones());
    let p = s.q().packet("static.gslb.example.com.", RecordType::A);
    let framed = [&(p.len() as u16).to_be_bytes()[..], &p].concat();
    // Stopped, the server cannot answer before the signal: every query below is received
    // (in the kernel's buffers, the connections in its accept queue) when SIGTERM arrives.
    s.signal("STOP");
    let mut conns: Vec<(TcpStream, usize)> = (0..40)
        .map(|i| {
            let mut t = TcpStream::connect(s.dns).expect("connect");
            t.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            // Every fourth connection pipelines three queries.
            let n = if i % 4 == 0 { 3 } else { 1 };
            t.write_all(&framed.repeat(n)).expect("write");
            (t, n)
        })
        .collect();
    s.signal("TERM");
    s.signal("CONT");
    let mut answered = 0;
    let mut failed = Vec::new();
    for (i, (t, n)) in conns.iter_mut().enumerate() {
        for _ in 0..*n {
            match read_answer(t) {
                Ok(m) => {
                    assert_eq!(addrs(&m), vec!["192.0.2.10"]);
                    answered += 1;
                }
                Err(e) => {
                    failed.push(format!("connection {i}: {e}"));
                    break;
                }
            }
        }
    }
    assert_eq!(answered, 60, "unanswered: {failed:?}");
    assert_eq!(s.wait_exit(Duration::from_secs(15)), Some(0), "exits 0");
}

#[test]
fn lameduck_fails_readyz_and_keeps_answering_then_exits() {
    let mut s = Server::start_with(&repo_zones(), &["--lameduck", "3s"]);
    assert_eq!(s.http("GET", "/readyz").0, 200);
    s.signal("TERM");
    wait_for(Duration::from_secs(5), "/readyz to fail", || {
        (s.http("GET", "/readyz").0 == 503).then_some(())
    });
    // Still serving, over UDP and TCP, while not ready.
    assert_eq!(
        addrs(&s.q().ask("static.gslb.example.com.", RecordType::A)),
        vec!["192.0.2.10"]
    );
    assert_eq!(
        addrs(&s.q().tcp().ask("static.gslb.example.com.", RecordType::A)),
        vec!["192.0.2.10"]
    );
    assert_eq!(s.http("GET", "/readyz").0, 503);
    assert_eq!(
        s.wait_exit(Duration::from_millis(1)),
        None,
        "still running in the lame-duck period"
    );
    assert_eq!(
        s.wait_exit(Duration::from_secs(15)),
        Some(0),
        "exits 0 after it"
    );
    assert!(s.log_text().contains("lame duck"));
}
