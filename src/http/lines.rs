//! Line framings: newline-delimited JSON (blank lines are heartbeats) and plain lines. A line
//! ends at `\n`; a `\r` before it is dropped, so `\r\n` and `\n` both work.

use super::framing::{Frame, FrameError, Input, Piece};

#[derive(Debug)]
pub(crate) struct LinesState {
    /// NDJSON: a blank line is a heartbeat, not a frame.
    blank_is_heartbeat: bool,
    /// Bytes after `input.pos` already searched for a newline.
    scanned: usize,
}

impl LinesState {
    pub(crate) fn new(blank_is_heartbeat: bool) -> LinesState {
        LinesState {
            blank_is_heartbeat,
            scanned: 0,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.scanned = 0;
    }

    pub(crate) fn next<'a>(
        &mut self,
        input: &'a mut Input,
        limit: usize,
    ) -> Option<Result<Piece<'a>, FrameError>> {
        let rest = input.rest();
        let Some(at) = memchr::memchr(b'\n', &rest[self.scanned..]) else {
            self.scanned = rest.len();
            // One byte more than the limit may be the `\r` of a line of exactly the limit.
            if rest.len() > limit.saturating_add(1) {
                return Some(Err(FrameError::Oversize {
                    len: rest.len(),
                    limit,
                }));
            }
            return None;
        };
        let end = self.scanned + at;
        let line_end = if end > 0 && rest[end - 1] == b'\r' {
            end - 1
        } else {
            end
        };
        self.scanned = 0;
        let start = input.pos;
        input.pos += end + 1;
        if line_end > limit {
            return Some(Err(FrameError::Oversize {
                len: line_end,
                limit,
            }));
        }
        let line = &input.buf[start..start + line_end];
        if self.blank_is_heartbeat && line.iter().all(u8::is_ascii_whitespace) {
            return Some(Ok(Piece::Heartbeat));
        }
        Some(Ok(Piece::Frame(Frame::new(line))))
    }
}

#[cfg(test)]
mod tests {
    use crate::http::framing::split_tests::{every_split, feed, frame, Out};
    use crate::http::Framing;

    #[test]
    fn ndjson_frames_and_heartbeats_in_every_split() {
        let input = b"{\"a\":1}\r\n\r\n{\"b\":\"x\\ny\"}\n\n \r\n{\"c\":3}\r\n";
        let expected = [
            frame("{\"a\":1}"),
            Out::Heartbeat,
            frame("{\"b\":\"x\\ny\"}"),
            Out::Heartbeat,
            Out::Heartbeat,
            frame("{\"c\":3}"),
        ];
        every_split(Framing::Ndjson, 64, input, &expected);
    }

    #[test]
    fn an_unfinished_line_is_never_returned() {
        let got = feed(Framing::Ndjson, 64, &[b"{\"a\":1}\n{\"a\":"]);
        assert_eq!(got, [frame("{\"a\":1}")]);
    }

    #[test]
    fn plain_lines_keep_empty_lines() {
        every_split(
            Framing::Lines,
            64,
            b"one\r\n\ntwo\n",
            &[frame("one"), frame(""), frame("two")],
        );
    }

    #[test]
    fn a_line_over_the_limit_is_refused_whole_or_in_pieces() {
        let long = format!("{}\n", "x".repeat(20));
        let expected = [
            frame("short"),
            Out::Err(crate::http::FrameError::Oversize { len: 20, limit: 10 }),
        ];
        let input = format!("short\n{long}");
        assert_eq!(feed(Framing::Ndjson, 10, &[input.as_bytes()]), expected);
        // Fed in pieces, the error comes as soon as more than the limit is held.
        let got = feed(Framing::Ndjson, 10, &[b"short\n", &long.as_bytes()[..12]]);
        assert_eq!(
            got,
            [
                frame("short"),
                Out::Err(crate::http::FrameError::Oversize { len: 12, limit: 10 })
            ]
        );
    }

    #[test]
    fn a_line_of_exactly_the_limit_passes() {
        every_split(Framing::Lines, 5, b"12345\r\n", &[frame("12345")]);
    }
}
