//! The failed-login limiter and the aggregation of failed single sign-ins:
//! what an address or a user name may still try, counted in memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a successful sign-in makes its (user, address) pair "known
/// good": exempt from that user's lockout (the per-address limit still
/// applies).
const KNOWN_GOOD_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// Entries the limiter keeps at most; past that, idle ones are forgotten
/// and then the oldest known-good pairs.
const LIMITER_ENTRIES: usize = 50_000;

/// The key under which attempts from `addr` are counted: the address
/// itself for IPv4, its /64 for IPv6 (one host usually holds a whole /64,
/// so counting single IPv6 addresses would count nothing).
pub fn addr_key(addr: IpAddr) -> String {
    match addr.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// Counts password attempts per user name and per address in a sliding
/// window. An attempt is counted *before* its password is checked (see
/// [`LoginLimiter::begin`]) and forgotten again only when it succeeds, so a
/// burst of parallel guesses gets no more checks than a slow one. Past the
/// limit, attempts are refused without checking the password until the
/// window has moved on.
///
/// Strangers can lock a user out by failing on purpose; to keep that from
/// locking the user out for as long as the strangers keep at it, an address
/// the user signed in from successfully within [`KNOWN_GOOD_FOR`] is exempt
/// from the per-user limit (its per-address limit still applies). The
/// memory of known-good addresses is in-process: after a restart the user
/// may have to wait out one window.
#[derive(Debug)]
pub struct LoginLimiter {
    window: Duration,
    per_user: usize,
    per_addr: usize,
    state: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    /// Attempts not (yet) known to have succeeded, by `user:` or `addr:` key.
    attempts: HashMap<String, Vec<Instant>>,
    /// When each (user, address key) last signed in successfully.
    known_good: HashMap<(String, String), Instant>,
}

/// An attempt [`LoginLimiter::begin`] let through; it counts as a failure
/// unless [`LoginLimiter::succeeded`] or [`LoginLimiter::abandon`] is told.
#[derive(Debug)]
pub struct Attempt {
    keys: Vec<String>,
    user: String,
    addr: String,
    at: Instant,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self::new(Duration::from_secs(300), 5, 20)
    }
}

impl LoginLimiter {
    pub fn new(window: Duration, per_user: usize, per_addr: usize) -> Self {
        Self { window, per_user, per_addr, state: Mutex::new(LimiterState::default()) }
    }

    /// Counts an attempt of `user` from `addr` at `now`, or `Err(seconds)`
    /// until the next attempt would be allowed.
    pub fn begin(&self, user: &str, addr: IpAddr, now: Instant) -> Result<Attempt, u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let addr = addr_key(addr);
        let known_good = state
            .known_good
            .get(&(user.to_owned(), addr.clone()))
            .is_some_and(|at| now.duration_since(*at) < KNOWN_GOOD_FOR);
        let mut keys = vec![format!("addr:{addr}")];
        let mut limits = vec![self.per_addr];
        if !known_good {
            keys.push(format!("user:{user}"));
            limits.push(self.per_user);
        }
        let mut wait = 0u64;
        for (key, limit) in keys.iter().zip(limits) {
            if let Some(times) = state.attempts.get_mut(key) {
                times.retain(|t| now.duration_since(*t) < self.window);
                if times.len() >= limit {
                    let oldest = times.iter().min().copied().unwrap_or(now);
                    let left = self.window.saturating_sub(now.duration_since(oldest));
                    wait = wait.max(left.as_secs().max(1));
                }
            }
        }
        if wait > 0 {
            return Err(wait);
        }
        if state.attempts.len() + state.known_good.len() > LIMITER_ENTRIES {
            self.forget_idle(&mut state, now);
        }
        for key in &keys {
            state.attempts.entry(key.clone()).or_default().push(now);
        }
        Ok(Attempt { keys, user: user.to_owned(), addr, at: now })
    }

    /// The attempt's password was right: it stops counting, and its address
    /// becomes known good for the user.
    pub fn succeeded(&self, attempt: Attempt) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Self::uncount(&mut state, &attempt);
        state.known_good.insert((attempt.user, attempt.addr), attempt.at);
    }

    /// The attempt never reached the password check (the server was busy):
    /// it stops counting.
    pub fn abandon(&self, attempt: Attempt) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Self::uncount(&mut state, &attempt);
    }

    fn uncount(state: &mut LimiterState, attempt: &Attempt) {
        for key in &attempt.keys {
            if let Some(times) = state.attempts.get_mut(key) {
                if let Some(i) = times.iter().position(|t| *t == attempt.at) {
                    times.swap_remove(i);
                }
            }
        }
    }

    /// Bounds memory under a flood of distinct names or addresses.
    fn forget_idle(&self, state: &mut LimiterState, now: Instant) {
        state.attempts.retain(|_, times| times.iter().any(|t| now.duration_since(*t) < self.window));
        state.known_good.retain(|_, at| now.duration_since(*at) < KNOWN_GOOD_FOR);
        if state.known_good.len() > LIMITER_ENTRIES / 2 {
            let mut ages: Vec<Instant> = state.known_good.values().copied().collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() - LIMITER_ENTRIES / 2];
            state.known_good.retain(|_, at| *at >= cutoff);
        }
    }
}

