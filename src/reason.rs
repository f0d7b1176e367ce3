//! [`Reason`]: how a stage or a subscription ended.

use std::fmt;

/// How a stage, or one of its subscriptions, ended.
///
/// A stage's outcome, as returned by [`Stage::join`](crate::Stage::join), is a `Reason`; so is
/// the reason a subscription was cancelled, which consumers receive in
/// [`Consumer::handle_cancel`](crate::Consumer::handle_cancel) and react to by their
/// [`CancelMode`](crate::CancelMode).
///
/// `Normal` and `Shutdown` are the *normal* reasons (GenStage's `:normal` and `:shutdown`): a
/// [`Transient`](crate::CancelMode::Transient) subscription survives them; the others are
/// failures.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The stage finished normally: a producer called [`Context::finish`](crate::Context::finish)
    /// and delivered everything it had buffered, or a consumer's permanent subscription ended
    /// normally.
    Normal,
    /// The stage was stopped from outside ([`Stage::stop`](crate::Stage::stop)), or a
    /// subscription was cancelled because its peer was stopped.
    Shutdown,
    /// The stage ended with an error: [`Context::stop`](crate::Context::stop) with a message,
    /// or a failure that reached it through a permanent or transient subscription.
    Error(String),
    /// A callback of the stage panicked; the string is the panic message.
    Panicked(String),
}

impl Reason {
    /// Creates [`Reason::Error`] from any message.
    pub fn error(message: impl Into<String>) -> Reason {
        Reason::Error(message.into())
    }

    /// Returns `true` for [`Reason::Normal`] and [`Reason::Shutdown`], the reasons a transient
    /// subscription survives.
    pub fn is_normal(&self) -> bool {
        matches!(self, Reason::Normal | Reason::Shutdown)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Normal => f.write_str("normal"),
            Reason::Shutdown => f.write_str("shutdown"),
            Reason::Error(msg) => write!(f, "error: {msg}"),
            Reason::Panicked(msg) => write!(f, "panicked: {msg}"),
        }
    }
}
