//! Response rate limiting (BIND/Knot RRL): a token bucket per client prefix damps spoofed-source
//! amplification; with `slip` every Nth limited response still goes out empty with TC set, so a
//! real resolver behind a busy prefix retries over TCP (which cannot be spoofed) instead of
//! timing out.
//!
//! Each UDP worker owns its table: `SO_REUSEPORT` steers a source to one socket, so no lock is
//! shared between workers. Time is passed in, so the logic is tested without sleeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

#[derive(Clone, Debug, PartialEq)]
pub struct RrlConfig {
    /// Responses per second allowed per prefix; 0 disables rate limiting.
    pub responses_per_second: u32,
    /// Every `slip`-th limited response is sent truncated (TC) instead of dropped; 0 drops all.
    pub slip: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Most prefixes tracked per worker; beyond it idle entries are forgotten.
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

struct Bucket {
    tokens: f64,
    last: Instant,
    limited: u32,
}

pub struct Rrl {
    cfg: RrlConfig,
    table: HashMap<u128, Bucket>,
}

impl Rrl {
    pub fn new(cfg: RrlConfig) -> Rrl {
        Rrl {
            cfg,
            table: HashMap::new(),
        }
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
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Verdict {
        if !self.enabled() {
            return Verdict::Send;
        }
        let rate = f64::from(self.cfg.responses_per_second);
        if self.table.len() >= self.cfg.max_entries {
            // Forget prefixes whose bucket has refilled: they carry no state worth keeping.
            self.table
                .retain(|_, b| now.duration_since(b.last).as_secs_f64() * rate < rate);
            if self.table.len() >= self.cfg.max_entries {
                self.table.clear();
            }
        }
        let key = self.key(ip);
        let b = self.table.entry(key).or_insert(Bucket {
            tokens: rate,
            last: now,
            limited: 0,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(rate);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Verdict::Send;
        }
        b.limited = b.limited.wrapping_add(1);
        if self.cfg.slip > 0 && b.limited.is_multiple_of(self.cfg.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
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

    fn rrl(rate: u32, slip: u32) -> Rrl {
        Rrl::new(RrlConfig {
            responses_per_second: rate,
            slip,
            ..Default::default()
        })
    }

    #[test]
    fn limits_per_prefix_and_refills() {
        let mut r = rrl(5, 2);
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
        let mut r = rrl(0, 2);
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        assert!((0..1000).all(|_| r.check(ip, Instant::now()) == Verdict::Send));
        let mut r = rrl(1, 0);
        let t = Instant::now();
        assert_eq!(r.check(ip, t), Verdict::Send);
        assert!((0..10).all(|_| r.check(ip, t) == Verdict::Drop));
    }

    #[test]
    fn ipv6_prefixes() {
        let mut r = rrl(1, 0);
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
