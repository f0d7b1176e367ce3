//! Length-prefixed frames (Twitter v1.1 `delimited=length`): a decimal byte count on its own
//! line, then exactly that many bytes. Blank lines before a count are heartbeats. The count
//! includes the frame's own trailing `\r\n`, which is trimmed from the frame.

use super::framing::{Frame, FrameError, Input, Piece};

/// The longest count line accepted (digits, spaces and `\r`): 20 digits hold any `u64`.
const MAX_COUNT_LINE: usize = 24;

#[derive(Debug, Default)]
pub(crate) struct LengthState {
    /// The count read, while waiting for the frame's bytes.
    body: Option<usize>,
}

impl LengthState {
    pub(crate) fn reset(&mut self) {
        self.body = None;
    }

    pub(crate) fn next<'a>(
        &mut self,
        input: &'a mut Input,
        limit: usize,
    ) -> Option<Result<Piece<'a>, FrameError>> {
        if self.body.is_none() {
            let rest = input.rest();
            let Some(end) = memchr::memchr(b'\n', rest) else {
                if rest.len() > MAX_COUNT_LINE {
                    return Some(Err(malformed(rest)));
                }
                return None;
            };
            let line = rest[..end].trim_ascii();
            if line.is_empty() {
                input.pos += end + 1;
                return Some(Ok(Piece::Heartbeat));
            }
            let count = std::str::from_utf8(line)
                .ok()
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<usize>().ok());
            let Some(count) = count else {
                return Some(Err(malformed(line)));
            };
            if count > limit {
                return Some(Err(FrameError::Oversize { len: count, limit }));
            }
            input.pos += end + 1;
            self.body = Some(count);
        }
        let count = self.body?;
        if input.rest().len() < count {
            return None;
        }
        self.body = None;
        let start = input.pos;
        input.pos += count;
        let mut data = &input.buf[start..start + count];
        if let Some(d) = data.strip_suffix(b"\n") {
            data = d.strip_suffix(b"\r").unwrap_or(d);
        }
        if data.is_empty() {
            return Some(Ok(Piece::Heartbeat));
        }
        Some(Ok(Piece::Frame(Frame::new(data))))
    }
}

fn malformed(line: &[u8]) -> FrameError {
    let shown = &line[..line.len().min(MAX_COUNT_LINE)];
    FrameError::Malformed(format!(
        "expected a decimal frame length, got {:?}",
        String::from_utf8_lossy(shown)
    ))
}

#[cfg(test)]
mod tests {
    use crate::http::framing::split_tests::{every_split, feed, frame, Out};
    use crate::http::{FrameError, Framing};

    #[test]
    fn frames_and_keep_alives_in_every_split() {
        // Counts include the trailing \r\n; a frame may hold a bare \n.
        let input = b"\r\n9\r\n{\"a\":1}\r\n\r\n\r\n11\r\n{\"b\":\"\n\"}\r\n";
        let expected = [
            Out::Heartbeat,
            frame("{\"a\":1}"),
            Out::Heartbeat,
            Out::Heartbeat,
            frame("{\"b\":\"\n\"}"),
        ];
        every_split(Framing::LengthPrefixed, 64, input, &expected);
    }

    #[test]
    fn a_count_over_the_limit_is_refused_before_reading_the_bytes() {
        let got = feed(Framing::LengthPrefixed, 10, &[b"5\r\nabc\r\n100\r\n"]);
        assert_eq!(
            got,
            [
                frame("abc"),
                Out::Err(FrameError::Oversize {
                    len: 100,
                    limit: 10
                })
            ]
        );
    }

    #[test]
    fn a_count_that_is_not_a_number_is_malformed() {
        let got = feed(Framing::LengthPrefixed, 10, &[b"{\"a\":1}\r\n"]);
        assert!(
            matches!(&got[..], [Out::Err(FrameError::Malformed(m))] if m.contains("{\\\"a\\\":1}")),
            "{got:?}"
        );
        // A line that never ends is malformed too, once it is longer than any count.
        let got = feed(Framing::LengthPrefixed, 10, &[&[b'7'; 40]]);
        assert!(
            matches!(&got[..], [Out::Err(FrameError::Malformed(_))]),
            "{got:?}"
        );
    }

    #[test]
    fn an_unfinished_frame_is_never_returned() {
        assert_eq!(feed(Framing::LengthPrefixed, 64, &[b"9\r\n{\"a\":"]), []);
    }
}
