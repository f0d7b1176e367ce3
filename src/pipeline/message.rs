//! [`Message`]: the data a pipeline carries with its metadata, its status and its
//! acknowledger; [`Acknowledger`] and the grouping of acknowledgements (pure, no threads).

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use log::error;

use super::metadata::Metadata;

/// Whether a message has failed, and why.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// Nothing failed (yet).
    Ok,
    /// A handler returned an error, panicked, or called [`Message::fail`]; the string says
    /// which and why (a panic reads `panicked: <message>`).
    Failed(String),
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Ok => f.write_str("ok"),
            Status::Failed(reason) => write!(f, "failed: {reason}"),
        }
    }
}

/// What an [`Acknowledger`] learns of one message: the id its producer gave it, its metadata
/// and its final status. The data itself is not handed back (its type changes along the
/// pipeline; the id is what a queue needs to acknowledge a delivery).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Acked {
    /// The id given with [`Message::acknowledger`] (or `static_acknowledger`, or
    /// `pipeline_acknowledger`).
    pub id: u64,
    /// The message's metadata.
    pub metadata: Metadata,
    /// [`Status::Ok`] in the successful list, [`Status::Failed`] in the failed one.
    pub status: Status,
}

/// Told once for every message that has gone through the pipeline, successful or failed
/// (Broadway's `Broadway.Acknowledger`).
///
/// Calls come **in groups**: one call per acknowledger per processed batch (or, without
/// batchers, per batch of events a processor handled), never one per message. A message is
/// acknowledged exactly once; after [`Message::ack_immediately`], never again.
///
/// # For implementors
///
/// `ack` runs on the thread of the stage that finished the messages (a processor or a batch
/// processor), so it should be quick: hand the ids to the queue's client and return. A panic
/// in it is caught and logged; the messages count as acknowledged anyway. Any
/// `Fn(Vec<Acked>, Vec<Acked>) + Send + Sync` closure is an acknowledger.
pub trait Acknowledger: Send + Sync + 'static {
    /// Acknowledges `successful` and `failed` messages (either list may be empty, not both).
    fn ack(&self, successful: Vec<Acked>, failed: Vec<Acked>);
}

impl<F> Acknowledger for F
where
    F: Fn(Vec<Acked>, Vec<Acked>) + Send + Sync + 'static,
{
    fn ack(&self, successful: Vec<Acked>, failed: Vec<Acked>) {
        self(successful, failed)
    }
}

/// Who acknowledges a message: shared (a reference count per message), `'static` (none), or
/// the pipeline's own (none either: the pipeline holds it).
#[derive(Clone)]
enum By {
    Shared(Arc<dyn Acknowledger>),
    Static(&'static dyn Acknowledger),
    Pipeline,
}

impl By {
    /// The acknowledger, `pipeline` standing for the pipeline's (if it has one).
    #[inline]
    fn get<'a>(&'a self, pipeline: Option<&'a dyn Acknowledger>) -> Option<&'a dyn Acknowledger> {
        match self {
            By::Shared(a) => Some(&**a),
            By::Static(a) => Some(*a),
            By::Pipeline => pipeline,
        }
    }

    /// The acknowledger's address: messages with the same one are acknowledged in one call
    /// (null for the pipeline's where it has none).
    #[inline]
    fn key(&self, pipeline: Option<&dyn Acknowledger>) -> *const () {
        self.get(pipeline).map_or(std::ptr::null(), |a| {
            a as *const dyn Acknowledger as *const ()
        })
    }
}

thread_local! {
    /// The pipeline's acknowledger, on the threads of the stages that acknowledge (for
    /// [`Message::ack_immediately`] in a handler).
    static PIPELINE_ACK: std::cell::RefCell<Option<Arc<dyn Acknowledger>>> =
        const { std::cell::RefCell::new(None) };
}

/// The pipeline's acknowledger as a stage that acknowledges holds it.
pub(crate) struct PipelineAck(Option<Arc<dyn Acknowledger>>);

impl PipelineAck {
    pub(crate) fn new(ack: Option<Arc<dyn Acknowledger>>) -> PipelineAck {
        PipelineAck(ack)
    }

