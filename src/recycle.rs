//! Emptied event buffers handed back to the stage that fills them: a bounded pool of `Vec`s.
//!
//! A stage sends its events down in a `Vec` it allocates per batch; where the `Vec` ends its
//! way on another thread (in a pipeline: a batcher, after processors that forward it in
//! place, or a processor), freeing it there and allocating the next one where it is filled
//! costs the allocator a block freed by a thread that does not own it: for blocks too large
//! for glibc's per-thread cache, its slow path, with the heap growing and shrinking (measured
//! in `BENCHMARKS.md`, stop 29). The stage that empties such a buffer gives it back here,
//! emptied, and the stage that fills them takes one from here before it allocates. Only the
//! allocation travels: a buffer given back holds no event.

use crossbeam_channel::{bounded, Receiver, Sender};

/// How many emptied buffers a pool keeps; one given back to a full pool is freed.
const KEPT: usize = 64;

/// A buffer larger than this many events is freed, not kept: a pool holds at most
/// `KEPT × LARGEST` events' worth of memory.
const LARGEST: usize = 4096;

/// A pool of emptied `Vec<T>`s, shared by the stages that empty them and those that fill them.
pub(crate) struct Recycler<T> {
    give: Sender<Vec<T>>,
    take: Receiver<Vec<T>>,
    /// How many buffers were taken, for the tests that check a pool is wired.
    #[cfg(test)]
    taken: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<T> Clone for Recycler<T> {
    fn clone(&self) -> Self {
        Recycler {
            give: self.give.clone(),
            take: self.take.clone(),
            #[cfg(test)]
            taken: self.taken.clone(),
        }
    }
}

impl<T> Recycler<T> {
    /// An empty pool.
    pub(crate) fn new() -> Recycler<T> {
        let (give, take) = bounded(KEPT);
        Recycler {
            give,
            take,
            #[cfg(test)]
            taken: Default::default(),
        }
    }

    /// How many buffers were taken from the pool so far.
    #[cfg(test)]
    pub(crate) fn taken(&self) -> u64 {
        self.taken.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// An emptied buffer with room for `room` events, if the pool has one (one with less
    /// room grows to `room`).
    pub(crate) fn take(&self, room: usize) -> Option<Vec<T>> {
        let mut v = self.take.try_recv().ok()?;
        #[cfg(test)]
        self.taken
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        v.reserve(room);
        Some(v)
    }

    /// Gives `v`'s allocation back, its events dropped first. Freed instead when it has no
    /// allocation, is larger than the pool keeps, or the pool is full.
    pub(crate) fn give(&self, mut v: Vec<T>) {
        v.clear();
        if v.capacity() == 0 || v.capacity() > LARGEST {
            return;
        }
        let _ = self.give.try_send(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_comes_back_empty_with_its_allocation() {
        let pool = Recycler::new();
        assert!(pool.take(10).is_none(), "an empty pool has nothing");
        let v: Vec<String> = (0..50).map(|i| i.to_string()).collect();
        let at = v.as_ptr();
        pool.give(v);
        let back = pool.take(50).expect("the buffer given back");
        assert!(back.is_empty());
        assert_eq!(back.as_ptr(), at, "the same allocation");
        assert!(back.capacity() >= 50);
    }

    #[test]
    fn too_large_or_unallocated_buffers_and_a_full_pool_free_instead() {
        let pool = Recycler::<u8>::new();
        pool.give(Vec::new());
        pool.give(Vec::with_capacity(LARGEST + 1));
        assert!(pool.take(1).is_none());
        for _ in 0..KEPT + 3 {
            pool.give(Vec::with_capacity(8));
        }
        let kept = std::iter::from_fn(|| pool.take(1)).count();
        assert_eq!(kept, KEPT);
    }

    #[test]
    fn a_smaller_buffer_grows_to_the_room_asked() {
        let pool = Recycler::<u64>::new();
        pool.give(Vec::with_capacity(4));
        assert!(pool.take(100).expect("kept").capacity() >= 100);
    }
}
