//! The SQLite reader's chunk buffers, used again once the export is done with them. A chunk is
//! filled on a reader's blocking thread and freed on whichever thread the output drops it, and
//! the allocator kept such pages per thread, so fresh chunks raised peak RSS (figures:
//! docs/performance.md). Reused buffers also skip the first touch of new pages, slow on a VM
//! whose host takes freed memory back.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Bytes of one chunk. A chunk is handed over before a row would overflow it, so it is never
/// grown (only a row larger than this gets a larger buffer, which is not kept).
pub(super) const CHUNK_BYTES: usize = 256 * 1024;

/// Idle buffers kept (8 MiB): about what four readers have in flight at once.
const KEPT: usize = 32;

/// Idle chunk buffers, shared by the readers of one database.
#[derive(Debug, Default)]
pub(super) struct ChunkPool {
    idle: Mutex<Vec<Vec<u8>>>,
}

impl ChunkPool {
    /// An empty buffer of `CHUNK_BYTES`, kept or new.
    pub fn take(&self) -> Vec<u8> {
        self.idle.lock().expect("the pool's lock is never held across a panic").pop().unwrap_or_else(|| Vec::with_capacity(CHUNK_BYTES))
    }

    /// `buffer` as `Bytes` that return it to the pool when the last of them is dropped.
    pub fn bytes(self: &Arc<Self>, buffer: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled { buffer, pool: Arc::clone(self) })
    }

    fn give_back(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() != CHUNK_BYTES {
            return;
        }
        buffer.clear();
        let mut idle = self.idle.lock().expect("the pool's lock is never held across a panic");
        if idle.len() < KEPT {
            idle.push(buffer);
        }
    }
}

struct Pooled {
    buffer: Vec<u8>,
    pool: Arc<ChunkPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buffer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_once_its_last_bytes_are_dropped() {
        let pool = Arc::new(ChunkPool::default());
        let mut buffer = pool.take();
        buffer.extend_from_slice(b"line\n");
        let address = buffer.as_ptr();
        let bytes = pool.bytes(buffer);
        let slice = bytes.slice(1..3);
        drop(bytes);
        assert!(pool.idle.lock().unwrap().is_empty(), "a slice still holds it");
        assert_eq!(&slice[..], b"in");
        drop(slice);
        let again = pool.take();
        assert_eq!((again.as_ptr(), again.len(), again.capacity()), (address, 0, CHUNK_BYTES), "the same buffer, emptied");
    }

    #[test]
    fn an_outsized_buffer_and_those_past_the_limit_are_freed() {
        let pool = Arc::new(ChunkPool::default());
        let mut large = pool.take();
        large.resize(CHUNK_BYTES + 1, b'x');
        drop(pool.bytes(large));
        assert!(pool.idle.lock().unwrap().is_empty());
        let many: Vec<Bytes> = (0..KEPT + 3).map(|_| pool.bytes(pool.take())).collect();
        drop(many);
        assert_eq!(pool.idle.lock().unwrap().len(), KEPT);
    }
}
