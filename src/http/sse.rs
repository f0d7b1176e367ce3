//! Server-Sent Events (`text/event-stream`), as the HTML standard's parsing rules say: lines
//! end at `\r\n`, `\n` or `\r`; `data:` lines are joined with `\n`; a blank line dispatches
//! the event (none if it has no data); `event:` names it; `id:` sets the last event ID, which
//! is committed at the blank line and survives reconnects; `retry:` sets the reconnection
//! time; lines starting with `:` are comments (heartbeats); a leading BOM is skipped.

use std::time::Duration;

use super::framing::{Frame, FrameError, Input, Piece};

/// Room for a field name and its colon in a line not yet ended.
const FIELD_ROOM: usize = 16;

#[derive(Debug, Default)]
pub(crate) struct SseState {
    /// The event being assembled: its `data` lines, each followed by `\n`.
    data: Vec<u8>,
    event: String,
    /// The last event ID buffer, as the `id:` lines set it.
    id_buffer: String,
    /// The last event ID of the dispatched events.
    last_id: String,
    retry: Option<Duration>,
    /// The previous line ended with `\r`: a `\n` right after it belongs to it.
    skip_lf: bool,
    /// The stream's first bytes were checked for a BOM.
    started: bool,
    /// The previous call returned an event, whose fields are cleared on the next call.
    dispatched: bool,
}

impl SseState {
    pub(crate) fn reset(&mut self) {
        self.data.clear();
        self.event.clear();
        self.id_buffer = self.last_id.clone();
        self.skip_lf = false;
        self.started = false;
        self.dispatched = false;
    }

    pub(crate) fn pending(&self) -> usize {
        if self.dispatched {
            0
        } else {
            self.data.len()
        }
    }

    pub(crate) fn last_event_id(&self) -> Option<&str> {
        Some(self.last_id.as_str()).filter(|s| !s.is_empty())
    }

    pub(crate) fn retry(&self) -> Option<Duration> {
        self.retry
    }

    pub(crate) fn next<'a>(
        &'a mut self,
        input: &mut Input,
        limit: usize,
    ) -> Option<Result<Piece<'a>, FrameError>> {
        if self.dispatched {
            self.dispatched = false;
            self.data.clear();
            self.event.clear();
        }
        loop {
            if self.skip_lf {
                match input.rest().first() {
                    None => return None,
                    Some(b'\n') => input.pos += 1,
                    Some(_) => {}
                }
                self.skip_lf = false;
            }
            if !self.started {
                let rest = input.rest();
                if rest.len() < 3 && b"\xEF\xBB\xBF".starts_with(rest) {
                    return None; // Maybe a BOM: wait for its end.
                }
                if rest.starts_with(b"\xEF\xBB\xBF") {
                    input.pos += 3;
                }
                self.started = true;
            }
            let rest = input.rest();
            let Some(end) = memchr::memchr2(b'\n', b'\r', rest) else {
                // A partial line holds a field name too: allow for it, the check is exact
                // once the line ends.
                if self.data.len() + rest.len() > limit.saturating_add(FIELD_ROOM) {
                    return Some(Err(FrameError::Oversize {
                        len: self.data.len() + rest.len(),
                        limit,
                    }));
                }
                return None;
            };
            self.skip_lf = rest[end] == b'\r';
            let start = input.pos;
            input.pos += end + 1;
            let line = &input.buf[start..start + end];
            if line.is_empty() {
                self.last_id.clone_from(&self.id_buffer);
                if self.data.is_empty() {
                    self.event.clear();
                    continue;
                }
                self.data.pop(); // The `\n` after the last data line.
                self.dispatched = true;
                let event = Some(self.event.as_str()).filter(|e| !e.is_empty());
                let id = Some(self.last_id.as_str()).filter(|i| !i.is_empty());
                return Some(Ok(Piece::Frame(Frame::sse(&self.data, event, id))));
            }
            if line[0] == b':' {
                return Some(Ok(Piece::Heartbeat));
            }
            let (field, value) = match memchr::memchr(b':', line) {
                Some(c) => {
                    let v = &line[c + 1..];
                    (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
                }
                None => (line, &[][..]),
            };
            match field {
                b"data" => {
                    if self.data.len() + value.len() + 1 > limit {
                        return Some(Err(FrameError::Oversize {
                            len: self.data.len() + value.len() + 1,
                            limit,
                        }));
                    }
                    self.data.extend_from_slice(value);
                    self.data.push(b'\n');
                }
                b"event" => self.event = String::from_utf8_lossy(value).into_owned(),
                b"id" if !value.contains(&0) => {
                    self.id_buffer = String::from_utf8_lossy(value).into_owned();
                }
                b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                    if let Ok(ms) = std::str::from_utf8(value).unwrap_or("").parse::<u64>() {
                        self.retry = Some(Duration::from_millis(ms));
                    }
                }
                _ => {} // Unknown fields are ignored.
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::http::framing::split_tests::{every_split, feed, Out};
    use crate::http::{FrameDecoder, FrameError, Framing, Piece};

    fn ev(data: &str, event: Option<&str>, id: Option<&str>) -> Out {
        Out::Frame(data.into(), event.map(Into::into), id.map(Into::into))
    }

    #[test]
    fn events_comments_and_fields_in_every_split() {
        let input = "\u{feff}: hello\r\n\
                     data: one\r\n\r\n\
                     event: tweet\ndata:{\"a\":\ndata:  1}\nid: 7\n\n\
                     retry: 1500\r\
                     :keep-alive\r\
                     id\r\r\
                     data: x\rfoo: ignored\r\r";
        let expected = [
            Out::Heartbeat,
            ev("one", None, None),
            ev("{\"a\":\n 1}", Some("tweet"), Some("7")),
            Out::Heartbeat,
            ev("x", None, None),
        ];
        every_split(Framing::Sse, 64, input.as_bytes(), &expected);
    }

    #[test]
    fn an_id_is_committed_at_the_blank_line_and_kept_across_a_reset() {
        let mut d = FrameDecoder::new(Framing::Sse, 64);
        d.push(b"id: 1\ndata: a\n\nid: 2\ndata: b");
        assert!(matches!(d.next_piece(), Some(Ok(Piece::Frame(f))) if f.id() == Some("1")));
        assert_eq!(d.next_piece(), None);
        // The cut came before event 2 was dispatched: resume after event 1.
        assert_eq!(d.last_event_id(), Some("1"));
        d.reset();
        d.push(b"\n\ndata: c\n\n");
        assert!(
            matches!(d.next_piece(), Some(Ok(Piece::Frame(f))) if f.data() == b"c" && f.id() == Some("1"))
        );
        d.push(b"retry: 250\nid\n\n");
        assert_eq!(d.next_piece(), None);
        assert_eq!(d.last_event_id(), None, "an empty id clears it");
        assert_eq!(d.retry(), Some(Duration::from_millis(250)));
    }

    #[test]
    fn data_over_the_limit_is_refused() {
        let got = feed(Framing::Sse, 8, &[b"data: 1234\ndata: 5678\n\n"]);
        assert_eq!(got, [Out::Err(FrameError::Oversize { len: 10, limit: 8 })]);
        let got = feed(
            Framing::Sse,
            8,
            &[format!("data: {}", "9".repeat(30)).as_bytes()],
        );
        assert!(
            matches!(got[..], [Out::Err(FrameError::Oversize { .. })]),
            "{got:?}"
        );
    }

    #[test]
    fn an_event_without_its_blank_line_is_never_returned() {
        assert_eq!(feed(Framing::Sse, 64, &[b"data: a\ndata: b\n"]), []);
    }
}
