//! [`IoError`], what building a source or a signal drain can fail with.

use std::error::Error;
use std::fmt;

/// Why a source or a signal drain could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum IoError {
    /// An option has a value it cannot take. `option` names it (`"max_record"`,
    /// `"framing"`, `"signals"`, ...); the message names the value.
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// What was expected and what was given.
        message: String,
    },
    /// The operating system refused to install the signal handlers.
    Signals(std::io::Error),
}

impl IoError {
    pub(crate) fn invalid(option: &'static str, message: String) -> IoError {
        IoError::InvalidOption { option, message }
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoError::InvalidOption { option, message } => {
                write!(f, "invalid io option {option}: {message}")
            }
            IoError::Signals(e) => write!(f, "io signals: could not install the handlers: {e}"),
        }
    }
}

impl Error for IoError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            IoError::Signals(e) => Some(e),
            IoError::InvalidOption { .. } => None,
        }
    }
}
