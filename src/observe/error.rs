//! [`ObserveError`]: what can go wrong starting a reporter or the dashboard.

use std::fmt;
use std::io;

/// Starting a [`Reporter`](super::Reporter) or a dashboard failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ObserveError {
    /// An option was out of range; the message names it and the value given.
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// What was wrong.
        message: String,
    },
    /// The dashboard could not bind its address.
    Bind(io::Error),
    /// A thread could not be started.
    Spawn(io::Error),
}

impl fmt::Display for ObserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObserveError::InvalidOption { option, message } => {
                write!(f, "invalid option {option}: {message}")
            }
            ObserveError::Bind(e) => write!(f, "observe: cannot bind the dashboard: {e}"),
            ObserveError::Spawn(e) => write!(f, "observe: cannot start a thread: {e}"),
        }
    }
}

impl std::error::Error for ObserveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ObserveError::Bind(e) | ObserveError::Spawn(e) => Some(e),
            ObserveError::InvalidOption { .. } => None,
        }
    }
}
