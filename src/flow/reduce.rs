//! Partitions and reducers: [`Partitions`] (how events are keyed into reducer stages),
//! [`Partitioned`] (the reductions), [`Reduced`] (what is emitted), and the reducer stage that
//! feeds a partition's [`Windows`] and sends on what they fire.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use super::clock::Clock;
use super::combine::{Combiner, HOLD_BYTES, HOLD_KEYS};
use super::departition::Departition;
use super::error::FlowError;
use super::run::{checked, Build, Mode};
use super::window::{Action, Emitted, Fired, Fold, Init, ScopedWindow, WindowId, Windows};
use super::{cores, ScopedFlow};
use crate::dispatcher::PartitionDispatcher;
use crate::BuildError;
use crate::Unscoped;
use crate::{Context, DemandMode, Direction, Events, ProducerConsumer, Reason, ScopedSource};
use crate::{SubscribeOptions, Subscription};

/// A flow's mapper lanes, to be spawned with a partition dispatcher each.
pub(crate) type Lanes<'env, T, W> = Box<
    dyn for<'s> FnOnce(
            &mut Build<'s, 'env, W>,
            &dyn Fn() -> Result<PartitionDispatcher<T>, FlowError>,
        ) -> Result<Vec<ScopedSource<'env, T>>, FlowError>
        + Send
        + 'env,
>;

/// A partitioned flow's mapper lanes before a reduction is chosen: as they are, or with a
/// combiner that sends `(event, count)` pairs.
pub(crate) type Mappers<'env, T, W> =
    Box<dyn FnOnce(Option<Combiner<'env, T, (T, u64)>>) -> Mapped<'env, T, W> + Send + 'env>;

/// What [`Mappers`] made: lanes of events, or (given a combiner) of `(event, count)` pairs.
pub(crate) enum Mapped<'env, T, W: Mode<'env>> {
    Events(Lanes<'env, T, W>),
    Pairs(Lanes<'env, (T, u64), W>),
}

/// A reduction's fold over a whole batch: one call per batch, the fold itself compiled into
/// its loop (where a call per event through [`Fold`] keeps the compiler from inlining it).
type FoldAll<'env, T, A> = Arc<dyn for<'a> Fn(&mut A, Events<'a, T>) + Send + Sync + 'env>;

/// Makes a mapper lane's partition dispatcher for `n` partitions, with the key and its hash
/// compiled into the dispatcher's hash function: routing an event is one indirect call.
type MakeDispatcher<'env, T> =
    Arc<dyn Fn(usize) -> Result<PartitionDispatcher<T>, BuildError> + Send + Sync + 'env>;

/// How a flow is partitioned: the key (or hash) that sends every event of one key to the same
/// reducer stage, how many reducer stages, their [`Window`](super::Window) and their demand (Flow's
/// `partition/2` options).
///
/// An event goes to partition `hash(event) % stages`. With [`by_key`](Partitions::by_key) the
/// hash is a fast fixed hash of the key (FxHash's steps with a final mix), the same in every
/// run and on every machine of one endianness (Flow's `:erlang.phash2`).
pub type Partitions<T> = ScopedPartitions<'static, T>;

/// [`Partitions`] whose window may borrow for `'env` (a [`ScopedWindow`]); what a flow in a
/// scope is partitioned by. Everything said of [`Partitions`] holds.
pub struct ScopedPartitions<'env, T> {
    dispatcher: MakeDispatcher<'env, T>,
    /// The same, for `(event, count)` pairs (a combiner's output), routed by the event (made
    /// from the key's own hash, never by wrapping a boxed one: see
    /// [`ScopedPartitions::with_hash`]).
    pairs: Option<MakeDispatcher<'env, (T, u64)>>,
    /// The hash the dispatchers route by (a combiner before them keeps events of different
    /// partitions apart).
    hash: Arc<dyn Fn(&T) -> u64 + Send + Sync + 'env>,
    stages: Option<usize>,
    window: ScopedWindow<'env, T>,
    max_demand: usize,
    min_demand: Option<usize>,
}

impl<T> fmt::Debug for ScopedPartitions<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Partitions")
            .field("stages", &self.stages)
            .field("window", &self.window)
            .field("max_demand", &self.max_demand)
            .field("min_demand", &self.min_demand)
            .finish()
    }
}

/// The hash [`Partitions::by_key`] uses.
fn hash_of<K: Hash>(key: &K) -> u64 {
    let mut h = Mix(0);
    key.hash(&mut h);
    h.finish()
}

/// A fast, fixed hash for choosing partitions (FxHash's word step, then SplitMix64's
/// finalizer so that the low bits, which `% stages` reads, depend on every input bit). From
/// zero it only spreads keys over stages: not for hash tables facing untrusted keys. From a
/// random seed ([`KeyHasher`]) it keys the combiner's table, which holds at most a batch of
/// keys: an input cannot aim at collisions without the seed, though it is no keyed
/// cryptographic hash as SipHash is.
pub(crate) struct Mix(u64);

impl Hasher for Mix {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            self.add(tail(rest));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The hash of the tables a flow keeps by key (the combiner's per-batch counts, the counts of
/// [`count_by_key`](Partitioned::count_by_key)'s windows): FxHash's word step from a random
/// seed, with SplitMix64's finalizer. A few instructions a short key where the standard
/// library's SipHash takes a hundred or more, and a seed no input can know in advance; each
/// value draws its own.
///
/// It is no keyed cryptographic hash, as SipHash is: for keys chosen by an adversary who can
/// see how long the flow takes (a denial of service by collisions), reduce into a
/// `HashMap` with the standard hasher yourself ([`Partitioned::reduce`]).
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// use stageflow::flow::KeyHasher;
///
/// let mut counts: HashMap<&str, u64, KeyHasher> = HashMap::default();
/// *counts.entry("word").or_insert(0) += 1;
/// assert_eq!(counts["word"], 1);
/// ```
#[derive(Clone)]
pub struct KeyHasher(u64);

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyHasher").finish_non_exhaustive()
    }
}

impl Default for KeyHasher {
    fn default() -> KeyHasher {
        use std::hash::BuildHasher;
        KeyHasher(std::collections::hash_map::RandomState::new().hash_one(0x5EED_u64))
    }
}

impl std::hash::BuildHasher for KeyHasher {
    type Hasher = KeyHash;

    fn build_hasher(&self) -> KeyHash {
        KeyHash(Mix(self.0))
    }
}

/// A window's counts while it fills, in [`count_by_key`](Partitioned::count_by_key) and
/// [`Flow::count_by_key`](super::Flow::count_by_key): emitted as a `HashMap<K, u64>`.
pub type KeyCounts<K> = HashMap<K, u64, KeyHasher>;

/// The hasher a [`KeyHasher`] builds.
pub struct KeyHash(Mix);

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyHash").finish_non_exhaustive()
    }
}