/// Failed single sign-ins and refused JWT bearer tokens, which anyone can
/// cause without a password: the first of a kind from an address is audited
/// at once, repeats of it within [`FailedSignIns::window`] are counted and
/// audited as one event when the window closes, and an address past
/// `per_addr` failures in a window is refused before its token is even
/// verified.
#[derive(Debug)]
pub struct FailedSignIns {
    window: Duration,
    per_addr: usize,
    state: Mutex<FailureState>,
}

#[derive(Debug, Default)]
struct FailureState {
    /// Open aggregates by (address key, method, kind of failure).
    open: HashMap<(String, String, String), Repeats>,
    /// Failure times per address key, for the limit.
    recent: HashMap<String, Vec<Instant>>,
}

/// Repeats of one kind of failure since its first was audited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repeats {
    pub opened: Instant,
    pub count: u64,
    /// The address of the latest repeat, and its reason.
    pub last_addr: IpAddr,
    pub last_reason: String,
    pub who: Option<String>,
}

/// What to do with one failure.
#[derive(Debug, PartialEq, Eq)]
pub enum FailureVerdict {
    /// The first of its kind in the window: audit it now.
    Audit,
    /// A repeat: counted, audited later with the others.
    Counted,
}

/// How many open aggregates are kept at most; past that, the oldest are
/// closed (and audited) early.
const FAILURE_KEYS: usize = 10_000;

impl Default for FailedSignIns {
    fn default() -> Self {
        Self::new(Duration::from_secs(60), 30)
    }
}

impl FailedSignIns {
    pub fn new(window: Duration, per_addr: usize) -> Self {
        Self { window, per_addr, state: Mutex::new(FailureState::default()) }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// `Err(seconds)` while `addr` is past its limit of failures.
    pub fn check(&self, addr: IpAddr, now: Instant) -> Result<(), u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(times) = state.recent.get_mut(&addr_key(addr)) else { return Ok(()) };
        times.retain(|t| now.duration_since(*t) < self.window);
        if times.len() < self.per_addr {
            return Ok(());
        }
        let oldest = times.iter().min().copied().unwrap_or(now);
        Err(self.window.saturating_sub(now.duration_since(oldest)).as_secs().max(1))
    }

    /// Notes a failure of `method` from `addr`; `kind` groups repeats (the
    /// part of the reason before its first `:`).
    pub fn note(&self, addr: IpAddr, method: &str, reason: &str, who: Option<&str>, now: Instant) -> FailureVerdict {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let addr_key = addr_key(addr);
        let times = state.recent.entry(addr_key.clone()).or_default();
        times.retain(|t| now.duration_since(*t) < self.window);
        // Refused attempts past the limit are not kept, so memory stays
        // bounded by the limit.
        if times.len() < self.per_addr {
            times.push(now);
        }
        let kind: String = reason.split(':').next().unwrap_or(reason).chars().take(64).collect();
        let key = (addr_key, method.to_owned(), kind);
        match state.open.get_mut(&key) {
            Some(repeats) if now.duration_since(repeats.opened) < self.window => {
                repeats.count += 1;
                repeats.last_addr = addr;
                reason.clone_into(&mut repeats.last_reason);
                repeats.who = who.map(str::to_owned);
                FailureVerdict::Counted
            }
            _ => {
                let fresh =
                    Repeats { opened: now, count: 0, last_addr: addr, last_reason: reason.to_owned(), who: None };
                state.open.insert(key, fresh);
                FailureVerdict::Audit
            }
        }
    }

