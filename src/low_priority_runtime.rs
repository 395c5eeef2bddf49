//! Threads for an export's bulk blocking work (file writes, SQLite's reader) and its CPU-bound
//! batches (de-identification) at a lower CPU priority than the threads that answer requests:
//! waking a writer let it preempt the runtime thread that had woken it, with the status polls
//! queued on that thread waiting behind it. At a higher nice value the writers still get the
//! idle CPU, so an export alone runs as fast, while a request's thread goes first (figures:
//! docs/performance.md). The files these threads write are staging files until the export
//! records them, so the process can exit without waiting for them (this runtime is never shut
//! down).

use std::sync::OnceLock;

use tokio::{runtime::Runtime, task::JoinHandle};

/// How much nicer the background threads are than the process (nice values end at 19).
#[cfg(target_os = "linux")]
const NICER_BY: i32 = 10;

/// Runs `f` on a background thread; awaiting the handle works from any runtime.
pub fn spawn_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    runtime().spawn_blocking(f)
}

/// Runs CPU-bound `f` (a batch of de-identification) on one of a fixed set of threads, one per
/// core, at the same lower priority; a panic in `f` comes back as the error. The blocking pool
/// started a thread for every batch waiting while the others ran, and spread the work over
/// dozens of threads with cold caches and allocator heaps.
pub async fn spawn_compute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> std::thread::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    compute_pool().spawn(move || {
        // The receiver may be gone (the export stopped): the result is not wanted then.
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    rx.await.unwrap_or_else(|_| Err(Box::new("a compute thread dropped its work")))
}

/// How many compute threads there are: one per core.
pub fn compute_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn compute_pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(compute_threads())
            .thread_name(|i| format!("bulkfhir-compute-{i}"))
            .start_handler(|_| lower_priority())
            .build()
            .expect("the compute threads start")
    })
}

/// A runtime used only for its blocking pool (threads started on demand, idle ones ended after
/// tokio's 10 s), each thread lowered once as it starts. It lives as long as the process.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bulkfhir-background")
            .on_thread_start(lower_priority)
            .build()
            .expect("the background runtime's threads start")
    })
}

/// Linux keeps a nice value per thread (POSIX says per process, as other systems do): lowering it
/// elsewhere would lower the whole server, so there it is left alone.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::getpriority_process(None).and_then(|nice| rustix::process::setpriority_process(None, lowered(nice))) {
        tracing::debug!(error = %e, "could not lower a background thread's priority");
    }
}

#[cfg(target_os = "linux")]
fn lowered(nice: i32) -> i32 {
    (nice + NICER_BY).min(19)
}

#[cfg(test)]
mod compute_tests {
    #[tokio::test]
    async fn a_panic_in_compute_work_comes_back_to_the_caller() {
        let result = super::spawn_compute(|| -> u32 { panic!("boom") }).await;
        assert_eq!(result.unwrap_err().downcast_ref::<&str>(), Some(&"boom"));
        // The threads survive it.
        assert_eq!(super::spawn_compute(|| 7).await.unwrap(), 7);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[tokio::test]
    async fn work_runs_at_the_lower_priority_and_requests_threads_do_not() {
        let here = rustix::process::getpriority_process(None).unwrap();
        let there = super::spawn_blocking(|| rustix::process::getpriority_process(None).unwrap()).await.unwrap();
        assert_eq!(there, super::lowered(here));
        let computed = super::spawn_compute(|| rustix::process::getpriority_process(None).unwrap()).await.unwrap();
        assert_eq!(computed, super::lowered(here));
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), here, "the caller's thread is untouched");
    }
}