    /// Makes it the acknowledger of the pipeline whose handlers run on this thread now (for
    /// [`Message::ack_immediately`] in them): once per batch, before the handlers. A stage
    /// keeps its thread, so it is nearly always so already (a pointer compared).
    #[inline]
    pub(crate) fn enter(&self) {
        let _ = PIPELINE_ACK.try_with(|cell| {
            let mut current = cell.borrow_mut();
            let same = match (&*current, &self.0) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if !same {
                *current = self.0.clone();
            }
        });
    }

    /// The acknowledger, if the pipeline has one.
    #[inline]
    pub(crate) fn get(&self) -> Option<&dyn Acknowledger> {
        self.0.as_deref()
    }
}

impl Drop for PipelineAck {
    /// The thread lets go of it with the stage (dropped on the stage's thread before the
    /// stage's end is published), not when the thread exits after that.
    fn drop(&mut self) {
        let _ = PIPELINE_ACK.try_with(|cell| {
            let mut current = cell.borrow_mut();
            if let (Some(a), Some(b)) = (&*current, &self.0) {
                if Arc::ptr_eq(a, b) {
                    *current = None;
                }
            }
        });
    }
}

/// Messages told to the pipeline's acknowledger in a pipeline that has none: said once.
fn no_pipeline_acknowledger() {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        log::warn!(
            "pipeline: messages set with `pipeline_acknowledger` finished in a pipeline that \
             has no acknowledger (`Builder::acknowledger`): nobody was told of them"
        );
    }
}

/// An acknowledger and the id it knows the message by.
#[derive(Clone)]
struct Ack {
    by: By,
    id: u64,
}

/// One unit of work in a pipeline: `data`, `metadata`, a [`Status`], an optional
/// [`Acknowledger`], and the batcher it goes to (Broadway's `%Broadway.Message{}`).
///
/// Producers of a pipeline emit `Message<T>`; processors turn a `Message<I>` into a
/// `Message<O>` (keeping metadata, acknowledger and batcher); batchers group them.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use stageflow::pipeline::{Acked, Message, Status};
///
/// let ack = Arc::new(|ok: Vec<Acked>, failed: Vec<Acked>| {
///     println!("{} ok, {} failed", ok.len(), failed.len());
/// });
/// let mut m = Message::new("hello").acknowledger(ack, 7);
/// m.metadata.insert("topic".into(), "greetings".into());
/// m.put_batcher("s3");
/// assert_eq!(m.ack_id(), Some(7));
/// assert_eq!(m.batcher(), Some("s3"));
/// m.fail("no such bucket");
/// assert_eq!(m.status(), &Status::Failed("no such bucket".into()));
/// ```
pub struct Message<T> {
    /// The payload.
    pub data: T,
    /// Free-form metadata.
    pub metadata: Metadata,
    /// `None` while [`Status::Ok`]: most messages never fail, and a smaller message is
    /// cheaper to move from stage to stage.
    failed: Option<Box<Status>>,
    ack: Option<Ack>,
    batcher: Option<Arc<str>>,
}

impl<T: fmt::Debug> fmt::Debug for Message<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("data", &self.data)
            .field("metadata", &self.metadata)
            .field("status", self.status())
            .field("ack_id", &self.ack_id())
            .field("batcher", &self.batcher)
            .finish()
    }
}

impl<T> Message<T> {
    /// A message with no metadata and no acknowledger (nothing is told when it is done).
    pub fn new(data: T) -> Message<T> {
        Message {
            data,
            metadata: Metadata::new(),
            failed: None,
            ack: None,
            batcher: None,
        }
    }

    /// Sets who is told when the message is done, and the `id` it is known by (Broadway's
    /// `configure_ack`; a delivery tag, an offset, an index).
    ///
    /// Each message holds a clone of the `Arc`: one atomic increment where the producer makes
    /// the message and one decrement where it is acknowledged, on a counter every message
    /// shares, so the producer's and the batchers' cores take turns owning it. An
    /// acknowledger that lives as long as the program is cheaper as
    /// [`static_acknowledger`](Message::static_acknowledger).
    pub fn acknowledger(mut self, acknowledger: Arc<dyn Acknowledger>, id: u64) -> Message<T> {
        self.ack = Some(Ack {
            by: By::Shared(acknowledger),
            id,
        });
        self
    }

