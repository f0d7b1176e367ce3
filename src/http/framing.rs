//! Stream framings: [`FrameDecoder`] cuts the bytes of a response body into frames, with no
//! I/O. Bytes go in with [`FrameDecoder::push`], in chunks of any size split anywhere; frames,
//! heartbeats and framing errors come out of [`FrameDecoder::next_piece`]. A frame is only
//! ever returned whole: bytes of an unfinished frame stay inside until the rest arrives (or
//! [`FrameDecoder::reset`] drops them, as after a cut connection).
//!
//! Each framing has its own file: `lines.rs` (newline-delimited JSON and plain lines),
//! `length.rs` (length-prefixed frames) and `sse.rs` (Server-Sent Events).

use std::fmt;
use std::time::Duration;

use super::length::LengthState;
use super::lines::LinesState;
use super::sse::SseState;

/// How a response body is cut into frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Framing {
    /// Newline-delimited JSON (Twitter/X v2 streams): one frame per line, `\n` or `\r\n`
    /// separated; a blank line is a keep-alive heartbeat.
    #[default]
    Ndjson,
    /// Length-prefixed frames (Twitter v1.1 `delimited=length`): a decimal byte count on its
    /// own line, then exactly that many bytes (a trailing `\r\n` inside them is trimmed).
    /// Blank lines before a length are heartbeats.
    LengthPrefixed,
    /// Server-Sent Events (`text/event-stream`): `data:` lines joined with `\n` make a frame,
    /// ended by a blank line; `event:` and `id:` are kept with it, `retry:` is remembered,
    /// comments (`:` lines) are heartbeats.
    Sse,
    /// Plain lines, for anything else: every line is a frame, empty ones included.
    Lines,
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Framing::Ndjson => "ndjson",
            Framing::LengthPrefixed => "length-prefixed",
            Framing::Sse => "sse",
            Framing::Lines => "lines",
        })
    }
}

/// One frame cut from a body, borrowed from the decoder until the next call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    data: &'a [u8],
    event: Option<&'a str>,
    id: Option<&'a str>,
}

impl<'a> Frame<'a> {
    /// A frame with `data` and no SSE fields (to test a decoding function, say).
    pub fn new(data: &'a [u8]) -> Frame<'a> {
        Frame {
            data,
            event: None,
            id: None,
        }
    }

    pub(crate) fn sse(data: &'a [u8], event: Option<&'a str>, id: Option<&'a str>) -> Frame<'a> {
        Frame { data, event, id }
    }

    /// The frame's bytes, without its delimiter: the line, the counted bytes, or the SSE
    /// `data` lines joined with `\n`.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The SSE `event:` field, if the event had one (`None` means the default, `message`).
    /// Always `None` in other framings.
    pub fn event(&self) -> Option<&'a str> {
        self.event
    }

    /// The SSE last event ID when the event was dispatched, if any. Always `None` in other
    /// framings.
    pub fn id(&self) -> Option<&'a str> {
        self.id
    }
}

/// What [`FrameDecoder::next_piece`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A whole frame.
    Frame(Frame<'a>),
    /// A keep-alive: a blank line (NDJSON, length-prefixed) or a comment (SSE). It proves the
    /// connection is alive and costs no demand.
    Heartbeat,
}