impl Hasher for KeyHash {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }

    fn write_u64(&mut self, n: u64) {
        self.0.write_u64(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.0.write_usize(n);
    }

    fn write_u32(&mut self, n: u32) {
        self.0.write_u32(n);
    }

    fn write_u8(&mut self, n: u8) {
        self.0.write_u8(n);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// The last 1 to 7 bytes of a key as a zero-padded little-endian word, read in at most three
/// loads (4, 2 and 1 bytes) rather than copied through memory or read a byte at a time.
#[inline]
fn tail(rest: &[u8]) -> u64 {
    let mut word = 0u64;
    let mut at = 0;
    if rest.len() >= 4 {
        word = u64::from(u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]));
        at = 4;
    }
    if rest.len() - at >= 2 {
        word |= u64::from(u16::from_le_bytes([rest[at], rest[at + 1]])) << (8 * at);
        at += 2;
    }
    if rest.len() > at {
        word |= u64::from(rest[at]) << (8 * at);
    }
    word
}

impl Mix {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517C_C1B7_2722_0A95);
    }
}

impl<'env, T> ScopedPartitions<'env, T> {
    /// Partitions by `hash`, a function of the caller's own type (never a boxed one): the
    /// dispatchers' hash functions are closures over it alone, so they are `'static` even
    /// when the events borrow.
    fn with_hash<H>(hash: H) -> ScopedPartitions<'env, T>
    where
        H: Fn(&T) -> u64 + Send + Sync + 'static,
    {
        let hash = Arc::new(hash);
        let (of_events, of_pairs) = (hash.clone(), hash.clone());
        ScopedPartitions {
            hash,
            dispatcher: Arc::new(move |n| {
                let hash = of_events.clone();
                PartitionDispatcher::new(n, move |e: &T| Some(hash(e) % n as u64))
            }),
            pairs: Some(Arc::new(move |n| {
                let hash = of_pairs.clone();
                PartitionDispatcher::new(n, move |(e, _): &(T, u64)| Some(hash(e) % n as u64))
            })),
            stages: None,
            window: ScopedWindow::global(),
            max_demand: 1000,
            min_demand: None,
        }
    }

    /// Partitions by the key `key` reads from each event (Flow's `:key` option).
    pub fn by_key<K: Hash>(
        key: impl Fn(&T) -> K + Send + Sync + 'static,
    ) -> ScopedPartitions<'env, T> {
        ScopedPartitions::with_hash(move |e: &T| hash_of(&key(e)))
    }

    /// Partitions by your own hash (Flow's `:hash` option): the event goes to partition
    /// `hash(event) % stages`, so a hash below `stages` names the partition itself.
    pub fn by_hash(hash: impl Fn(&T) -> u64 + Send + Sync + 'static) -> ScopedPartitions<'env, T> {
        ScopedPartitions::with_hash(hash)
    }

    /// How many reducer stages (partitions). Must be at least 1. Defaults to the number of
    /// cores.
    pub fn stages(mut self, n: usize) -> ScopedPartitions<'env, T> {
        self.stages = Some(n);
        self
    }

    /// The window of every partition. Defaults to [`Window::global`](super::Window::global).
    pub fn window(mut self, window: ScopedWindow<'env, T>) -> ScopedPartitions<'env, T> {
        self.window = window;
        self
    }

    /// The `max_demand` with which each reducer asks each mapper stage. Defaults to `1000`.
    pub fn max_demand(mut self, n: usize) -> ScopedPartitions<'env, T> {
        self.max_demand = n;
        self
    }

    /// The `min_demand` of the same subscriptions. Defaults to `max_demand / 2`.
    pub fn min_demand(mut self, n: usize) -> ScopedPartitions<'env, T> {
        self.min_demand = Some(n);
        self
    }
}

