//! Sockets. UDP: one blocking worker thread per core on its own `SO_REUSEPORT` socket, each with
//! reused buffers — receive, one snapshot load, answer, send; no async machinery, no allocation,
//! no lock per query. TCP (RFC 7766): tokio, one task per connection, pipelined queries answered
//! in order, idle timeout, a cap on connections in total and per source address.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use super::answer::{self, Transport};
use super::rrl::{SharedRrl, Verdict, truncate_answer};
use crate::metrics::{self, QueryCounters};
use crate::snapshot::{Shared, Snapshot};

#[derive(Clone, Debug)]
pub struct TcpLimits {
    pub max_connections: usize,
    pub max_per_source: usize,
    pub idle_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 1024,
            max_per_source: 64,
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// A socket for `addr`'s family, address reuse on, IPv6 sockets IPv6-only.
fn new_socket(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, ty, Some(proto))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    Ok(s)
}

fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = new_socket(addr, Type::DGRAM, Protocol::UDP)?;
    #[cfg(unix)]
    s.set_reuse_port(true)?;
    // Large buffers ride out bursts while a worker is descheduled.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(s.into())
}

/// The TCP listener. A deep accept queue (the kernel caps it at `net.core.somaxconn`) rides out
/// connection bursts: with a shallow one, SYN cookies let clients believe they are connected
/// while the server never sees them.
fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = new_socket(addr, Type::STREAM, Protocol::TCP)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Binds `workers` UDP sockets on `addr` (the first bind reports the error, e.g. port in use).
pub fn bind_udp(addr: SocketAddr, workers: usize) -> io::Result<Vec<UdpSocket>> {
    let first = udp_socket(addr)?;
    // Port 0: every worker must share the port the first socket got.
    let addr = first.local_addr()?;
    let mut v = vec![first];
    for _ in 1..workers.max(1) {
        v.push(udp_socket(addr)?);
    }
    Ok(v)
}