/// A body that cannot be cut into frames. Either way the connection is out of step with the
/// framing and must be dropped: reset the decoder before reusing it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame is longer than the decoder's limit; it is never buffered whole.
    Oversize {
        /// Bytes of the frame seen so far (or its announced length).
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes break the framing (a length line that is not a number, say).
    Malformed(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Oversize { len, limit } => {
                write!(f, "frame too long: {len} bytes, limit {limit}")
            }
            FrameError::Malformed(m) => write!(f, "malformed framing: {m}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// The bytes pushed and not yet consumed.
#[derive(Debug, Default)]
pub(crate) struct Input {
    pub(crate) buf: Vec<u8>,
    pub(crate) pos: usize,
}

impl Input {
    /// The unconsumed bytes.
    pub(crate) fn rest(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn push(&mut self, bytes: &[u8]) {
        // Move the unconsumed tail to the front before growing, so the buffer stays about
        // one frame plus one chunk long.
        if self.pos > 0 && (self.pos == self.buf.len() || self.pos >= self.buf.len() / 2) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.pos = 0;
    }
}

#[derive(Debug)]
enum State {
    Lines(LinesState),
    Length(LengthState),
    Sse(SseState),
}

/// Cuts a body into frames by a [`Framing`]; pure, so it can be fed from anywhere.
///
/// # Examples
///
/// ```
/// use stageflow::http::{FrameDecoder, Framing, Piece};
///
/// let mut decoder = FrameDecoder::new(Framing::Ndjson, 1024);
/// decoder.push(b"{\"a\":1}\r\n\r\n{\"a\"");
/// assert!(matches!(decoder.next_piece(), Some(Ok(Piece::Frame(f))) if f.data() == b"{\"a\":1}"));
/// assert_eq!(decoder.next_piece(), Some(Ok(Piece::Heartbeat)));
/// assert_eq!(decoder.next_piece(), None); // half a frame: wait for more
/// decoder.push(b":2}\n");
/// assert!(matches!(decoder.next_piece(), Some(Ok(Piece::Frame(f))) if f.data() == b"{\"a\":2}"));
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    framing: Framing,
    limit: usize,
    input: Input,
    state: State,
}

impl FrameDecoder {
    /// A decoder for `framing` that refuses frames longer than `max_frame` bytes.
    pub fn new(framing: Framing, max_frame: usize) -> FrameDecoder {
        let state = match framing {
            Framing::Ndjson => State::Lines(LinesState::new(true)),
            Framing::Lines => State::Lines(LinesState::new(false)),
            Framing::LengthPrefixed => State::Length(LengthState::default()),
            Framing::Sse => State::Sse(SseState::default()),
        };
        FrameDecoder {
            framing,
            limit: max_frame,
            input: Input::default(),
            state,
        }
    }

    /// The framing.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Appends bytes read from the body.
    pub fn push(&mut self, bytes: &[u8]) {
        self.input.push(bytes);
    }

    /// The next frame or heartbeat, `None` if the bytes pushed so far hold no more, or an
    /// error when the body breaks the framing.
    ///
    /// # Errors
    ///
    /// [`FrameError::Oversize`] for a frame longer than the limit, [`FrameError::Malformed`]
    /// for bytes that break the framing. After an error, call [`FrameDecoder::reset`].
    pub fn next_piece(&mut self) -> Option<Result<Piece<'_>, FrameError>> {
        match &mut self.state {
            State::Lines(s) => s.next(&mut self.input, self.limit),
            State::Length(s) => s.next(&mut self.input, self.limit),
            State::Sse(s) => s.next(&mut self.input, self.limit),
        }
    }

    /// Bytes held that are not yet part of a returned frame.
    pub fn buffered(&self) -> usize {
        let extra = match &self.state {
            State::Sse(s) => s.pending(),
            _ => 0,
        };
        self.input.rest().len() + extra
    }

    /// Drops every byte held, as when the connection is cut: an unfinished frame is never
    /// returned. What a stream keeps across connections (the SSE last event ID and retry
    /// time) is kept.
    pub fn reset(&mut self) {
        self.input.clear();
        match &mut self.state {
            State::Lines(s) => s.reset(),
            State::Length(s) => s.reset(),
            State::Sse(s) => s.reset(),
        }
    }

    /// SSE: the last event ID of the events dispatched so far, to send as `Last-Event-ID`
    /// when reconnecting. `None` in other framings, or when no `id:` was seen (or it was
    /// cleared with an empty one).
    pub fn last_event_id(&self) -> Option<&str> {
        match &self.state {
            State::Sse(s) => s.last_event_id(),
            _ => None,
        }
    }

    /// SSE: the reconnection time the server asked for with `retry:`, if any.
    pub fn retry(&self) -> Option<Duration> {
        match &self.state {
            State::Sse(s) => s.retry(),
            _ => None,
        }
    }
}

/// Test helpers shared by the framings' unit tests: feed an input split in every possible way
/// and check that the pieces never change.
#[cfg(test)]
pub(crate) mod split_tests {
    use super::*;

    /// An owned [`Piece`] or error.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub(crate) enum Out {
        Frame(String, Option<String>, Option<String>),
        Heartbeat,
        Err(FrameError),
    }

    pub(crate) fn frame(data: &str) -> Out {
        Out::Frame(data.into(), None, None)
    }

    /// Feeds `chunks` one by one, draining after each; stops at the first error.
    pub(crate) fn feed(framing: Framing, limit: usize, chunks: &[&[u8]]) -> Vec<Out> {
        let mut d = FrameDecoder::new(framing, limit);
        let mut out = Vec::new();
        for c in chunks {
            d.push(c);
            while let Some(p) = d.next_piece() {
                match p {
                    Ok(Piece::Frame(f)) => out.push(Out::Frame(
                        String::from_utf8_lossy(f.data()).into_owned(),
                        f.event().map(str::to_owned),
                        f.id().map(str::to_owned),
                    )),
                    Ok(Piece::Heartbeat) => out.push(Out::Heartbeat),
                    Err(e) => {
                        out.push(Out::Err(e));
                        return out;
                    }
                }
            }
        }
        out
    }

    /// Asserts that every split of `input` into one, two or three chunks gives `expected`.
    pub(crate) fn every_split(framing: Framing, limit: usize, input: &[u8], expected: &[Out]) {
        assert_eq!(feed(framing, limit, &[input]), expected, "whole input");
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let got = feed(framing, limit, &[&input[..i], &input[i..j], &input[j..]]);
                assert_eq!(got, expected, "split at {i} and {j}");
            }
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(feed(framing, limit, &bytes), expected, "byte by byte");
    }
}