    /// As [`acknowledger`](Message::acknowledger), for an acknowledger that lives as long as
    /// the program (a `static`, or one leaked once with [`Box::leak`]): the message holds a
    /// plain reference, with no reference count to update per message (what Broadway's
    /// acknowledger is: a module and a term). Messages with the same acknowledger, whichever
    /// way it was set, are acknowledged in one call.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use stageflow::pipeline::{Acked, Acknowledger, Message};
    ///
    /// static ACKED: AtomicU64 = AtomicU64::new(0);
    /// // One acknowledger for the program's life, leaked once (a `static` item works too).
    /// let ack: &'static dyn Acknowledger =
    ///     Box::leak(Box::new(|ok: Vec<Acked>, _failed: Vec<Acked>| {
    ///         ACKED.fetch_add(ok.len() as u64, Ordering::Relaxed);
    ///     }));
    /// let m = Message::new("hello").static_acknowledger(ack, 7);
    /// assert_eq!(m.ack_id(), Some(7));
    /// ```
    pub fn static_acknowledger(
        mut self,
        acknowledger: &'static dyn Acknowledger,
        id: u64,
    ) -> Message<T> {
        self.ack = Some(Ack {
            by: By::Static(acknowledger),
            id,
        });
        self
    }

    /// Sets the `id` the pipeline's own acknowledger knows it by
    /// ([`Builder::acknowledger`](super::Builder::acknowledger)): the cheapest way, with
    /// nothing per message but the id. The message refers to no acknowledger of its own, so
    /// no reference count is updated where it is made and where it is acknowledged (with
    /// [`acknowledger`](Message::acknowledger), the producer's and the batcher's cores take
    /// turns owning one counter for every message: about a quarter of the CPU of a pipeline
    /// whose handlers do little, `BENCHMARKS.md`, "stop 24"). Messages of the pipeline's
    /// acknowledger are grouped as any others.
    ///
    /// In a pipeline without an acknowledger, such messages are counted as acknowledged and
    /// nobody is told (a warning says so, once).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use stageflow::pipeline::{self, Acked, Message, ProcessorOptions};
    ///
    /// let acked = Arc::new(AtomicU64::new(0));
    /// let a = acked.clone();
    /// let p = pipeline::builder("ids")
    ///     .acknowledger(Arc::new(move |ok: Vec<Acked>, _failed: Vec<Acked>| {
    ///         a.fetch_add(ok.len() as u64, Ordering::Relaxed);
    ///     }))
    ///     .producer(|_| {
    ///         stageflow::from_iter((0..100u64).map(|i| Message::new(i).pipeline_acknowledger(i)))
    ///     })
    ///     .processors(ProcessorOptions::new(), |m: &mut Message<u64>| {
    ///         Ok::<_, String>(m.data * 2)
    ///     })
    ///     .start()?;
    /// p.join();
    /// assert_eq!(acked.load(Ordering::Relaxed), 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pipeline_acknowledger(mut self, id: u64) -> Message<T> {
        self.ack = Some(Ack {
            by: By::Pipeline,
            id,
        });
        self
    }

    /// The id its acknowledger knows it by; `None` without an acknowledger, or once
    /// acknowledged by [`ack_immediately`](Message::ack_immediately).
    pub fn ack_id(&self) -> Option<u64> {
        self.ack.as_ref().map(|a| a.id)
    }

    /// Its status.
    pub fn status(&self) -> &Status {
        static OK: Status = Status::Ok;
        self.failed.as_deref().unwrap_or(&OK)
    }

    /// Whether it has failed.
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Marks it failed: it goes to `handle_failed` and is acknowledged as failed (Broadway's
    /// `Message.failed/2`). In a processor, the message then never reaches a batcher.
    pub fn fail(&mut self, reason: impl Into<String>) {
        self.failed = Some(Box::new(Status::Failed(reason.into())));
    }

    /// Sends it to the batcher named `name` (Broadway's `put_batcher`). Without it, a message
    /// goes to the pipeline's first batcher. A name the pipeline does not have fails the
    /// message (`unknown batcher`).
    pub fn put_batcher(&mut self, name: &str) {
        if self.batcher.as_deref() != Some(name) {
            self.batcher = Some(name.into());
        }
    }

    /// The batcher it goes to, if one was put.
    pub fn batcher(&self) -> Option<&str> {
        self.batcher.as_deref()
    }

    /// Acknowledges it now, with its current status, on its own (one `ack` call); when it
    /// later finishes the pipeline, nothing more is acknowledged (Broadway's
    /// `ack_immediately`). For messages whose side effect is done early.
    pub fn ack_immediately(&mut self) {
        if let Some(Ack {
            by: By::Pipeline, ..
        }) = &self.ack
        {
            // The pipeline's acknowledger, as this thread (one of the pipeline's stages) has it:
            // used where it is, with no reference count taken (its counter is shared by every
            // processor's thread).
            let told = PIPELINE_ACK
                .try_with(|cell| match cell.borrow().as_deref() {
                    Some(pipeline) => {
                        self.ack_now(Some(pipeline));
                        true
                    }
                    None => false,
                })
                .unwrap_or(false);
            if !told {
                log::warn!(
                    "pipeline: ack_immediately outside the pipeline's processors and batch \
                     processors on a message of the pipeline's acknowledger: it is \
                     acknowledged when it finishes the pipeline"
                );
            }
            return;
        }
        self.ack_now(None);
    }

    /// Acknowledges it now, `pipeline` standing for the pipeline's acknowledger.
    fn ack_now(&mut self, pipeline: Option<&dyn Acknowledger>) {
        if let Some(ack) = self.ack.take() {
            let acked = Acked {
                id: ack.id,
                metadata: self.metadata.clone(),
                status: self.status().clone(),
            };
            let (ok, failed) = if self.is_failed() {
                (Vec::new(), vec![acked])
            } else {
                (vec![acked], Vec::new())
            };
            if let Some(by) = ack.by.get(pipeline) {
                call(by, ok, failed);
            }
        }
    }

    /// The same message carrying `data` instead (metadata, status, acknowledger and batcher
    /// are kept).
    pub fn with_data<U>(self, data: U) -> Message<U> {
        Message {
            data,
            metadata: self.metadata,
            failed: self.failed,
            ack: self.ack,
            batcher: self.batcher,
        }
    }

    /// The batcher's name as a shared string (for the processors' routing).
    pub(crate) fn batcher_arc(&self) -> Option<&Arc<str>> {
        self.batcher.as_ref()
    }
}

