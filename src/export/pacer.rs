//! Export tasks give the runtime's threads back at a steady pace: the drain loop
//! (`drain.rs`) counts every byte it moves here. A source whose chunks come from a buffer (sqlx
//! parses many COPY rows from one socket read) is always ready, so a task draining it would
//! otherwise run for long stretches without yielding, and requests on the same threads (status
//! polls, kick-offs, heartbeats) would wait behind it (figures: docs/performance.md).

/// Bytes a task moves between yields: about 200 Synthea resources.
const YIELD_EVERY_BYTES: usize = 256 * 1024;

#[derive(Default)]
pub struct Pacer {
    since_yield: usize,
}

impl Pacer {
    /// Counts bytes moved; yields to the scheduler every `YIELD_EVERY_BYTES` (after the I/O
    /// driver is polled, so waiting requests are seen).
    pub async fn moved(&mut self, bytes: usize) {
        self.since_yield += bytes;
        if self.since_yield >= YIELD_EVERY_BYTES {
            self.since_yield = 0;
            tokio::task::yield_now().await;
        }
    }
}