impl<'env, T: 'env> ScopedPartitions<'env, T> {
    /// The same partitions for `(key, count)` pairs: each pair to its key's partition.
    pub(crate) fn of_pairs(self) -> ScopedPartitions<'env, (T, u64)> {
        let Some(dispatcher) = self.pairs else {
            // Only a user's partitions are paired, and every constructor makes `pairs`.
            unreachable!("the partitions of (key, count) pairs are never paired again");
        };
        let hash = self.hash;
        ScopedPartitions {
            dispatcher,
            pairs: None,
            hash: Arc::new(move |(e, _): &(T, u64)| hash(e)),
            stages: self.stages,
            window: self.window.of_pairs(),
            max_demand: self.max_demand,
            min_demand: self.min_demand,
        }
    }

    /// How many keys a combiner's table (whose entries are `entry` bytes each) may hold
    /// before it sends them on: `None` where the window needs every event as it comes (count
    /// and fixed windows, `Every` triggers); `0` (after every batch) where it emits during
    /// the input; up to [`HOLD_KEYS`] (and [`HOLD_BYTES`]) where only the final result is
    /// ever seen (the global window without triggers): a lane then counts over its turn.
    pub(crate) fn combiner_hold(&self, entry: usize) -> Option<usize> {
        if !self.window.takes_pre_reduced() {
            None
        } else if self.window.holds_pre_reduced() {
            Some(HOLD_KEYS.min(HOLD_BYTES / entry.max(1)).max(1))
        } else {
            Some(0)
        }
    }
}

impl<'env, T: Hash> ScopedPartitions<'env, T> {
    /// Partitions by the whole event (Flow's default key).
    pub fn by_event() -> ScopedPartitions<'env, T> {
        ScopedPartitions::with_hash(|e: &T| hash_of(e))
    }
}

/// A partitioned flow, waiting for its reduction. Made by [`Flow::partition`](super::Flow::partition). Its methods
/// are [`ScopedPartitioned`]'s.
pub type Partitioned<T> = ScopedPartitioned<'static, T, Unscoped>;

/// A [`Partitioned`] flow whose events live for `'env` and whose stages start in `P`: made by
/// [`ScopedFlow::partition`].
pub struct ScopedPartitioned<'env, T, W: Mode<'env>> {
    mappers: Mappers<'env, T, W>,
    partitions: ScopedPartitions<'env, T>,
}

impl<'env, T, W: Mode<'env>> fmt::Debug for ScopedPartitioned<'env, T, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Partitioned")
            .field("partitions", &self.partitions)
            .finish()
    }
}

