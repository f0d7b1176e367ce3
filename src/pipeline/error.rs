//! [`PipelineError`]: what can go wrong building or steering a pipeline.

use std::error::Error;
use std::fmt;

use crate::supervise::GroupError;
use crate::{BuildError, SubscribeError};

/// A pipeline could not be built or changed.
#[derive(Debug)]
#[non_exhaustive]
pub enum PipelineError {
    /// An option has a bad value; `option` names it (`processors.concurrency`, say).
    InvalidOption {
        /// The option.
        option: &'static str,
        /// What was wrong with it.
        message: String,
    },
    /// A stage could not be built.
    Build(BuildError),
    /// A stage could not subscribe to another.
    Subscribe(SubscribeError),
    /// The supervised group of producers and processors could not start.
    Start(GroupError),
    /// The pipeline has ended (or the stage it needed has).
    Ended,
}

impl PipelineError {
    pub(crate) fn invalid(option: &'static str, message: impl Into<String>) -> PipelineError {
        PipelineError::InvalidOption {
            option,
            message: message.into(),
        }
    }
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PipelineError::InvalidOption { option, message } => {
                write!(f, "pipeline: invalid option {option}: {message}")
            }
            PipelineError::Build(e) => write!(f, "pipeline: {e}"),
            PipelineError::Subscribe(e) => write!(f, "pipeline: {e}"),
            PipelineError::Start(e) => write!(f, "pipeline: {e}"),
            PipelineError::Ended => f.write_str("pipeline: it has ended"),
        }
    }
}

impl Error for PipelineError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            PipelineError::Build(e) => Some(e),
            PipelineError::Subscribe(e) => Some(e),
            PipelineError::Start(e) => Some(e),
            _ => None,
        }
    }
}

impl From<BuildError> for PipelineError {
    fn from(e: BuildError) -> PipelineError {
        PipelineError::Build(e)
    }
}

impl From<SubscribeError> for PipelineError {
    fn from(e: SubscribeError) -> PipelineError {
        PipelineError::Subscribe(e)
    }
}

impl From<GroupError> for PipelineError {
    fn from(e: GroupError) -> PipelineError {
        PipelineError::Start(e)
    }
}