/// Calls an acknowledger, containing a panic.
fn call(by: &dyn Acknowledger, ok: Vec<Acked>, failed: Vec<Acked>) {
    if catch_unwind(AssertUnwindSafe(|| by.ack(ok, failed))).is_err() {
        error!("pipeline: an acknowledger panicked; its messages count as acknowledged");
    }
}

/// Acknowledges messages in groups: one call per distinct acknowledger, `pipeline` standing
/// for the pipeline's. Returns how many were successful and how many failed (messages
/// without an acknowledger included).
///
/// Every message (its data included) is dropped before the acknowledgers are called. The
/// messages are read in place (what an `Acked` needs is taken out of each) and dropped
/// together; a batch of successful messages for one lasting acknowledger in one loop.
pub(crate) fn ack_all<T>(
    mut messages: Vec<Message<T>>,
    pipeline: Option<&dyn Acknowledger>,
) -> (u64, u64) {
    // The common batch: every message successful and told to one acknowledger that outlives
    // the messages. One look at each, then the `Acked`s in one exact-size loop.
    if let Some(by) = lasting_acknowledger(&messages, pipeline) {
        return ack_lasting(messages, by);
    }
    ack_grouped(&mut messages, pipeline)
}

/// [`ack_all`]'s general way: one call per distinct acknowledger; `messages` is left empty
/// (its allocation kept).
fn ack_grouped<T>(
    messages: &mut Vec<Message<T>>,
    pipeline: Option<&dyn Acknowledger>,
) -> (u64, u64) {
    struct Group {
        key: *const (),
        by: By,
        ok: Vec<Acked>,
        failed: Vec<Acked>,
    }
    let mut groups: Vec<Group> = Vec::new();
    let (mut ok, mut failed) = (0, 0);
    let mut rest = messages.iter_mut();
    while let Some(m) = rest.next() {
        let failure = m.failed.take();
        let is_failed = failure.is_some();
        if is_failed {
            failed += 1;
        } else {
            ok += 1;
        }
        let Some(Ack { by, id }) = m.ack.take() else {
            continue;
        };
        let key = by.key(pipeline);
        let at = match groups.iter().position(|g| g.key == key) {
            Some(i) => i,
            None => {
                // The first group is sized for every message left (there is usually one
                // acknowledger): one allocation per batch, not one per doubling.
                let room = match (groups.is_empty(), is_failed) {
                    (true, false) => rest.len() + 1,
                    _ => 0,
                };
                groups.push(Group {
                    key,
                    by,
                    ok: Vec::with_capacity(room),
                    failed: Vec::new(),
                });
                groups.len() - 1
            }
        };
        let group = &mut groups[at];
        let acked = Acked {
            id,
            metadata: std::mem::take(&mut m.metadata),
            status: failure.map_or(Status::Ok, |f| *f),
        };
        if is_failed {
            group.failed.push(acked);
        } else {
            group.ok.push(acked);
        }
        // The common run: successful messages of the same acknowledger, taken without
        // looking the group up again (a run of the pipeline's own is told by its tag alone).
        let pipeline_run = matches!(group.by, By::Pipeline);
        let same = |by: &By| match by {
            By::Pipeline if pipeline_run => true,
            by => by.key(pipeline) == key,
        };
        let list = &mut group.ok;
        let in_run =
            |m: &Message<T>| m.failed.is_none() && m.ack.as_ref().is_some_and(|a| same(&a.by));
        while rest.as_slice().first().is_some_and(in_run) {
            let Some(m) = rest.next() else { break };
            list.push(Acked {
                id: m.ack.as_ref().map_or(0, |a| a.id),
                metadata: std::mem::take(&mut m.metadata),
                status: Status::Ok,
            });
            ok += 1;
        }
    }
    // What is left of the messages (their data) goes before anyone is told.
    messages.clear();
    for g in groups {
        match g.by.get(pipeline) {
            Some(by) => call(by, g.ok, g.failed),
            None => no_pipeline_acknowledger(),
        }
    }
    (ok, failed)
}