impl<'env, T: Send + 'env, W: Mode<'env>> ScopedPartitioned<'env, T, W> {
    pub(crate) fn new(
        mappers: Mappers<'env, T, W>,
        partitions: ScopedPartitions<'env, T>,
    ) -> ScopedPartitioned<'env, T, W> {
        ScopedPartitioned {
            mappers,
            partitions,
        }
    }

    /// The mapper lanes as they are.
    fn lanes(self) -> (Lanes<'env, T, W>, ScopedPartitions<'env, T>) {
        match (self.mappers)(None) {
            Mapped::Events(lanes) => (lanes, self.partitions),
            Mapped::Pairs(_) => unreachable!("mappers without a combiner send events"),
        }
    }

    /// The same partitions of `(event, count)` pairs, which `combiner`, the mapper lanes' last
    /// operation, makes of the events.
    fn combined(
        self,
        combiner: Combiner<'env, T, (T, u64)>,
    ) -> ScopedPartitioned<'env, (T, u64), W> {
        let lanes = match (self.mappers)(Some(combiner)) {
            Mapped::Pairs(lanes) => lanes,
            Mapped::Events(_) => unreachable!("mappers with a combiner send pairs"),
        };
        ScopedPartitioned::new(
            Box::new(move |_| Mapped::Events(lanes)),
            self.partitions.of_pairs(),
        )
    }

    /// Folds each window's events of each partition into an accumulator: `init()` starts a
    /// window's, `fold(&mut acc, event)` adds an event (Flow's `reduce/3`).
    pub fn reduce<A: Clone + Send + 'env>(
        self,
        init: impl Fn() -> A + Send + Sync + 'env,
        fold: impl Fn(&mut A, T) + Send + Sync + 'env,
    ) -> ScopedReduced<'env, T, A, A, W> {
        let fold = Arc::new(fold);
        let each = fold.clone();
        let (lanes, partitions) = self.lanes();
        ScopedReduced {
            lanes,
            partitions,
            init: Arc::new(init),
            fold,
            fold_all: Arc::new(move |acc: &mut A, events: Events<'_, T>| {
                events.for_each(|e| each(acc, e));
            }),
            finish: Arc::new(|a| a),
        }
    }

    /// Groups each window's events by `key`, keeping `value(event)` (Flow's `group_by/3`).
    pub fn group_by<K, V>(
        self,
        key: impl Fn(&T) -> K + Send + Sync + 'env,
        value: impl Fn(T) -> V + Send + Sync + 'env,
    ) -> ScopedReduced<'env, T, Groups<K, V>, Groups<K, V>, W>
    where
        K: Hash + Eq + Clone + Send + 'env,
        V: Clone + Send + 'env,
    {
        self.reduce(HashMap::new, move |acc: &mut HashMap<K, Vec<V>>, e| {
            acc.entry(key(&e)).or_default().push(value(e));
        })
    }

    /// Counts each window's events by `key` (Flow's `reduce` with a map of counts).
    ///
    /// Where the window allows (as for [`Flow::count_by_key`](super::Flow::count_by_key)),
    /// each mapper stage first counts its events by partition and key (a *combiner*) and
    /// sends one `(event, count)` pair per partition and key, an event of that key standing
    /// for all of them, instead of every event: fewer events to hash into partitions, send and
    /// fold. In the global window without triggers a lane that pulls its own iterators counts
    /// over its turn (up to 16 batches), its table holding at most 65 536 keys and 2 MB of
    /// entries (43 690 where the event and the key are each a `&str`), counted by their own
    /// size: an event that owns a heap value, a `String` say, holds that too while it waits
    /// in the table.
    /// Elsewhere (count and fixed windows, [`Every`](super::Trigger::Every) triggers) each
    /// event goes on as `(event, 1)`, and windows and triggers count events as before. Either
    /// way each window's counts are those of folding every event in its partition.
    ///
    /// Where the partition's key is the count's, [`Flow::count_by_key`](super::Flow::count_by_key)
    /// does both in one call with the key written once, keeps a key rather than an event per
    /// entry, and reads each key once where this reads the partition's key and the count's.
    ///
    /// A window counts in a table hashed with [`KeyHasher`] (a few instructions a key where
    /// SipHash takes a hundred or more) and is emitted as a standard `HashMap`.
    ///
    /// # Examples
    ///
    /// ```
    /// use stageflow::flow::{Flow, Partitions};
    ///
    /// let counts = Flow::from_iter(["the cat", "the dog", "a cat and the bird"])
    ///     .stages(2)
    ///     .flat_map(|line: &'static str| line.split(' '))
    ///     // Partitioned by the word's first letter, counted by the word.
    ///     .partition(Partitions::by_key(|w: &&str| w.as_bytes()[0]).stages(2))
    ///     .count_by_key(|w| *w)
    ///     .departition_counts()
    ///     .collect()?;
    /// assert_eq!(counts[0].value["the"], 3);
    /// assert_eq!(counts[0].value["cat"], 2);
    /// # Ok::<(), stageflow::flow::FlowError>(())
    /// ```
    pub fn count_by_key<K>(
        self,
        key: impl Fn(&T) -> K + Send + Sync + 'env,
    ) -> ScopedReduced<'env, (T, u64), KeyCounts<K>, HashMap<K, u64>, W>
    where
        K: Hash + Eq + Clone + Send + 'env,
    {
        let key = Arc::new(key);
        let entry = std::mem::size_of::<((u64, K), (T, u64))>();
        let combiner = match self.partitions.combiner_hold(entry) {
            Some(hold) => {
                // By partition and key: two events of one key bound for two partitions (the
                // partition's key is not the count's) stay apart.
                let (hash, key) = (self.partitions.hash.clone(), key.clone());
                Combiner::table(
                    hold,
                    move |e: &T| (hash(e), key(e)),
                    |entry: Entry<'_, _, (T, u64)>, e| match entry {
                        Entry::Occupied(mut kept) => kept.get_mut().1 += 1,
                        Entry::Vacant(new) => {
                            new.insert((e, 1));
                        }
                    },
                    |_, pair| pair,
                )
            }
            None => Combiner::each(|e| (e, 1)),
        };
        self.combined(combiner)
            .reduce(
                KeyCounts::default,
                move |counts: &mut KeyCounts<K>, (e, n)| {
                    *counts.entry(key(&e)).or_insert(0) += n;
                },
            )
            .map_state(|counts| counts.into_iter().collect())
    }

    /// Keeps each window's `n` greatest events by `by` (Flow's `take_sort/4`), greatest first;
    /// ties go to the smaller event, so the result does not depend on arrival order.
    pub fn take_top<K: Ord>(
        self,
        n: usize,
        by: impl Fn(&T) -> K + Send + Sync + 'env,
    ) -> ScopedReduced<'env, T, Vec<T>, Vec<T>, W>
    where
        T: Ord + Clone,
    {
        self.reduce(Vec::new, move |top: &mut Vec<T>, e| {
            let at = top.partition_point(|x| outranks(&by(x), x, &by(&e), &e));
            if at < n {
                top.insert(at, e);
                top.truncate(n);
            }
        })
    }
}

/// Adds a partition's `(key, count)` pairs into a window's map.
fn merge_counts<K: Hash + Eq, N: std::ops::AddAssign>(
    all: &mut HashMap<K, N>,
    part: impl IntoIterator<Item = (K, N)>,
) {
    for (k, n) in part {
        match all.entry(k) {
            std::collections::hash_map::Entry::Occupied(mut e) => *e.get_mut() += n,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(n);
            }
        }
    }
}

/// Whether `(ka, a)` goes before `(kb, b)` in a top list: greater key first, then smaller item.
fn outranks<K: Ord, I: Ord>(ka: &K, a: &I, kb: &K, b: &I) -> bool {
    match ka.cmp(kb) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => a <= b,
    }
}

/// The `n` greatest items by `by`, greatest first; ties go to the smaller item (so the result
/// is the same whatever order the items come in). What [`Reduced::take_top`] keeps.
///
/// # Examples
///
/// ```
/// let counts = vec![("b", 2), ("a", 2), ("c", 5), ("d", 1)];
/// let top = stageflow::flow::top_n(counts, 3, |(_, n)| *n);
/// assert_eq!(top, vec![("c", 5), ("a", 2), ("b", 2)]);
/// ```
pub fn top_n<I: Ord, K: Ord>(
    items: impl IntoIterator<Item = I>,
    n: usize,
    by: impl Fn(&I) -> K,
) -> Vec<I> {
    let mut all: Vec<(K, I)> = items.into_iter().map(|i| (by(&i), i)).collect();
    all.sort_by(|(ka, a), (kb, b)| kb.cmp(ka).then_with(|| a.cmp(b)));
    all.truncate(n);
    all.into_iter().map(|(_, i)| i).collect()
}

