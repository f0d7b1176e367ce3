//! HTTP producers on `ureq`: a streaming body read only while there is demand, and polling.

mod framing;
mod length;
mod lines;
mod sse;

pub use framing::{Frame, FrameDecoder, FrameError, Framing, Piece};