/// Binds UDP and TCP on the same address. With port 0 the UDP port the kernel picks may be
/// taken for TCP by another process: pick again rather than fail.
pub fn bind_dns(
    addr: SocketAddr,
    workers: usize,
) -> io::Result<(Vec<UdpSocket>, std::net::TcpListener)> {
    let mut attempts = 0;
    loop {
        let udp = bind_udp(addr, workers)?;
        let bound = udp[0].local_addr()?;
        match tcp_listener(bound) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse && attempts < 16 => {
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

pub fn spawn_udp_workers(
    sockets: Vec<UdpSocket>,
    shared: Shared,
    stop: Arc<AtomicBool>,
) -> Vec<JoinHandle<()>> {
    // One rate limiter for all workers: a client's limit must not grow with their number.
    let rrl = Arc::new(SharedRrl::new(shared.load().compiled.settings.rrl.clone()));
    // The served zones' and clusters' series exist (at zero) before the server says it serves.
    QueryCounters::new(Transport::Udp).resolve_catalog(&**shared.load());
    sockets
        .into_iter()
        .enumerate()
        .map(|(i, sock)| {
            let shared = shared.clone();
            let stop = stop.clone();
            let rrl = rrl.clone();
            std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || udp_worker(sock, shared, rrl, stop))
                .expect("spawn UDP worker thread")
        })
        .collect()
}

/// Per-worker state for answering UDP packets: counters, the (shared) rate limiter.
struct UdpHandler {
    counters: QueryCounters,
    dropped: prometheus::IntCounter,
    rrl_dropped: prometheus::IntCounter,
    rrl_slipped: prometheus::IntCounter,
    rrl: Arc<SharedRrl>,
}

impl UdpHandler {
    fn new(shared: &Shared, rrl: Arc<SharedRrl>) -> UdpHandler {
        let m = metrics::get();
        let mut counters = QueryCounters::new(Transport::Udp);
        counters.resolve_catalog(&**shared.load());
        UdpHandler {
            counters,
            dropped: m.dropped.with_label_values(&["malformed"]),
            rrl_dropped: m.rrl.with_label_values(&["dropped"]),
            rrl_slipped: m.rrl.with_label_values(&["slipped"]),
            rrl,
        }
    }

    /// Answers one packet into `out`; false when nothing is to be sent.
    fn handle(&mut self, snap: &Snapshot, packet: &[u8], src: IpAddr, out: &mut Vec<u8>) -> bool {
        let Some(a) = answer::respond(snap, packet, src, Transport::Udp, fastrand::u32(..), out)
        else {
            self.dropped.inc();
            return false;
        };
        let cfg = &snap.compiled.settings.rrl;
        if cfg.responses_per_second > 0 {
            match self.rrl.get(cfg).check(src, Instant::now()) {
                Verdict::Send => {}
                Verdict::Slip => {
                    self.rrl_slipped.inc();
                    truncate_answer(out, a.question_end);
                }
                Verdict::Drop => {
                    self.rrl_dropped.inc();
                    return false;
                }
            }
        }
        self.counters.count(&a, snap, packet.len(), out.len());
        true
    }
}

fn recv_error(e: &io::Error) {
    if !matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    ) {
        tracing::warn!(error = %e, "UDP receive failed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Portable worker: one `recv_from` and one `send_to` per query.
#[cfg_attr(target_os = "linux", allow(dead_code))]
fn udp_worker_simple(sock: UdpSocket, shared: Shared, rrl: Arc<SharedRrl>, stop: Arc<AtomicBool>) {
    let mut h = UdpHandler::new(&shared, rrl);
    let mut inbuf = vec![0u8; 65535];
    let mut out = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let (n, src) = match sock.recv_from(&mut inbuf) {
            Ok(x) => x,
            Err(e) => {
                // Idle (or failing): what was observed reaches the histograms now.
                h.counters.flush();
                recv_error(&e);
                continue;
            }
        };
        let received = Instant::now();
        let snap = shared.load();
        if h.handle(&snap, &inbuf[..n], src.ip(), &mut out) {
            if let Err(e) = sock.send_to(&out, src) {
                tracing::debug!(error = %e, "UDP send failed");
            }
            h.counters.answered_in(received.elapsed());
        }
        h.counters.maybe_flush(received);
    }
}

#[cfg(not(target_os = "linux"))]
fn udp_worker(sock: UdpSocket, shared: Shared, rrl: Arc<SharedRrl>, stop: Arc<AtomicBool>) {
    udp_worker_simple(sock, shared, rrl, stop)
}

/// Linux worker: batches of up to `BATCH` queries per `recvmmsg` and their answers per
/// `sendmmsg`, as gdnsd does — under load most of a query's CPU is the two system calls, so
/// batching them is what lowers cost per query. Under light load a batch is one packet
/// (`MSG_WAITFORONE`), so latency does not wait for a batch to fill.
#[cfg(target_os = "linux")]
fn udp_worker(sock: UdpSocket, shared: Shared, rrl: Arc<SharedRrl>, stop: Arc<AtomicBool>) {
    use std::os::fd::AsRawFd;
    const BATCH: usize = 32;
    // Larger UDP queries do not exist in practice; one that is cut off fails to parse.
    const BUF: usize = 4096;
    let fd = sock.as_raw_fd();
    let mut h = UdpHandler::new(&shared, rrl);
    let mut bufs = vec![[0u8; BUF]; BATCH];
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1500)).collect();
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let mut out_iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut out_hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    while !stop.load(Ordering::Relaxed) {
        for i in 0..BATCH {
            iovs[i].iov_base = bufs[i].as_mut_ptr().cast();
            iovs[i].iov_len = BUF;
            hdrs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
            hdrs[i].msg_hdr.msg_control = std::ptr::null_mut();
            hdrs[i].msg_hdr.msg_controllen = 0;
            hdrs[i].msg_hdr.msg_flags = 0;
            hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at live buffers of the stated sizes owned by this frame.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            // Idle (or failing): what was observed reaches the histograms now.
            h.counters.flush();
            recv_error(&io::Error::last_os_error());
            continue;
        }
        // One clock read per batch: every query in it was received by now.
        let received = Instant::now();
        let snap = shared.load();
        let mut k = 0;
        for i in 0..n as usize {
            let len = (hdrs[i].msg_len as usize).min(BUF);
            let Some(src) = sockaddr_ip(&addrs[i]) else {
                continue;
            };
            if h.handle(&snap, &bufs[i][..len], src, &mut outs[i]) {
                out_iovs[k].iov_base = outs[i].as_mut_ptr().cast();
                out_iovs[k].iov_len = outs[i].len();
                out_hdrs[k].msg_hdr.msg_name =
                    (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
                out_hdrs[k].msg_hdr.msg_namelen = hdrs[i].msg_hdr.msg_namelen;
                out_hdrs[k].msg_hdr.msg_iov = &mut out_iovs[k];
                out_hdrs[k].msg_hdr.msg_iovlen = 1;
                out_hdrs[k].msg_hdr.msg_control = std::ptr::null_mut();
                out_hdrs[k].msg_hdr.msg_controllen = 0;
                out_hdrs[k].msg_hdr.msg_flags = 0;
                k += 1;
            }
        }
        let mut sent = 0;
        while sent < k {
            // SAFETY: headers 0..k point at the answers and addresses filled in above.
            let r =
                unsafe { libc::sendmmsg(fd, out_hdrs[sent..].as_mut_ptr(), (k - sent) as u32, 0) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // One unsendable answer (e.g. an unreachable client) must not hold the rest.
                tracing::debug!(error = %e, "UDP send failed");
                sent += 1;
            } else {
                sent += (r as usize).max(1);
            }
        }
        if k > 0 {
            let elapsed = received.elapsed();
            for _ in 0..k {
                h.counters.answered_in(elapsed);
            }
        }
        h.counters.maybe_flush(received);
    }
}

#[cfg(target_os = "linux")]
fn sockaddr_ip(ss: &libc::sockaddr_storage) -> Option<IpAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(std::net::Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(IpAddr::V6(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// One open TCP connection, as the accept loop sees it.
struct ConnState {
    ip: IpAddr,
    epoch: Instant,
    /// Reading or answering a query (not evictable).
    busy: AtomicBool,
    /// When it last finished a query or was opened (ms since the registry's epoch).
    last: AtomicU64,
    evict: tokio::sync::Notify,
}

/// Open connections, shared by the accept loop and the connection tasks (which touch only
/// their own `ConnState`'s atomics per query; the lock is taken per connection, not per query).
struct Registry {
    epoch: Instant,
    inner: Mutex<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    next: u64,
    conns: HashMap<u64, Arc<ConnState>>,
    per_source: HashMap<IpAddr, usize>,
}

enum Admit {
    Yes(u64, Arc<ConnState>),
    PerSource,
    Total,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Admits a connection from `ip`. At the total cap, an idle connection makes room, as Knot
    /// and NSD do: one of the source holding the most connections, the longest idle first — so
    /// a few sources filling the cap cannot lock every other client out of TCP.
    fn admit(&self, ip: IpAddr, limits: &TcpLimits, ignore_caps: bool) -> Admit {
        let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !ignore_caps {
            if r.per_source.get(&ip).copied().unwrap_or(0) >= limits.max_per_source {
                return Admit::PerSource;
            }
            if r.conns.len() >= limits.max_connections {
                let now = self.now_ms();
                let victim = r
                    .conns
                    .iter()
                    .filter(|(_, c)| !c.busy.load(Ordering::Acquire))
                    .max_by_key(|(id, c)| {
                        let held = r.per_source.get(&c.ip).copied().unwrap_or(0);
                        let idle = now.saturating_sub(c.last.load(Ordering::Relaxed));
                        // Ties (same millisecond) go to the oldest connection.
                        (held, idle, std::cmp::Reverse(**id))
                    })
                    .map(|(&id, _)| id);
                let Some(id) = victim else {
                    return Admit::Total;
                };
                if let Some(c) = r.remove(id) {
                    c.evict.notify_one();
                    metrics::get().tcp_evicted.inc();
                }
            }
        }
        let c = Arc::new(ConnState {
            ip,
            epoch: self.epoch,
            busy: AtomicBool::new(false),
            last: AtomicU64::new(self.now_ms()),
            evict: tokio::sync::Notify::new(),
        });
        let id = r.next;
        r.next += 1;
        r.conns.insert(id, c.clone());
        *r.per_source.entry(ip).or_insert(0) += 1;
        Admit::Yes(id, c)
    }

    fn release(&self, id: u64) {
        let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        r.remove(id);
    }
}

impl RegistryInner {
    fn remove(&mut self, id: u64) -> Option<Arc<ConnState>> {
        let c = self.conns.remove(&id)?;
        if let Some(n) = self.per_source.get_mut(&c.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&c.ip);
            }
        }
        Some(c)
    }
}

/// Accepts DNS-over-TCP until `shutdown` flips. Then it stops accepting — after taking the
/// connections already completed in the kernel's accept queue, whose clients have sent their
/// queries — and every connection answers the queries it has received (pipelined ones too)
/// before closing.
pub async fn serve_tcp(
    listener: TcpListener,
    shared: Shared,
    limits: TcpLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let m = metrics::get();
    let registry = Arc::new(Registry {
        epoch: Instant::now(),
        inner: Mutex::default(),
    });
    let tasks = TaskTracker::new();
    let conn_shutdown = shutdown.clone();
    let spawn = |stream: TcpStream, peer: SocketAddr, ignore_caps: bool| {
        let (id, state) = match registry.admit(peer.ip(), &limits, ignore_caps) {
            Admit::Yes(id, c) => (id, c),
            Admit::PerSource => {
                m.tcp_refused.with_label_values(&["per_source"]).inc();
                return;
            }
            Admit::Total => {
                m.tcp_refused.with_label_values(&["total"]).inc();
                return;
            }
        };
        let shared = shared.clone();
        let registry = registry.clone();
        let idle = limits.idle_timeout;
        let shutdown = conn_shutdown.clone();
        tasks.spawn(async move {
            m.tcp_connections.inc();
            let _ = stream.set_nodelay(true);
            if let Err(e) = tcp_connection(stream, peer, shared, idle, &state, shutdown).await {
                tracing::trace!(error = %e, %peer, "TCP connection ended");
            }
            m.tcp_connections.dec();
            registry.release(id);
        });
    };
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, peer)) => spawn(stream, peer, false),
            Err(e) => {
                tracing::debug!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    // Connections the kernel completed before the stop: their clients think they are
    // connected and may have sent queries. Taken without the caps (they are few and the
    // server is ending) straight from the socket, bypassing the runtime's readiness cache.
    if let Ok(std_listener) = listener.into_std() {
        while let Ok((s, peer)) = std_listener.accept() {
            if s.set_nonblocking(true).is_ok()
                && let Ok(stream) = TcpStream::from_std(s)
            {
                spawn(stream, peer, true);
            }
        }
    }
    tasks.close();
    // In-flight connections get a bounded time to finish the queries in hand.
    let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
}

/// True when the client has sent bytes not read yet (or closed): a direct non-blocking peek,
/// not the runtime's readiness cache, which may lag what the kernel holds.
fn has_pending(stream: &TcpStream) -> bool {
    let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    matches!(socket2::SockRef::from(stream).peek(&mut b), Ok(n) if n > 0)
}

async fn tcp_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Shared,
    idle: Duration,
    state: &ConnState,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let mut counters = QueryCounters::new(Transport::Tcp);
    let mut inbuf = vec![0u8; 65535];
    let mut out = Vec::with_capacity(4096);
    let mut framed = Vec::with_capacity(4098);
    let mut draining = *shutdown.borrow();
    loop {
        state.busy.store(false, Ordering::Release);
        let mut len = [0u8; 2];
        let read = if draining {
            // Shutting down: answer what has arrived, then close.
            if !has_pending(&stream) {
                return Ok(());
            }
            tokio::time::timeout(idle, stream.read_exact(&mut len)).await
        } else {
            tokio::select! {
                r = tokio::time::timeout(idle, stream.read_exact(&mut len)) => r,
                _ = shutdown.changed() => {
                    draining = true;
                    continue;
                }
                // Evicted to make room at the total cap (only while idle).
                _ = state.evict.notified() => return Ok(()),
            }
        };
        state.busy.store(true, Ordering::Release);
        match read {
            Err(_) => return Ok(()), // idle timeout
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(_)) => {}
        }
        let n = u16::from_be_bytes(len) as usize;
        // A slow sender gets the idle timeout for the whole message, not per byte.
        match tokio::time::timeout(idle, stream.read_exact(&mut inbuf[..n])).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        }
        let received = Instant::now();
        let snap = shared.load_full();
        let Some(a) = answer::respond(
            &snap,
            &inbuf[..n],
            peer.ip(),
            Transport::Tcp,
            fastrand::u32(..),
            &mut out,
        ) else {
            metrics::get()
                .dropped
                .with_label_values(&["malformed"])
                .inc();
            // A packet we would drop over UDP ends a TCP connection.
            return Ok(());
        };
        counters.count(&a, &snap, n, out.len());
        framed.clear();
        framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
        framed.extend_from_slice(&out);
        // A client that does not read its answers is cut off after the idle timeout.
        match tokio::time::timeout(idle, stream.write_all(&framed)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        }
        state
            .last
            .store(state.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        counters.answered_in(received.elapsed());
        counters.flush();
    }
}
