//! Response rate limiting (BIND/Knot RRL): a token bucket per client prefix damps spoofed-source
//! amplification; with `slip` every Nth limited response still goes out empty with TC set, so a
//! real resolver behind a busy prefix retries over TCP (which cannot be spoofed) instead of
//! timing out.
//!
//! One table serves every UDP worker, so a client's limit is the configured rate however many
//! sockets its packets are spread over (`SO_REUSEPORT` hashes each source port to a socket).
//! The table is split into shards, each behind its own short lock: workers contend only when
//! they limit prefixes of the same shard at the same moment. A full shard forgets idle
//! prefixes (whose bucket has refilled, so they carry no state); when none is idle, prefixes
//! it cannot track share one bucket — a spray of new prefixes never resets the bucket of one
//! being limited. Time is passed in, so the logic is tested without sleeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

#[derive(Clone, Debug, PartialEq)]
pub struct RrlConfig {
    /// Responses per second allowed per prefix; 0 disables rate limiting.
    pub responses_per_second: u32,
    /// Every `slip`-th limited response is sent truncated (TC) instead of dropped; 0 drops all.
    pub slip: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Most prefixes tracked; beyond it idle entries are forgotten.
    pub max_entries: usize,
}

impl Default for RrlConfig {
    fn default() -> Self {
        RrlConfig {
            responses_per_second: 0,
            slip: 2,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            max_entries: 100_000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Send an empty TC answer instead.
    Slip,
    Drop,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
    limited: u32,
}

impl Bucket {
    fn full(rate: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: rate,
            last: now,
            limited: 0,
        }
    }

    fn take(&mut self, now: Instant, rate: f64, slip: u32) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Send;
        }
        self.limited = self.limited.wrapping_add(1);
        if slip > 0 && self.limited.is_multiple_of(slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }

    /// Refilled by `now`: forgetting it changes nothing.
    fn idle(&self, now: Instant, rate: f64) -> bool {
        self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * rate >= rate
    }
}

struct Shard {
    table: HashMap<u128, Bucket, foldhash::fast::RandomState>,
    /// Shared by the prefixes a full shard cannot track.
    overflow: Option<Bucket>,
    last_sweep: Option<Instant>,
}

/// A full shard looks for idle entries at most this often, so a spray of new prefixes does
/// not make every query scan the shard.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

pub struct Rrl {
    cfg: RrlConfig,
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
}

impl Rrl {
    pub fn new(cfg: RrlConfig) -> Rrl {
        let max = cfg.max_entries.max(1);
        let n = (max / 256).clamp(1, 64);
        let per_shard = max.div_ceil(n);
        let shards = (0..n)
            .map(|_| {
                Mutex::new(Shard {
                    table: HashMap::default(),
                    overflow: None,
                    last_sweep: None,
                })
            })
            .collect();
        Rrl {
            cfg,
            shards,
            per_shard,
        }
    }

    pub fn config(&self) -> &RrlConfig {
        &self.cfg
    }

    pub fn enabled(&self) -> bool {
        self.cfg.responses_per_second > 0
    }

    fn key(&self, ip: IpAddr) -> u128 {
        match ip {
            IpAddr::V4(a) => {
                let bits = self.cfg.ipv4_prefix.min(32);
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                u128::from(u32::from(a) & mask) | (1u128 << 127)
            }
            IpAddr::V6(a) => {
                let bits = self.cfg.ipv6_prefix.min(128);
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                (u128::from(a) & mask) >> 1
            }
        }
    }

    /// Decides for one response to `ip` at `now`.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Verdict {
        if !self.enabled() {
            return Verdict::Send;
        }
        let rate = f64::from(self.cfg.responses_per_second);
        let slip = self.cfg.slip;
        let key = self.key(ip);
        // Fibonacci hashing of both halves: prefixes differ in a few middle bits.
        let h = ((key as u64) ^ ((key >> 64) as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let shard = &self.shards[(h >> 32) as usize % self.shards.len()];
        let mut s = shard.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = s.table.get_mut(&key) {
            return b.take(now, rate, slip);
        }
        if s.table.len() >= self.per_shard
            && s.last_sweep
                .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY)
        {
            s.last_sweep = Some(now);
            s.table.retain(|_, b| !b.idle(now, rate));
        }
        if s.table.len() < self.per_shard {
            let mut b = Bucket::full(rate, now);
            let v = b.take(now, rate, slip);
            s.table.insert(key, b);
            return v;
        }
        // Full of prefixes that are all busy: the new one is limited with every other
        // untracked prefix rather than by evicting one that is being limited.
        s.overflow
            .get_or_insert_with(|| Bucket::full(rate, now))
            .take(now, rate, slip)
    }
}

/// The limiter every UDP worker shares; replaced when the configuration changes.
pub struct SharedRrl(ArcSwap<Rrl>);

impl SharedRrl {
    pub fn new(cfg: RrlConfig) -> SharedRrl {
        SharedRrl(ArcSwap::from_pointee(Rrl::new(cfg)))
    }

    /// The limiter for `cfg`: the current one, or a new one if the configuration changed.
    pub fn get(&self, cfg: &RrlConfig) -> arc_swap::Guard<Arc<Rrl>> {
        let cur = self.0.load();
        if cur.cfg == *cfg {
            return cur;
        }
        drop(cur);
        self.0.rcu(|cur| {
            if cur.cfg == *cfg {
                cur.clone()
            } else {
                Arc::new(Rrl::new(cfg.clone()))
            }
        });
        self.0.load()
    }
}