/// What [`ScopedPartitioned::group_by`] keeps per window.
type Groups<K, V> = HashMap<K, Vec<V>>;

/// A flow of what a reduction emits.
type Emits<'env, O, W> = ScopedFlow<'env, Emitted<O>, Emitted<O>, W>;

type Finish<'env, A, B> = Arc<dyn Fn(A) -> B + Send + Sync + 'env>;

/// A reduced flow: a partitioned flow with its reduction, waiting to be told what to emit.
/// Made by [`Partitioned::reduce`] and its kin.
///
/// `A` is the accumulator; `B` what each emission makes of it ([`map_state`](Reduced::map_state),
/// [`take_top`](Reduced::take_top)).
///
/// Its methods are [`ScopedReduced`]'s.
pub type Reduced<T, A, B = A> = ScopedReduced<'static, T, A, B, Unscoped>;

/// A [`Reduced`] flow whose events live for `'env` and whose stages start in `P`.
pub struct ScopedReduced<'env, T, A, B, W: Mode<'env>> {
    lanes: Lanes<'env, T, W>,
    partitions: ScopedPartitions<'env, T>,
    init: Init<'env, A>,
    fold: Fold<'env, T, A>,
    fold_all: FoldAll<'env, T, A>,
    finish: Finish<'env, A, B>,
}

impl<'env, T, A, B, W: Mode<'env>> fmt::Debug for ScopedReduced<'env, T, A, B, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reduced")
            .field("partitions", &self.partitions)
            .finish()
    }
}

/// What a reducer sends on, before the emit mode shapes it.
#[derive(Debug)]
pub(crate) enum Part<B> {
    Fire {
        index: u64,
        window: WindowId,
        fired: Fired,
        partition: usize,
        value: B,
    },
    ClosedBelow {
        partition: usize,
        below: u64,
    },
    Done {
        partition: usize,
    },
}

type Emit<'env, B, O> = Arc<dyn Fn(Part<B>, &mut Vec<O>) + Send + Sync + 'env>;

