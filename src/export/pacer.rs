//! Export tasks give the runtime's threads back at a steady pace: every loop that drains a
//! store's stream (into files, or read through for ids) counts its bytes here. A source whose
//! chunks come from a buffer (sqlx parses many COPY rows from one socket read) is always ready,
//! so a task pumping it would otherwise run for long stretches without yielding, and requests on the same
//! threads (status polls, kick-offs, heartbeats) waited behind it: status p99 under an export
//! fell from 160-430 ms to 20-90 ms on the same busy machine once tasks yielded every 256 KiB.

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
