//! Error types, one per failure domain: subscribing, building a stage, calling, casting and
//! control.

use std::error::Error;
use std::fmt;

/// Why a subscription could not be made.
///
/// Returned when a consumer subscribes, at build time
/// ([`StageBuilder::subscribe_to`](crate::StageBuilder::subscribe_to)) or at run time
/// ([`Stage::subscribe_to`](crate::Stage::subscribe_to)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscribeError {
    /// An option has a value it cannot take. `option` names it; the message names the value.
    InvalidOption {
        /// The option's name, such as `"max_demand"`.
        option: &'static str,
        /// What was expected and what was given, e.g.
        /// `"expected max_demand to be at least 1, got 0"`.
        message: String,
    },
    /// The producer has already ended, so nothing can subscribe to it.
    ProducerGone {
        /// The producer's name.
        producer: String,
    },
    /// The consumer has already ended.
    ConsumerGone {
        /// The consumer's name.
        consumer: String,
    },
    /// The producer's dispatcher refused the subscription (for example a partition that is
    /// already taken). The message says why.
    Rejected {
        /// The producer's name.
        producer: String,
        /// The dispatcher's reason.
        message: String,
    },
    /// A stage asked to subscribe to itself (a cycle of one stage could never finish).
    SelfSubscription {
        /// The stage's name.
        stage: String,
    },
    /// The producer did not confirm the subscription within the subscribe timeout
    /// ([`SubscribeOptions::timeout`](crate::SubscribeOptions::timeout)); the request was
    /// cancelled.
    Timeout {
        /// The producer's name.
        producer: String,
    },
}

impl SubscribeError {
    pub(crate) fn invalid(option: &'static str, message: String) -> SubscribeError {
        SubscribeError::InvalidOption { option, message }
    }
}

impl fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubscribeError::InvalidOption { message, .. } => {
                write!(f, "invalid subscribe option: {message}")
            }
            SubscribeError::ProducerGone { producer } => {
                write!(f, "cannot subscribe: producer {producer} has ended")
            }
            SubscribeError::ConsumerGone { consumer } => {
                write!(f, "cannot subscribe: consumer {consumer} has ended")
            }
            SubscribeError::Rejected { producer, message } => {
                write!(f, "subscription rejected by producer {producer}: {message}")
            }
            SubscribeError::SelfSubscription { stage } => {
                write!(
                    f,
                    "cannot subscribe: stage {stage} cannot subscribe to itself"
                )
            }
            SubscribeError::Timeout { producer } => {
                write!(
                    f,
                    "subscription to producer {producer} was not confirmed in time"
                )
            }
        }
    }
}

impl Error for SubscribeError {}

/// Why a stage could not be built and started.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// A stage option has a value it cannot take, e.g. `buffer_size` 0.
    InvalidOption {
        /// The option's name, such as `"buffer_size"`.
        option: &'static str,
        /// What was expected and what was given.
        message: String,
    },
    /// One of the subscriptions given to the builder failed.
    Subscribe(SubscribeError),
    /// The operating system refused to start the stage's thread.
    Spawn(std::io::Error),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::InvalidOption { message, .. } => {
                write!(f, "invalid stage option: {message}")
            }
            BuildError::Subscribe(e) => write!(f, "stage subscription failed: {e}"),
            BuildError::Spawn(e) => write!(f, "could not start the stage thread: {e}"),
        }
    }
}

impl Error for BuildError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            BuildError::Subscribe(e) => Some(e),
            BuildError::Spawn(e) => Some(e),
            BuildError::InvalidOption { .. } => None,
        }
    }
}

impl From<SubscribeError> for BuildError {
    fn from(e: SubscribeError) -> BuildError {
        BuildError::Subscribe(e)
    }
}

/// Why a [`call`](crate::Stage::call) returned no reply.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// The stage has ended (or ended while handling the call) and will never reply.
    Stopped,
    /// The timeout passed before the stage replied.
    Timeout,
    /// The stage handled the message but dropped its [`Reply`](crate::Reply) without replying
    /// (for example a `handle_message` that does not know the message).
    NoReply,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Stopped => f.write_str("call failed: the stage has stopped"),
            CallError::Timeout => f.write_str("call failed: no reply before the timeout"),
            CallError::NoReply => f.write_str("call failed: the stage dropped the reply"),
        }
    }
}

impl Error for CallError {}

/// Why a message could not be [`cast`](crate::Stage::cast) to a stage. The message is handed
/// back.
#[derive(PartialEq, Eq)]
#[non_exhaustive]
pub enum CastError<M> {
    /// The stage has ended.
    Stopped(M),
    /// The stage's inbox is full (only from [`try_cast`](crate::Stage::try_cast), or
    /// [`cast_timeout`](crate::Stage::cast_timeout) when the time ran out).
    Full(M),
}

impl<M> CastError<M> {
    /// Returns the message that was not delivered.
    pub fn into_inner(self) -> M {
        match self {
            CastError::Stopped(m) | CastError::Full(m) => m,
        }
    }
}

impl<M> fmt::Debug for CastError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CastError::Stopped(_) => f.write_str("Stopped(..)"),
            CastError::Full(_) => f.write_str("Full(..)"),
        }
    }
}

impl<M> fmt::Display for CastError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CastError::Stopped(_) => f.write_str("cast failed: the stage has stopped"),
            CastError::Full(_) => f.write_str("cast failed: the stage's inbox is full"),
        }
    }
}

impl<M> Error for CastError<M> {}

/// Why a control request could not reach a stage: a [`cancel`](crate::Stage::cancel), an
/// [`ask`](crate::Stage::ask) or a [`set_demand`](crate::Stage::set_demand). Control has a
/// path of its own that never fills (unlike a [cast](CastError)), so it fails only when the
/// stage has ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlError {
    /// The stage has ended.
    Stopped {
        /// The stage's name.
        stage: String,
    },
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::Stopped { stage } => {
                write!(f, "control failed: stage {stage} has stopped")
            }
        }
    }
}

impl Error for ControlError {}

/// Why [`Stage::join_result`](crate::Stage::join_result) has no result to hand back. The
/// stage has ended in every case; where it kept its value, the value stays with it, for
/// [`Stage::join_state`](crate::Stage::join_state) to take.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinError {
    /// A callback of the stage panicked: its result is partial, or gone with the unwinding.
    Panicked {
        /// The stage's name.
        stage: String,
        /// The panic message.
        message: String,
    },
    /// The stage did not finish normally: it was stopped ([`Reason::Shutdown`]), or it ended
    /// with an error ([`Reason::Error`], its own or a producer's), so its result may be
    /// partial.
    ///
    /// [`Reason::Shutdown`]: crate::Reason::Shutdown
    /// [`Reason::Error`]: crate::Reason::Error
    Ended {
        /// The stage's name.
        stage: String,
        /// How it ended.
        reason: crate::Reason,
    },
    /// The stage finished normally but holds no result: it was not built with
    /// [`keep_state`](crate::StageBuilder::keep_state), another call took its value already,
    /// or its value had none to give.
    NoResult {
        /// The stage's name.
        stage: String,
    },
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked { stage, message } => {
                write!(f, "no result: stage {stage} panicked: {message}")
            }
            JoinError::Ended { stage, reason } => write!(
                f,
                "no result: stage {stage} ended with {reason}, not normally (its result may be \
                 partial: join_state hands it back)"
            ),
            JoinError::NoResult { stage } => write!(
                f,
                "no result: stage {stage} kept none (build it with keep_state; only the first \
                 call gets the value)"
            ),
        }
    }
}

impl Error for JoinError {}