impl<'env, T, A, B, W> ScopedReduced<'env, T, A, B, W>
where
    T: Send + 'env,
    A: Clone + Send + 'env,
    B: Send + 'env,
    W: Mode<'env>,
{
    /// Makes each emission `f(state)` instead of the state (in the spirit of Flow's
    /// `on_trigger`, without changing the accumulator kept).
    pub fn map_state<C: Send + 'env>(
        self,
        f: impl Fn(B) -> C + Send + Sync + 'env,
    ) -> ScopedReduced<'env, T, A, C, W> {
        let prev = self.finish;
        ScopedReduced {
            lanes: self.lanes,
            partitions: self.partitions,
            init: self.init,
            fold: self.fold,
            fold_all: self.fold_all,
            finish: Arc::new(move |a| f(prev(a))),
        }
    }

    /// Makes each emission the `n` greatest items of the state by `by` (see [`top_n`]): after
    /// [`count_by_key`](Partitioned::count_by_key), a window's top `n` keys by count.
    pub fn take_top<I, K>(
        self,
        n: usize,
        by: impl Fn(&I) -> K + Send + Sync + 'env,
    ) -> ScopedReduced<'env, T, A, Vec<I>, W>
    where
        B: IntoIterator<Item = I>,
        I: Ord + Send + 'env,
        K: Ord,
    {
        self.map_state(move |state| top_n(state, n, &by))
    }

    /// Emits each window's state, with its window, why it fired and its partition (Flow's
    /// `emit(:state)`), as a flow to run or continue.
    pub fn emit_state(self) -> Emits<'env, B, W> {
        let emit: Emit<'env, B, Emitted<B>> = Arc::new(|part, out| {
            if let Part::Fire {
                window,
                fired,
                partition,
                value,
                ..
            } = part
            {
                out.push(Emitted {
                    window,
                    fired,
                    partition: Some(partition),
                    value,
                });
            }
        });
        ScopedFlow::from_sources(Box::new(move |b: &mut Build<'_, 'env, W>| {
            self.spawn(b, emit)
        }))
    }

    /// Emits the items of each window's state (Flow's default, `emit(:events)`), as a flow to
    /// run or continue.
    pub fn emit_events(self) -> ScopedFlow<'env, B::Item, B::Item, W>
    where
        B: IntoIterator,
        B::Item: Send + 'env,
    {
        let emit: Emit<'env, B, B::Item> = Arc::new(|part, out| {
            if let Part::Fire { value, .. } = part {
                out.extend(value);
            }
        });
        ScopedFlow::from_sources(Box::new(move |b: &mut Build<'_, 'env, W>| {
            self.spawn(b, emit)
        }))
    }

    /// Merges each window's final states from every partition into one stage (Flow's
    /// `departition/5`): `init()` starts a window's merge, `merge(&mut acc, state)` adds a
    /// partition's state, and `done(acc)` is emitted, once per window, in window order, once
    /// every partition has closed that window (or the input has completed).
    ///
    /// Intermediate emissions (triggers, watermarks) stay inside the partitions: a departition
    /// emits each window once, with its complete result. A partition that has not yet seen
    /// event time or processing time pass a window holds that window back for all: event-time
    /// windows of a partition that gets no events close only when the input completes, and
    /// those of a partition whose [watermark](super::Window#event-time-and-the-watermark) an idle
    /// lane holds back wait for that lane to send or end.
    ///
    /// The common merges are ready-made: [`departition_sum`](Reduced::departition_sum)
    /// (totals), [`departition_counts`](Reduced::departition_counts) (maps of counts, added),
    /// [`departition_collect`](Reduced::departition_collect) (one `Vec`) and
    /// [`departition_top`](Reduced::departition_top) (a top list).
    pub fn departition<M, O>(
        self,
        init: impl Fn() -> M + Send + Sync + 'env,
        merge: impl Fn(&mut M, B) + Send + Sync + 'env,
        done: impl Fn(M) -> O + Send + Sync + 'env,
    ) -> Emits<'env, O, W>
    where
        M: Send + 'env,
        O: Send + 'env,
    {
        let emit: Emit<'env, B, Part<B>> = Arc::new(|part, out| out.push(part));
        ScopedFlow::from_sources(Box::new(move |b: &mut Build<'_, 'env, W>| {
            let partitions = self.partitions.stages.unwrap_or_else(cores);
            let options = reducer_options(&self.partitions)?;
            let reducers = self.spawn(b, emit)?;
            let merger = Departition::new(partitions, init, merge, done);
            let mut builder = crate::producer_consumer(merger).name(b.name("departition"));
            for r in &reducers {
                builder = builder.subscribe_to(r, options.clone())?;
            }
            let stage = builder.spawn_in(b.place())?;
            b.add(&stage);
            Ok(vec![crate::Upstream::source(&stage)])
        }))
    }

    /// Sums each window's values from every partition: a [`departition`](Reduced::departition)
    /// with `B::default()` to start and `+=` to merge. For totals: a count, a sum, a
    /// [`Duration`].
    ///
    /// # Examples
    ///
    /// ```
    /// use stageflow::flow::{Flow, Partitions};
    ///
    /// let total = Flow::from_iter(1..=100u64)
    ///     .partition(Partitions::by_event().stages(3))
    ///     .reduce(|| 0u64, |sum: &mut u64, x| *sum += x)
    ///     .departition_sum()
    ///     .collect()?;
    /// assert_eq!(total[0].value, 5050);
    /// # Ok::<(), stageflow::flow::FlowError>(())
    /// ```
    pub fn departition_sum(self) -> Emits<'env, B, W>
    where
        B: Default + std::ops::AddAssign,
    {
        self.departition(B::default, |all: &mut B, part| *all += part, |all| all)
    }

    /// Merges each window's `(key, count)` pairs from every partition into one map, adding
    /// the counts of a key that more than one partition counted: what follows a
    /// [`count_by_key`](super::Flow::count_by_key) (whose partitions hold disjoint keys) or a
    /// [`Partitioned::count_by_key`] by a key other than the partition's (whose partitions may
    /// each count the same key). Any iterable of pairs will do, and any count type with `+=`.
    ///
    /// # Examples
    ///
    /// ```
    /// use stageflow::flow::{Flow, Partitions};
    ///
    /// let lines = ["the cat", "the dog", "a cat and the bird"];
    /// let counts = Flow::from_iter(lines)
    ///     .flat_map(|line: &'static str| line.split(' '))
    ///     .count_by_key(|word: &&str| *word, Partitions::by_event().stages(2))
    ///     .departition_counts()
    ///     .collect()?;
    /// assert_eq!(counts[0].value["the"], 3);
    /// assert_eq!(counts[0].value["bird"], 1);
    /// # Ok::<(), stageflow::flow::FlowError>(())
    /// ```
    pub fn departition_counts<K, N>(self) -> Emits<'env, HashMap<K, N>, W>
    where
        B: IntoIterator<Item = (K, N)>,
        K: Hash + Eq + Send + 'env,
        N: std::ops::AddAssign + Send + 'env,
    {
        self.departition(HashMap::new, merge_counts, |all| all)
    }

    /// Collects each window's items from every partition into one `Vec`: the partitions'
    /// states (each an iterable: a `Vec`, a map's pairs) one after the other, in the order the
    /// partitions' results arrive (sort it if order matters).
    ///
    /// # Examples
    ///
    /// ```
    /// use stageflow::flow::{Flow, Partitions};
    ///
    /// let evens = Flow::from_iter(0..10u32)
    ///     .partition(Partitions::by_event().stages(2))
    ///     .reduce(Vec::new, |v: &mut Vec<u32>, x| {
    ///         if x % 2 == 0 {
    ///             v.push(x)
    ///         }
    ///     })
    ///     .departition_collect()
    ///     .collect()?;
    /// let mut all = evens[0].value.clone();
    /// all.sort_unstable();
    /// assert_eq!(all, [0, 2, 4, 6, 8]);
    /// # Ok::<(), stageflow::flow::FlowError>(())
    /// ```
    pub fn departition_collect<I>(self) -> Emits<'env, Vec<I>, W>
    where
        B: IntoIterator<Item = I>,
        I: Send + 'env,
    {
        self.departition(
            Vec::new,
            |all: &mut Vec<I>, part| all.extend(part),
            |all| all,
        )
    }

    /// Keeps each window's `n` greatest items by `by` over every partition (see [`top_n`]:
    /// greatest first, ties to the smaller item): a window's top list, once its partitions
    /// are merged. Each item must be whole in one partition (a key's count, after
    /// partitioning by that key); to rank counts that several partitions share, merge them
    /// with [`departition_counts`](Reduced::departition_counts) and rank the map.
    ///
    /// # Examples
    ///
    /// ```
    /// use stageflow::flow::{Flow, Partitions};
    ///
    /// let lines = ["the cat", "the dog", "a cat and the bird"];
    /// let top = Flow::from_iter(lines)
    ///     .flat_map(|line: &'static str| line.split(' '))
    ///     .count_by_key(|word: &&str| *word, Partitions::by_event().stages(2))
    ///     .take_top(2, |(_, n)| *n) // each partition's top 2 ...
    ///     .departition_top(2, |(_, n)| *n) // ... and the top 2 of those
    ///     .collect()?;
    /// assert_eq!(top[0].value, [("the", 3), ("cat", 2)]);
    /// # Ok::<(), stageflow::flow::FlowError>(())
    /// ```
    pub fn departition_top<I, K>(
        self,
        n: usize,
        by: impl Fn(&I) -> K + Send + Sync + 'env,
    ) -> Emits<'env, Vec<I>, W>
    where
        B: IntoIterator<Item = I>,
        I: Ord + Send + 'env,
        K: Ord,
    {
        self.departition(
            Vec::new,
            |all: &mut Vec<I>, part| all.extend(part),
            move |all| top_n(all, n, &by),
        )
    }

    /// Spawns the lanes and the reducers; returns the reducers' outputs.
    fn spawn<O: Send + 'env>(
        self,
        b: &mut Build<'_, 'env, W>,
        emit: Emit<'env, B, O>,
    ) -> Result<Vec<ScopedSource<'env, O>>, FlowError> {
        let p = &self.partitions;
        p.window.validate()?;
        let n = p.stages.unwrap_or_else(cores);
        if n == 0 {
            return Err(FlowError::invalid(
                "partition stages",
                "expected partition stages to be at least 1, got 0",
            ));
        }
        let options = reducer_options(p)?;
        let dispatcher = p.dispatcher.clone();
        let make = move || dispatcher(n).map_err(FlowError::from);
        let lanes = (self.lanes)(b, &make)?;
        let mut outs = Vec::with_capacity(n);
        for partition in 0..n {
            let window = &self.partitions.window;
            let reducer = ReduceStage {
                partition,
                windows: Windows::new(
                    window,
                    self.init.clone(),
                    self.fold.clone(),
                    window.clock.now(),
                ),
                fold_all: self.fold_all.clone(),
                clock: window.clock.clone(),
                tick: window.tick_period(),
                finish: self.finish.clone(),
                emit: emit.clone(),
                live: 0,
                ticking: false,
                done: false,
                actions: Vec::new(),
            };
            let mut builder = crate::producer_consumer(reducer).name(b.name("reduce"));
            for l in &lanes {
                builder = builder.subscribe_to(l, options.clone().partition(partition as u64))?;
            }
            let stage = builder.spawn_in(b.place())?;
            b.add(&stage);
            outs.push(crate::Upstream::source(&stage));
        }
        Ok(outs)
    }
}