/// [`ack_all`] for a batch none of whose messages failed (the common batch, looked at once);
/// a batch where one did is handed back untouched.
pub(crate) fn ack_unless_failed<T>(
    messages: Vec<Message<T>>,
    pipeline: Option<&dyn Acknowledger>,
) -> Result<(u64, u64), Vec<Message<T>>> {
    if let Some(by) = lasting_acknowledger(&messages, pipeline) {
        return Ok(ack_lasting(messages, by));
    }
    if messages.iter().any(Message::is_failed) {
        return Err(messages);
    }
    Ok(ack_all(messages, pipeline))
}

/// Acknowledges successful messages that all go to `by` (see [`lasting_acknowledger`]).
fn ack_lasting<T>(messages: Vec<Message<T>>, by: &dyn Acknowledger) -> (u64, u64) {
    // Each message is taken apart where it lies, its `Acked` built in the same allocation
    // (an in-place collect).
    let ok: Vec<Acked> = messages.into_iter().map(lasting_acked).collect();
    let n = ok.len() as u64;
    call(by, ok, Vec::new());
    (n, 0)
}

/// [`ack_all`], leaving `messages` empty with its allocation: for a stage that gives the
/// allocation back to where it was made (see `recycle`). The common batch (every message
/// successful, for one lasting acknowledger) gets its `Acked` list in an allocation of this
/// thread; any other takes `ack_all`'s general way.
pub(crate) fn ack_all_emptying<T>(
    messages: &mut Vec<Message<T>>,
    pipeline: Option<&dyn Acknowledger>,
) -> (u64, u64) {
    let Some(by) = lasting_acknowledger(messages, pipeline) else {
        return ack_grouped(messages, pipeline);
    };
    let ok: Vec<Acked> = messages.drain(..).map(lasting_acked).collect();
    let n = ok.len() as u64;
    call(by, ok, Vec::new());
    (n, 0)
}

