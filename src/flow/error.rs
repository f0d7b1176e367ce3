//! [`FlowError`]: why a flow could not start, or how it failed.

use std::error::Error;
use std::fmt;

use crate::{BuildError, Reason, SubscribeError};

/// Why a flow could not be built or run, or how it ended badly.
#[derive(Debug)]
#[non_exhaustive]
pub enum FlowError {
    /// An option has a value it cannot take. `option` names it; the message names the value.
    InvalidOption {
        /// The option's name, such as `"stages"`.
        option: &'static str,
        /// What was expected and what was given.
        message: String,
    },
    /// A stage of the flow could not be started.
    Build(BuildError),
    /// A stage of the flow could not subscribe (a source that has already ended, say).
    Subscribe(SubscribeError),
    /// A stage of the flow ended abnormally (a callback panicked, or it was stopped); the flow
    /// was stopped.
    Failed {
        /// The stage's name.
        stage: String,
        /// How it ended.
        reason: Reason,
    },
}

impl FlowError {
    pub(crate) fn invalid(option: &'static str, message: impl Into<String>) -> FlowError {
        FlowError::InvalidOption {
            option,
            message: message.into(),
        }
    }
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowError::InvalidOption { option, message } => {
                write!(f, "flow: invalid option {option}: {message}")
            }
            FlowError::Build(e) => write!(f, "flow: a stage could not start: {e}"),
            FlowError::Subscribe(e) => write!(f, "flow: a stage could not subscribe: {e}"),
            FlowError::Failed { stage, reason } => {
                write!(f, "flow: stage {stage} ended abnormally: {reason}")
            }
        }
    }
}

impl Error for FlowError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            FlowError::Build(e) => Some(e),
            FlowError::Subscribe(e) => Some(e),
            _ => None,
        }
    }
}

impl From<BuildError> for FlowError {
    fn from(e: BuildError) -> FlowError {
        FlowError::Build(e)
    }
}

impl From<SubscribeError> for FlowError {
    fn from(e: SubscribeError) -> FlowError {
        FlowError::Subscribe(e)
    }
}