    /// Closes every aggregate whose window has passed (all of them with
    /// `everything`, at shutdown) and returns those with repeats, as
    /// `(method, repeats)`, to be audited.
    pub fn close(&self, now: Instant, everything: bool) -> Vec<(String, Repeats)> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.window;
        let mut closed = Vec::new();
        let overfull = state.open.len() > FAILURE_KEYS;
        state.open.retain(|(_, method, _), r| {
            let done = everything || overfull || now.duration_since(r.opened) >= window;
            if done && r.count > 0 {
                closed.push((method.clone(), r.clone()));
            }
            !done
        });
        state.recent.retain(|_, times| times.iter().any(|t| now.duration_since(*t) < window));
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_blocks_after_limit_and_recovers() {
        let limiter = LoginLimiter::new(Duration::from_secs(60), 3, 100);
        let addr: IpAddr = [127, 0, 0, 1].into();
        let t0 = Instant::now();
        for _ in 0..3 {
            // Failures: the attempts stay counted.
            limiter.begin("bob", addr, t0).expect("under the limit");
        }
        assert!(limiter.begin("bob", addr, t0).is_err());
        assert!(limiter.begin("carol", addr, t0).is_ok());
        assert!(limiter.begin("bob", addr, t0 + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn attempts_count_before_the_check_so_a_burst_gets_no_more() {
        let limiter = LoginLimiter::new(Duration::from_secs(60), 5, 100);
        let addr: IpAddr = [127, 0, 0, 9].into();
        let t0 = Instant::now();
        // 40 attempts in flight at once: only five are let through.
        let admitted: Vec<Attempt> = (0..40).filter_map(|_| limiter.begin("alice", addr, t0).ok()).collect();
        assert_eq!(admitted.len(), 5);
        // A success stops counting; an abandoned attempt too.
        let mut admitted = admitted.into_iter();
        limiter.abandon(admitted.next().expect("one"));
        assert!(limiter.begin("alice", addr, t0).is_ok(), "the abandoned attempt's place is free again");
    }

    #[test]
    fn a_known_good_address_is_not_locked_out_by_strangers() {
        let limiter = LoginLimiter::new(Duration::from_secs(60), 3, 100);
        let home: IpAddr = [127, 0, 0, 2].into();
        let stranger: IpAddr = [127, 0, 0, 3].into();
        let t0 = Instant::now();
        let ok = limiter.begin("alice", home, t0).expect("first");
        limiter.succeeded(ok);
        for _ in 0..3 {
            let _ = limiter.begin("alice", stranger, t0);
        }
        assert!(limiter.begin("alice", stranger, t0).is_err(), "the stranger is locked out");
        assert!(limiter.begin("alice", [127, 0, 0, 4].into(), t0).is_err(), "so is any other new address");
        assert!(limiter.begin("alice", home, t0).is_ok(), "alice's own address is not");
    }

    #[test]
    fn ipv6_addresses_count_per_64() {
        assert_eq!(addr_key("2001:db8:1:2:aaaa::1".parse().expect("v6")), "2001:db8:1:2::/64");
        assert_eq!(addr_key("::ffff:192.0.2.7".parse().expect("mapped")), "192.0.2.7");
        let limiter = LoginLimiter::new(Duration::from_secs(60), 100, 2);
        let t0 = Instant::now();
        let _ = limiter.begin("a", "2001:db8:1:2::1".parse().expect("v6"), t0);
        let _ = limiter.begin("b", "2001:db8:1:2::2".parse().expect("v6"), t0);
        assert!(limiter.begin("c", "2001:db8:1:2::3".parse().expect("v6"), t0).is_err());
        assert!(limiter.begin("c", "2001:db8:1:3::3".parse().expect("v6"), t0).is_ok());
    }

    #[test]
    fn failed_sign_ins_are_audited_once_per_kind_and_window_then_limited() {
        let failures = FailedSignIns::new(Duration::from_secs(60), 30);
        let addr: IpAddr = [127, 0, 0, 5].into();
        let t0 = Instant::now();
        assert_eq!(failures.note(addr, "jwt", "malformed: junk", None, t0), FailureVerdict::Audit);
        for _ in 0..20 {
            assert_eq!(failures.note(addr, "jwt", "malformed: other junk", None, t0), FailureVerdict::Counted);
        }
        // Another kind of failure is audited on its own.
        assert_eq!(failures.note(addr, "jwt", "expired: x", None, t0), FailureVerdict::Audit);
        assert!(failures.close(t0 + Duration::from_secs(30), false).is_empty(), "the window is still open");
        for _ in 0..10 {
            failures.note(addr, "jwt", "malformed: more", None, t0);
        }
        assert!(failures.check(addr, t0).is_err(), "past 30 failures the address waits");
        assert!(failures.check([127, 0, 0, 6].into(), t0).is_ok());
        let closed = failures.close(t0 + Duration::from_secs(61), false);
        assert_eq!(closed.len(), 1, "{closed:?}");
        assert_eq!((closed[0].0.as_str(), closed[0].1.count), ("jwt", 30));
        assert!(failures.check(addr, t0 + Duration::from_secs(61)).is_ok());
        assert_eq!(
            failures.note(addr, "jwt", "malformed: again", None, t0 + Duration::from_secs(62)),
            FailureVerdict::Audit
        );
    }
}
