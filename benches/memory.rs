//! The keeper core's memory per registered proxy, at 1,000,000 proxies.
//!
//! A counting global allocator measures the heap the keeper holds: after registering the
//! fleet, and again after a steady run of heartbeats (which fills the timer queues to
//! their steady size: one entry per heartbeat within `lost_after`). The figure is the
//! keeper's heap divided by the number of proxies; identities and timers included.
//!
//! `cargo bench --bench memory` (about 20 s). Prints the figures; no timing.

mod fleet;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use fleet::{Fleet, rng};
use zerokeeper::keeper::KeeperConfig;

/// The system allocator, counting the bytes it holds.
struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);
static CALLS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to `System` with the same arguments; the counter does not
// touch the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn held() -> isize {
    HELD.load(Ordering::Relaxed)
}

fn main() {
    const N: usize = 1_000_000;
    // The fleet's own bookkeeping (names, seqs, slots) is allocated before the keeper's
    // baseline is taken, so only the keeper's heap is counted.
    let config = KeeperConfig {
        heartbeat_interval: Duration::from_secs(1),
        lost_after: Duration::from_secs(3),
        ready_timeout: Duration::from_secs(60),
        delete_after: Duration::from_secs(60),
        ..KeeperConfig::default()
    };
    let mut fleet = Fleet::unregistered(N, false, config);
    let before = held();
    fleet.register_all();
    let registered = held() - before;
    // Steady state: every proxy heartbeats once a second, spread evenly over the second
    // (100 slices of 10 ms), with the timers run after each slice as a driver runs them
    // after each burst; for 3 s, the time a timer entry lives (lost_after).
    let mut rng = rng(1);
    let mut allocations = 0;
    for _ in 0..3 {
        let batch = fleet.batch_all(&mut rng);
        for slice in batch.chunks(N / 100) {
            fleet.advance(Duration::from_millis(10));
            // Allocator calls while handling heartbeats: a queue growing now and then is
            // all there should be, nothing per heartbeat.
            let calls = CALLS.load(Ordering::Relaxed);
            for d in slice {
                fleet.keeper.handle_datagram(fleet.now, fleet.from, d);
            }
            allocations += CALLS.load(Ordering::Relaxed) - calls;
            fleet.drain_tokens();
        }
    }
    assert_eq!(fleet.keeper.clusters()[0].up, N, "every proxy stayed up");
    let steady = held() - before;
    println!(
        "allocator calls while handling {} steady heartbeats: {allocations} ({:.6} per heartbeat)",
        3 * N,
        allocations as f64 / (3 * N) as f64
    );
    println!(
        "keeper heap with {N} registered up proxies: {} bytes ({:.1} bytes per proxy)",
        registered,
        registered as f64 / N as f64
    );
    println!(
        "keeper heap after 3 s of heartbeats, each proxy once a second, spread evenly (lost_after 3 s): {} bytes ({:.1} bytes per proxy; timer entries: {})",
        steady,
        steady as f64 / N as f64,
        fleet.keeper.timer_entries()
    );
}