/// A message of a batch [`lasting_acknowledger`] has looked at, taken apart into its `Acked`.
/// It has seen that no message failed and that none holds a reference count: those two
/// fields own nothing, and are let go without the checks their drop would make (a leak at
/// worst, were that ever wrong, never unsound).
#[inline(always)]
fn lasting_acked<T>(m: Message<T>) -> Acked {
    let Message {
        data,
        metadata,
        failed,
        ack,
        batcher,
    } = m;
    drop(data);
    drop(batcher);
    debug_assert!(
        failed.is_none()
            && !matches!(
                &ack,
                Some(Ack {
                    by: By::Shared(_),
                    ..
                })
            )
    );
    let id = ack.as_ref().map_or(0, |a| a.id);
    std::mem::forget((failed, ack));
    Acked {
        id,
        metadata,
        status: Status::Ok,
    }
}

/// The acknowledger of every message in `messages` if they all have the same one, it is the
/// pipeline's own or a `'static` one (it outlives the messages), and none of them failed.
fn lasting_acknowledger<'a, T>(
    messages: &[Message<T>],
    pipeline: Option<&'a dyn Acknowledger>,
) -> Option<&'a dyn Acknowledger> {
    // Told by the tag alone for the pipeline's own, by the address for a `'static` one (one
    // of each with the same address takes `ack_all`'s general way, as correct, slower).
    let first = &messages.first()?.ack.as_ref()?.by;
    let by = match first {
        By::Pipeline => pipeline?,
        By::Static(a) => *a,
        By::Shared(_) => return None,
    };
    let same = |m: &Message<T>| {
        m.failed.is_none()
            && match (m.ack.as_ref().map(|a| &a.by), first) {
                (Some(By::Pipeline), By::Pipeline) => true,
                (Some(By::Static(a)), By::Static(b)) => std::ptr::addr_eq(*a, *b),
                _ => false,
            }
    };
    messages.iter().all(same).then_some(by)
}