/// Rewrites an answer in place into an empty truncated one (header, question, OPT kept).
pub fn truncate_answer(out: &mut Vec<u8>, question_end: usize) {
    if out.len() < 12 || question_end > out.len() {
        return;
    }
    // Keep OPT if present: it is the last record when the answer had one (we always write it
    // last), found by its root owner and type 41 at 11 bytes plus option data from the end.
    let opt = find_trailing_opt(out, question_end).map(|at| out[at..].to_vec());
    out.truncate(question_end);
    out[2] |= 0x02; // TC
    out[6..10].fill(0); // ANCOUNT, NSCOUNT
    match opt {
        Some(o) => {
            out.extend_from_slice(&o);
            out[10..12].copy_from_slice(&1u16.to_be_bytes());
        }
        None => out[10..12].fill(0),
    }
}

fn find_trailing_opt(out: &[u8], question_end: usize) -> Option<usize> {
    // Walk back over candidate OPT starts: 0x00 0x00 0x29, rdlen matching the tail.
    let n = out.len();
    let mut at = n.checked_sub(11)?;
    loop {
        if at < question_end {
            return None;
        }
        if out[at] == 0 && out[at + 1] == 0 && out[at + 2] == 41 {
            let rdlen = usize::from(u16::from_be_bytes([out[at + 9], out[at + 10]]));
            if at + 11 + rdlen == n {
                return Some(at);
            }
        }
        at = at.checked_sub(1)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_full_table_does_not_reset_a_limited_prefix() {
        let r = Rrl::new(RrlConfig {
            responses_per_second: 5,
            slip: 0,
            max_entries: 4,
            ..Default::default()
        });
        let t0 = Instant::now();
        let victim: IpAddr = "192.0.2.1".parse().expect("ip");
        assert!((0..5).all(|_| r.check(victim, t0) == Verdict::Send));
        assert_eq!(r.check(victim, t0), Verdict::Drop);
        // A spray of new prefixes fills the table and then some.
        let spray = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8)));
        let sent = (0..1000)
            .filter(|&i| r.check(spray(i), t0) == Verdict::Send)
            .count();
        // Three fit in the table (5 each); the rest share one bucket of 5.
        assert_eq!(sent, 3 + 5, "untracked prefixes share one bucket");
        assert_eq!(
            r.check(victim, t0 + Duration::from_millis(10)),
            Verdict::Drop,
            "the limited prefix is still limited"
        );
        // Once the sprayed prefixes are idle they make room again.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(r.check(spray(5000), later), Verdict::Send);
        assert_eq!(r.check(victim, later), Verdict::Send);
    }

    fn rrl(rate: u32, slip: u32) -> Rrl {
        Rrl::new(RrlConfig {
            responses_per_second: rate,
            slip,
            ..Default::default()
        })
    }

    #[test]
    fn limits_per_prefix_and_refills() {
        let r = rrl(5, 2);
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let same_prefix: IpAddr = "192.0.2.200".parse().expect("ip");
        let other: IpAddr = "198.51.100.1".parse().expect("ip");
        let verdicts: Vec<Verdict> = (0..9)
            .map(|i| r.check(if i % 2 == 0 { a } else { same_prefix }, t0))
            .collect();
        assert_eq!(&verdicts[..5], &[Verdict::Send; 5]);
        // Limited responses alternate drop / slip with slip 2.
        assert_eq!(
            &verdicts[5..],
            &[Verdict::Drop, Verdict::Slip, Verdict::Drop, Verdict::Slip]
        );
        assert_eq!(
            r.check(other, t0),
            Verdict::Send,
            "other prefixes unaffected"
        );
        // One second later the bucket is full again.
        assert_eq!(r.check(a, t0 + Duration::from_secs(1)), Verdict::Send);
    }

    #[test]
    fn disabled_and_slip_zero() {
        let r = rrl(0, 2);
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        assert!((0..1000).all(|_| r.check(ip, Instant::now()) == Verdict::Send));
        let r = rrl(1, 0);
        let t = Instant::now();
        assert_eq!(r.check(ip, t), Verdict::Send);
        assert!((0..10).all(|_| r.check(ip, t) == Verdict::Drop));
    }

    #[test]
    fn ipv6_prefixes() {
        let r = rrl(1, 0);
        let t = Instant::now();
        assert_eq!(
            r.check("2001:db8:0:1::1".parse().expect("ip"), t),
            Verdict::Send
        );
        // Same /56.
        assert_eq!(
            r.check("2001:db8:0:2::1".parse().expect("ip"), t),
            Verdict::Drop
        );
        assert_eq!(
            r.check("2001:db8:1::1".parse().expect("ip"), t),
            Verdict::Send
        );
    }

    #[test]
    fn truncation_keeps_question_and_opt() {
        // header(12) + question "\x01a\x00" A IN (7) + one A RR (compressed, 16) + OPT (11)
        let mut p = vec![0x12, 0x34, 0x84, 0x00, 0, 1, 0, 1, 0, 0, 0, 1];
        p.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1]);
        p.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 192, 0, 2, 1]);
        p.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        truncate_answer(&mut p, 19);
        assert_eq!(p.len(), 19 + 11);
        assert_eq!(p[2] & 0x02, 0x02);
        assert_eq!(&p[6..12], &[0, 0, 0, 0, 0, 1]);
        assert_eq!(&p[19..22], &[0, 0, 41]);
    }
}
