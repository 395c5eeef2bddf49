//! Status polling rate per client: a client polling far more often than `Retry-After` asks gets
//! 429s. Counted per process, in one-second windows.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

pub struct PollLimiter {
    per_second: u32,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl PollLimiter {
    pub fn new(per_second: u32) -> Self {
        Self { per_second, windows: Mutex::default() }
    }

    /// Counts one poll; false once the client passed its allowance in the current second.
    pub fn allow(&self, client: &str) -> bool {
        let now = Instant::now();
        let mut windows = self.windows.lock().expect("the poll limiter lock is not poisoned");
        let window = windows.entry(client.to_owned()).or_insert((now, 0));
        if now.duration_since(window.0) >= Duration::from_secs(1) {
            *window = (now, 0);
        }
        window.1 += 1;
        window.1 <= self.per_second
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_past_the_allowance_is_refused_per_client() {
        let limiter = PollLimiter::new(3);
        assert!((0..3).all(|_| limiter.allow("a")));
        assert!(!limiter.allow("a"));
        assert!(limiter.allow("b"));
    }
}