/// The failure of a message whose handler panicked, from the panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let message = crate::panic_message(payload).unwrap_or("a non-string payload");
    format!("panicked: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    type Log = Arc<Mutex<Vec<(Vec<u64>, Vec<u64>)>>>;

    fn recorder() -> (Arc<dyn Acknowledger>, Log) {
        let log: Log = Arc::default();
        let l = log.clone();
        let ack = move |ok: Vec<Acked>, failed: Vec<Acked>| {
            l.lock().push((
                ok.iter().map(|a| a.id).collect(),
                failed.iter().map(|a| a.id).collect(),
            ));
        };
        (Arc::new(ack), log)
    }

    #[test]
    fn one_call_per_acknowledger_per_group() {
        let (a, log_a) = recorder();
        let (b, log_b) = recorder();
        let mut msgs: Vec<Message<u32>> = (0..6)
            .map(|i| {
                let by = if i % 2 == 0 { a.clone() } else { b.clone() };
                Message::new(i).acknowledger(by, u64::from(i))
            })
            .collect();
        msgs[2].fail("bad");
        msgs.push(Message::new(9)); // no acknowledger: counted, told to nobody
        assert_eq!(ack_all(msgs, None), (6, 1));
        assert_eq!(*log_a.lock(), vec![(vec![0, 4], vec![2])]);
        assert_eq!(*log_b.lock(), vec![(vec![1, 3, 5], vec![])]);
    }

    #[test]
    fn a_static_acknowledger_is_one_group_and_apart_from_shared_ones() {
        static CALLS: std::sync::Mutex<Vec<(Vec<u64>, Vec<u64>)>> =
            std::sync::Mutex::new(Vec::new());
        static BY: fn(Vec<Acked>, Vec<Acked>) = |ok, failed| {
            CALLS.lock().expect("not poisoned").push((
                ok.iter().map(|a| a.id).collect(),
                failed.iter().map(|a| a.id).collect(),
            ));
        };
        let (shared, log) = recorder();
        let mut msgs: Vec<Message<u32>> = (0..5)
            .map(|i| match i {
                1 => Message::new(i).acknowledger(shared.clone(), u64::from(i)),
                _ => Message::new(i).static_acknowledger(&BY, u64::from(i)),
            })
            .collect();
        msgs[3].fail("bad");
        assert_eq!(ack_all(msgs, None), (4, 1));
        assert_eq!(
            *CALLS.lock().expect("not poisoned"),
            vec![(vec![0, 2, 4], vec![3])]
        );
        assert_eq!(*log.lock(), vec![(vec![1], vec![])]);
        // A batch all for it, all successful: one call, in order.
        let msgs: Vec<Message<u32>> = (5..9)
            .map(|i| Message::new(i).static_acknowledger(&BY, u64::from(i)))
            .collect();
        assert_eq!(ack_all(msgs, None), (4, 0));
        assert_eq!(
            CALLS.lock().expect("not poisoned").last(),
            Some(&(vec![5, 6, 7, 8], vec![]))
        );
        // Two `'static` ones in one successful batch: each told of its own.
        static OTHER: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());
        static BY_OTHER: fn(Vec<Acked>, Vec<Acked>) = |ok, _| {
            OTHER
                .lock()
                .expect("not poisoned")
                .extend(ok.iter().map(|a| a.id));
        };
        let msgs: Vec<Message<u32>> = vec![
            Message::new(1).static_acknowledger(&BY, 10),
            Message::new(2).static_acknowledger(&BY_OTHER, 11),
        ];
        assert_eq!(ack_all(msgs, None), (2, 0));
        assert_eq!(
            CALLS.lock().expect("not poisoned").last(),
            Some(&(vec![10], vec![]))
        );
        assert_eq!(*OTHER.lock().expect("not poisoned"), vec![11]);
    }

    #[test]
    fn acknowledging_emptying_tells_the_same_and_keeps_the_allocation() {
        // The common batch (one lasting acknowledger, none failed) and a mixed one.
        let (a, log) = recorder();
        let mut msgs: Vec<Message<u32>> = (0..4)
            .map(|i| Message::new(i).pipeline_acknowledger(u64::from(i)))
            .collect();
        let at = msgs.as_ptr();
        assert_eq!(ack_all_emptying(&mut msgs, Some(&*a)), (4, 0));
        assert!(msgs.is_empty());
        assert_eq!(msgs.as_ptr(), at, "its allocation kept");
        assert_eq!(*log.lock(), vec![(vec![0, 1, 2, 3], vec![])]);
        let (b, log_b) = recorder();
        let mut msgs: Vec<Message<u32>> = (0..4)
            .map(|i| Message::new(i).acknowledger(b.clone(), u64::from(i)))
            .collect();
        msgs[1].fail("bad");
        msgs.push(Message::new(9));
        let at = msgs.as_ptr();
        assert_eq!(ack_all_emptying(&mut msgs, None), (4, 1));
        assert!(msgs.is_empty());
        assert_eq!(msgs.as_ptr(), at, "its allocation kept");
        assert_eq!(*log_b.lock(), vec![(vec![0, 2, 3], vec![1])]);
    }

    #[test]
    fn ack_immediately_acks_once() {
        let (a, log) = recorder();
        let mut m = Message::new(1).acknowledger(a, 3);
        m.ack_immediately();
        m.ack_immediately();
        assert_eq!(m.ack_id(), None);
        assert_eq!(ack_all(vec![m], None), (1, 0));
        assert_eq!(*log.lock(), vec![(vec![3], vec![])]);
    }

    #[test]
    fn a_panicking_acknowledger_is_contained() {
        let by: Arc<dyn Acknowledger> = Arc::new(|_: Vec<Acked>, _: Vec<Acked>| panic!("boom"));
        assert_eq!(
            ack_all(vec![Message::new(1).acknowledger(by, 1)], None),
            (1, 0)
        );
    }

    #[test]
    fn the_pipelines_acknowledger_is_one_group_and_none_tells_nobody() {
        let (piped, log_p) = recorder();
        let (own, log_o) = recorder();
        let mut msgs: Vec<Message<u32>> = vec![
            Message::new(0).pipeline_acknowledger(0),
            Message::new(1).pipeline_acknowledger(1),
            Message::new(2).acknowledger(own, 2),
            Message::new(3).pipeline_acknowledger(3),
        ];
        msgs[1].fail("bad");
        assert_eq!(ack_all(msgs, Some(&*piped)), (3, 1));
        assert_eq!(*log_p.lock(), vec![(vec![0, 3], vec![1])]);
        assert_eq!(*log_o.lock(), vec![(vec![2], vec![])]);
        // A pipeline without one: counted, nobody told.
        let msgs = (0..3u32)
            .map(|i| Message::new(i).pipeline_acknowledger(u64::from(i)))
            .collect();
        assert_eq!(ack_all(msgs, None), (3, 0));
        assert_eq!(log_p.lock().len(), 1);
    }

    #[test]
    fn a_successful_batch_keeps_its_ids_and_metadata_and_drops_its_data_first() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        /// Data that counts its drops.
        struct Data(Arc<AtomicUsize>);
        impl Drop for Data {
            fn drop(&mut self) {
                self.0.fetch_add(1, SeqCst);
            }
        }
        type Seen = Vec<(u64, Option<String>, bool, usize)>;
        let dropped = Arc::new(AtomicUsize::new(0));
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let (d, s) = (dropped.clone(), seen.clone());
        let by: Arc<dyn Acknowledger> = Arc::new(move |ok: Vec<Acked>, failed: Vec<Acked>| {
            assert!(failed.is_empty());
            // How much data was dropped when the acknowledger was told.
            let at = d.load(SeqCst);
            s.lock().extend(ok.into_iter().map(|a| {
                let v = a.metadata.get("k").cloned();
                (a.id, v, a.status == Status::Ok, at)
            }));
        });
        let batch = |acked_by: &dyn Fn(Message<Data>, u64) -> Message<Data>| {
            (0..4u64)
                .map(|i| {
                    let mut m = acked_by(Message::new(Data(dropped.clone())), 10 + i);
                    if i % 2 == 1 {
                        m.metadata.insert("k".into(), format!("v{i}"));
                    }
                    m
                })
                .collect::<Vec<_>>()
        };
        let want = |at| {
            vec![
                (10, None, true, at),
                (11, Some("v1".to_string()), true, at),
                (12, None, true, at),
                (13, Some("v3".to_string()), true, at),
            ]
        };
        // The pipeline's own acknowledger, then the same one named by each message.
        let pipeline = batch(&|m, id| m.pipeline_acknowledger(id));
        assert_eq!(ack_all(pipeline, Some(&*by)), (4, 0));
        assert_eq!(std::mem::take(&mut *seen.lock()), want(4));
        let shared = batch(&|m, id| m.acknowledger(by.clone(), id));
        assert_eq!(ack_all(shared, None), (4, 0));
        assert_eq!(std::mem::take(&mut *seen.lock()), want(8));
    }

    #[test]
    fn ack_immediately_off_the_pipelines_threads_keeps_the_message_for_later() {
        // This test's thread is none of a pipeline's stages: nothing to tell now, so the
        // message keeps its acknowledgement for the end of the pipeline.
        let (piped, log) = recorder();
        let mut m = Message::new(1u32).pipeline_acknowledger(4);
        m.ack_immediately();
        assert_eq!(m.ack_id(), Some(4));
        assert!(log.lock().is_empty());
        assert_eq!(ack_all(vec![m], Some(&*piped)), (1, 0));
        assert_eq!(*log.lock(), vec![(vec![4], vec![])]);
    }
}
