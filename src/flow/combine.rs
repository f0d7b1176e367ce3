//! Combiners: what a mapper lane adds right before a partition so that a reduction that can
//! merge sees fewer events (a *combiner*, as Spark and Flink call it). A lane counts the events
//! of a batch, or of its whole turn, in a table by key and sends one value per key: fewer
//! events to hash into partitions, send and fold.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use super::reduce::KeyHasher;
use super::run::Flush;

/// How many keys a lane's combiner table holds before it sends its counts on mid-turn (each
/// a key and a `u64`: about 2 MB for `&str` keys).
pub(crate) const HOLD_KEYS: usize = 1 << 16;

/// The most a combiner table that keeps an event per key holds, in bytes of its entries
/// (their own size, not what they own on the heap): as much as [`HOLD_KEYS`] `&str` keys.
pub(crate) const HOLD_BYTES: usize = HOLD_KEYS * 32;

/// A combiner's operation on a batch: `op(batch, out)`, where `batch(each)` runs the lane's
/// operations before it and hands each event to `each`.
pub(crate) type CombineOp<'env, T, U> =
    Arc<dyn Fn(&mut dyn FnMut(&mut dyn FnMut(T)), &mut dyn FnMut(U)) + Send + Sync + 'env>;

/// The last operation of a lane before its partition: what it does with a batch, and what
/// it sends when the lane's turn ends (what it held back).
pub(crate) struct Combiner<'env, T, U> {
    pub(crate) op: CombineOp<'env, T, U>,
    pub(crate) flush: Option<Flush<'env, U>>,
}

/// A lane's table: `C` the key it counts by, `V` what it keeps per key.
type Table<C, V> = HashMap<C, V, KeyHasher>;

impl<'env, T: 'env, U: 'env> Combiner<'env, T, U> {
    /// No table: each event goes on as `f(event)`, at once.
    pub(crate) fn each(f: impl Fn(T) -> U + Send + Sync + 'env) -> Combiner<'env, T, U> {
        Combiner {
            op: Arc::new(move |batch, out| batch(&mut |t| out(f(t)))),
            flush: None,
        }
    }

    /// Tables by `key`, a pool the lanes share (a lane takes one for each batch): `add(entry,
    /// event)` adds each event to its key's entry, and each entry goes on as `emit(key,
    /// value)` once the table holds `hold` keys (`0`: after every batch) and, for every table
    /// in the pool, when a lane's turn ends. The tables stay from batch to batch (no
    /// allocation and no growth once one has seen a batch's worth of keys).
    pub(crate) fn table<C, V>(
        hold: usize,
        key: impl Fn(&T) -> C + Send + Sync + 'env,
        add: impl Fn(Entry<'_, C, V>, T) + Send + Sync + 'env,
        emit: impl Fn(C, V) -> U + Send + Sync + 'env,
    ) -> Combiner<'env, T, U>
    where
        C: Hash + Eq + Send + 'env,
        V: Send + 'env,
    {
        let tables: Arc<Mutex<Vec<Table<C, V>>>> = Arc::default();
        let kept = tables.clone();
        let emit = Arc::new(emit);
        let emit_held = emit.clone();
        let flush: Flush<'env, U> = Arc::new(move |out| {
            // Drained outside the lock: another lane may be counting meanwhile.
            let mut all = std::mem::take(&mut *lock(&kept));
            for table in &mut all {
                table.drain().for_each(|(c, v)| out(emit_held(c, v)));
            }
            lock(&kept).append(&mut all);
        });
        Combiner {
            op: Arc::new(move |batch, out| {
                let mut table = lock(&tables).pop().unwrap_or_default();
                batch(&mut |t| add(table.entry(key(&t)), t));
                if table.len() >= hold {
                    table.drain().for_each(|(c, v)| out(emit(c, v)));
                }
                lock(&tables).push(table);
            }),
            flush: Some(flush),
        }
    }
}

/// Locks the lanes' tables; a lane that panicked holding them left them whole (a table counts
/// a batch or not at all, and the flow fails with that lane anyway).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