fn reducer_options<T>(p: &ScopedPartitions<'_, T>) -> Result<SubscribeOptions, FlowError> {
    let mut o = SubscribeOptions::new().max_demand(p.max_demand);
    if let Some(min) = p.min_demand {
        o = o.min_demand(min);
    }
    checked(o)
}

/// The reducer's timer message: read the clock.
#[derive(Debug)]
pub(crate) struct Tick;

/// One partition's reducer: feeds its windows, sends on what they fire.
struct ReduceStage<'env, T, A, B, O> {
    partition: usize,
    windows: Windows<'env, T, A>,
    fold_all: FoldAll<'env, T, A>,
    clock: Arc<dyn Clock>,
    tick: Option<Duration>,
    finish: Finish<'env, A, B>,
    emit: Emit<'env, B, O>,
    /// Upstream subscriptions not yet ended.
    live: usize,
    ticking: bool,
    done: bool,
    actions: Vec<Action<A>>,
}

impl<T, A, B, O> ReduceStage<'_, T, A, B, O>
where
    T: Send,
    A: Clone + Send,
    B: Send,
    O: Send,
{
    fn send(&mut self, ctx: &mut Context<'_, O, Tick>) {
        if self.actions.is_empty() {
            return;
        }
        let mut out = Vec::new();
        for action in self.actions.drain(..) {
            let part = match action {
                Action::Fire {
                    index,
                    window,
                    fired,
                    value,
                } => Part::Fire {
                    index,
                    window,
                    fired,
                    partition: self.partition,
                    value: (self.finish)(value),
                },
                Action::ClosedBelow(below) => Part::ClosedBelow {
                    partition: self.partition,
                    below,
                },
            };
            (self.emit)(part, &mut out);
        }
        ctx.emit_all(out);
    }
}

