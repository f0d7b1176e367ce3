//! [`StageResult`]: what a stage's value, once the stage has ended, gives back as its result
//! ([`Stage::join_result`](crate::Stage::join_result)).

/// A stage whose value holds a result once the stage has ended: a fold's accumulator, a
/// collection, a model it trained. [`Stage::join_result`](crate::Stage::join_result) joins
/// the stage and hands this result back, in one call.
///
/// # For implementors
///
/// Implement it for a consumer (or producer-consumer) of yours whose value is worth keeping,
/// and build the stage with [`keep_state`](crate::StageBuilder::keep_state). Return `None`
/// when the value holds no result (a fold whose function panicked mid-way); `join_result`
/// then reports [`JoinError::NoResult`](crate::JoinError::NoResult).
///
/// # Examples
///
/// ```
/// use stageflow::{Consumer, ConsumerContext, Events, StageResult, SubscribeOptions};
///
/// /// Keeps the longest word it saw.
/// #[derive(Default)]
/// struct Longest(Option<String>);
///
/// impl Consumer for Longest {
///     type In = String;
///     type Message = ();
///     fn handle_events(&mut self, events: Events<'_, String>, _: &mut ConsumerContext<'_>) {
///         for w in events {
///             if self.0.as_ref().is_none_or(|l| w.len() > l.len()) {
///                 self.0 = Some(w);
///             }
///         }
///     }
/// }
///
/// impl StageResult for Longest {
///     type Output = String;
///     fn into_output(self) -> Option<String> {
///         self.0 // none for an empty input
///     }
/// }
///
/// let words = stageflow::from_iter(["demand", "back-pressure", "credit"].map(String::from));
/// let words = words.spawn()?;
/// let longest = stageflow::consumer(Longest::default())
///     .keep_state()
///     .subscribe_to(&words, SubscribeOptions::new())?
///     .spawn()?;
/// assert_eq!(longest.join_result()?, "back-pressure");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait StageResult {
    /// The result.
    type Output;

    /// The result, or `None` if the value holds none.
    fn into_output(self) -> Option<Self::Output>;
}