impl<T, A, B, O> ProducerConsumer for ReduceStage<'_, T, A, B, O>
where
    T: Send,
    A: Clone + Send,
    B: Send,
    O: Send,
{
    type In = T;
    type Out = O;
    type Message = Tick;

    fn handle_events(&mut self, events: Events<'_, T>, ctx: &mut Context<'_, O, Tick>) {
        let now = self.clock.now();
        let lane = events.subscription();
        let n = events.len() as u64;
        match self.windows.batch_window(n, now, &mut self.actions) {
            // The whole batch to one window: one call folds it.
            Some(acc) => (self.fold_all)(acc, events),
            None => self.windows.push_all(lane, events, now, &mut self.actions),
        }
        self.send(ctx);
    }

    fn handle_message(&mut self, _: Tick, ctx: &mut Context<'_, O, Tick>) {
        if self.done {
            return;
        }
        self.windows.tick(self.clock.now(), &mut self.actions);
        self.send(ctx);
        if let Some(every) = self.tick {
            ctx.send_after(Tick, every);
        }
    }

    fn handle_subscribe(
        &mut self,
        sub: &Subscription,
        ctx: &mut Context<'_, O, Tick>,
    ) -> DemandMode {
        if sub.direction() == Direction::Upstream {
            self.live += 1;
            self.windows.subscribe(sub.id());
            if let (false, Some(every)) = (self.ticking, self.tick) {
                self.ticking = true;
                ctx.send_after(Tick, every);
            }
        }
        DemandMode::Automatic
    }

    fn handle_cancel(&mut self, sub: &Subscription, _: &Reason, ctx: &mut Context<'_, O, Tick>) {
        if sub.direction() != Direction::Upstream {
            return;
        }
        self.live = self.live.saturating_sub(1);
        // An ended lane no longer holds event time back: windows may close.
        self.windows.end_lane(sub.id(), &mut self.actions);
        self.send(ctx);
        if self.live == 0 && !self.done {
            // The input completed: every window emits, then the partition says it is done.
            self.done = true;
            self.windows.finish(&mut self.actions);
            self.send(ctx);
            let mut out = Vec::new();
            (self.emit)(
                Part::Done {
                    partition: self.partition,
                },
                &mut out,
            );
            ctx.emit_all(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_hash_spreads_similar_keys_over_few_partitions() {
        for n in [2u64, 3, 4, 7] {
            let mut per = vec![0u64; n as usize];
            for i in 0..10_000 {
                per[(hash_of(&format!("w{i}")) % n) as usize] += 1;
            }
            let fair = 10_000 / n;
            for (p, c) in per.iter().enumerate() {
                assert!(
                    c.abs_diff(fair) < fair / 10,
                    "{n} partitions: {p} got {c} ({per:?})"
                );
            }
        }
        // Integers too (the low bits of the product alone would not spread these).
        let mut per = [0u64; 4];
        for i in 0..10_000u64 {
            per[(hash_of(&(i * 4)) % 4) as usize] += 1;
        }
        assert!(per.iter().all(|c| c.abs_diff(2500) < 250), "{per:?}");
    }

    #[test]
    fn the_key_hash_reads_a_short_tail_as_a_zero_padded_little_endian_word() {
        // The partitions a key goes to do not depend on how the tail is read.
        for len in 0..=17usize {
            let bytes: Vec<u8> = (1..=len as u8).map(|b| b.wrapping_mul(37)).collect();
            let mut fast = Mix(0);
            fast.write(&bytes);
            let mut padded = Mix(0);
            for chunk in bytes.chunks(8) {
                let mut word = [0u8; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                padded.add(u64::from_le_bytes(word));
            }
            assert_eq!(fast.finish(), padded.finish(), "{len} bytes");
        }
    }

    #[test]
    fn partitions_route_events_and_pairs_by_the_same_key() {
        let p = Partitions::by_key(|w: &String| w.len());
        let mut events = (p.dispatcher)(3).unwrap();
        let pairs = p.of_pairs();
        let mut pairs = (pairs.dispatcher)(3).unwrap();
        for w in ["a", "bb", "ccc", "dddd", "eeeee"] {
            let expected = hash_of(&w.len()) % 3;
            assert_eq!(route(&mut events, w.to_string()), expected, "{w}");
            assert_eq!(route(&mut pairs, (w.to_string(), 7)), expected, "{w}");
        }
    }

    /// The partition `d` sends `event` to, each partition having asked for one event.
    fn route<T: Send + 'static>(d: &mut PartitionDispatcher<T>, event: T) -> u64 {
        use crate::dispatcher::{Dispatcher, Outbox};
        use crate::{SubscribeOptions, SubscriptionId};
        let subs: Vec<SubscriptionId> = (0..d.partitions().len())
            .map(|i| {
                let sub = SubscriptionId::unique();
                let on = SubscribeOptions::new().partition(i as u64);
                d.subscribe(sub, &on).unwrap();
                sub
            })
            .collect();
        let mut to = None;
        {
            let mut sent = |sub, _: Vec<T>| to = subs.iter().position(|s| *s == sub);
            let mut out = Outbox::new(&mut sent);
            for &sub in &subs {
                d.ask(sub, 1, &mut out);
            }
            d.dispatch(&mut vec![event], &mut out);
            for &sub in &subs {
                d.cancel(sub, &mut out);
            }
        }
        to.expect("sent to a partition") as u64
    }

    #[test]
    fn a_seeded_hash_agrees_with_itself_and_differs_between_seeds() {
        use std::hash::BuildHasher;
        let (a, b) = (KeyHasher::default(), KeyHasher::default());
        assert_eq!(a.hash_one("word"), a.clone().hash_one("word"));
        assert_ne!(a.hash_one("word"), a.hash_one("ward"));
        assert_ne!(
            a.hash_one("word"),
            b.hash_one("word"),
            "two draws of 64 bits"
        );
    }

    #[test]
    fn top_lists_break_ties_by_the_smaller_item() {
        let items = vec![("b", 1), ("c", 3), ("a", 1), ("d", 3)];
        assert_eq!(
            top_n(items, 3, |(_, n)| *n),
            vec![("c", 3), ("d", 3), ("a", 1)]
        );
        assert_eq!(top_n(Vec::<(u8, u8)>::new(), 3, |x| x.1), vec![]);
    }
}
