//! [`Framing`], how a byte stream is cut into records, and the pure splitter that cuts it:
//! no I/O, no threads, so its tests run in microseconds. The splitter keeps the offsets a
//! restart resumes from: the byte after the last record it completed.

use std::mem;

/// How a source cuts its bytes into records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Framing {
    /// Lines ending at `\n`; a `\r` just before it is dropped, so `\r\n` and `\n` both work.
    /// The newline is not part of the record.
    #[default]
    Lines,
    /// Records ending at this byte (`b'\0'`, `0x1e`...), which is not part of the record.
    Delimited(u8),
    /// Records of exactly this many bytes (the last one at the end of a reader may be
    /// shorter). At least 1. A chunk may split a character, so emit chunks as bytes
    /// (`bytes()`): as text, a split character is invalid UTF-8.
    Chunks(usize),
}

/// What the splitter completed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    /// A whole record, without its delimiter.
    Record(Vec<u8>),
    /// A record longer than the limit: its first `limit` bytes, and how many bytes it had
    /// when it was found too long (at least `limit + 1`; the rest is skipped, unread into
    /// memory, up to its delimiter).
    Oversize { head: Vec<u8>, len: usize },
}

/// Cuts bytes into records. Feed it with [`Splitter::split`] as the bytes come; it holds an
/// unfinished record (never more than the limit and two bytes) until its end arrives.
#[derive(Debug)]
pub(crate) struct Splitter {
    framing: Framing,
    limit: usize,
    partial: Vec<u8>,
    /// Inside an oversize record: skip up to its delimiter.
    skipping: bool,
    /// The offset of the next byte to be fed.
    offset: u64,
    /// The offset just after the last record completed (emitted, skipped or refused).
    committed: u64,
}

impl Splitter {
    /// A splitter whose first byte is at `offset` in its input. `limit` is the longest
    /// record of a delimited framing (a chunk framing ignores it).
    pub(crate) fn new(framing: Framing, limit: usize, offset: u64) -> Splitter {
        Splitter {
            framing,
            limit,
            partial: Vec::new(),
            skipping: false,
            offset,
            committed: offset,
        }
    }

    /// Forgets the unfinished record; the next byte fed is at `offset`.
    pub(crate) fn reset(&mut self, offset: u64) {
        self.partial.clear();
        self.skipping = false;
        self.offset = offset;
        self.committed = offset;
    }

    /// The offset just after the last record completed: where a restart resumes.
    pub(crate) fn committed(&self) -> u64 {
        self.committed
    }

    /// The offset of the next byte to be fed.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes held of an unfinished record.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Takes what it needs of `buf`: returns how many bytes it took (consume exactly those)
    /// and the record they completed, if any. Takes at least one byte of a non-empty `buf`.
    pub(crate) fn split(&mut self, buf: &[u8]) -> (usize, Option<Piece>) {
        let step = match self.framing {
            Framing::Lines => self.delimited(buf, b'\n', true),
            Framing::Delimited(d) => self.delimited(buf, d, false),
            Framing::Chunks(n) => self.chunk(buf, n.max(1)),
        };
        self.offset += step.used as u64;
        if step.completed {
            self.committed = self.offset;
        }
        (step.used, step.piece)
    }

    /// The input ended: the unfinished record, if any, is a record (an oversize one if it
    /// is longer than the limit).
    pub(crate) fn finish(&mut self) -> Option<Piece> {
        let was_skipping = mem::replace(&mut self.skipping, false);
        self.committed = self.offset;
        if was_skipping || self.partial.is_empty() {
            return None;
        }
        let record = mem::take(&mut self.partial);
        Some(self.bounded(record))
    }

    fn delimited(&mut self, buf: &[u8], delim: u8, strip_cr: bool) -> Step {
        let found = memchr::memchr(delim, buf);
        if self.skipping {
            // The oversize record was reported when it was found; its delimiter ends it.
            return match found {
                Some(i) => {
                    self.skipping = false;
                    Step::completed(i + 1, None)
                }
                None => Step::partial(buf.len(), None),
            };
        }
        // A line may hold one byte more than the limit: the `\r` before its `\n`.
        let cap = self.limit.saturating_add(usize::from(strip_cr));
        match found {
            Some(i) => {
                let mut len = self.partial.len() + i;
                let mut record = mem::take(&mut self.partial);
                // Never copy more than the limit allows (and one byte to see it was over).
                let room = (cap + 1).saturating_sub(record.len()).min(i);
                record.extend_from_slice(&buf[..room]);
                if strip_cr && record.len() == len && record.last() == Some(&b'\r') {
                    record.pop();
                    len -= 1;
                }
                if len > self.limit {
                    record.truncate(self.limit);
                    return Step::completed(i + 1, Some(Piece::Oversize { head: record, len }));
                }
                Step::completed(i + 1, Some(Piece::Record(record)))
            }
            None => {
                let room = (cap + 1).saturating_sub(self.partial.len()).min(buf.len());
                self.partial.extend_from_slice(&buf[..room]);
                if self.partial.len() <= cap {
                    return Step::partial(buf.len(), None);
                }
                // Too long already: report it now and skip the rest as it comes, so that a
                // huge record is never held. Not completed until its delimiter is seen.
                let len = self.partial.len();
                let mut head = mem::take(&mut self.partial);
                head.truncate(self.limit);
                self.skipping = true;
                Step::partial(buf.len(), Some(Piece::Oversize { head, len }))
            }
        }
    }

    fn chunk(&mut self, buf: &[u8], n: usize) -> Step {
        let take = (n - self.partial.len()).min(buf.len());
        self.partial.extend_from_slice(&buf[..take]);
        if self.partial.len() == n {
            return Step::completed(take, Some(Piece::Record(mem::take(&mut self.partial))));
        }
        Step::partial(take, None)
    }

    fn bounded(&self, mut record: Vec<u8>) -> Piece {
        match self.framing {
            Framing::Chunks(_) => Piece::Record(record),
            _ if record.len() > self.limit => {
                let len = record.len();
                record.truncate(self.limit);
                Piece::Oversize { head: record, len }
            }
            _ => Piece::Record(record),
        }
    }
}

/// What one call of a framing took and made.
struct Step {
    used: usize,
    piece: Option<Piece>,
    /// A record ended: the committed offset moves past it.
    completed: bool,
}

impl Step {
    fn completed(used: usize, piece: Option<Piece>) -> Step {
        Step {
            used,
            piece,
            completed: true,
        }
    }

    fn partial(used: usize, piece: Option<Piece>) -> Step {
        Step {
            used,
            piece,
            completed: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Framing, Piece, Splitter};

    /// Feeds `input` cut every `every` bytes; returns the pieces, the end's piece last.
    fn feed(framing: Framing, limit: usize, input: &[u8], every: usize) -> Vec<Piece> {
        let mut s = Splitter::new(framing, limit, 0);
        let mut out = Vec::new();
        for chunk in input.chunks(every) {
            let mut at = 0;
            while at < chunk.len() {
                let (used, piece) = s.split(&chunk[at..]);
                assert!(used > 0, "the splitter took nothing");
                at += used;
                out.extend(piece);
            }
        }
        out.extend(s.finish());
        assert_eq!(s.committed(), input.len() as u64);
        out
    }

    fn rec(s: &str) -> Piece {
        Piece::Record(s.as_bytes().to_vec())
    }

    /// Every way of cutting `input` gives `expected`.
    fn every_split(framing: Framing, limit: usize, input: &[u8], expected: &[Piece]) {
        for every in 1..=input.len().max(1) {
            assert_eq!(
                feed(framing, limit, input, every),
                expected,
                "cut every {every}"
            );
        }
    }

    #[test]
    fn lines_in_every_split() {
        every_split(
            Framing::Lines,
            64,
            b"one\r\n\ntwo\nthree",
            &[rec("one"), rec(""), rec("two"), rec("three")],
        );
    }

    #[test]
    fn delimited_and_chunks() {
        every_split(
            Framing::Delimited(0),
            64,
            b"a\0bc\0\0d",
            &[rec("a"), rec("bc"), rec(""), rec("d")],
        );
        every_split(
            Framing::Chunks(3),
            1,
            b"abcdefgh",
            &[rec("abc"), rec("def"), rec("gh")],
        );
    }

    #[test]
    fn a_line_of_exactly_the_limit_passes_and_one_more_is_oversize() {
        every_split(
            Framing::Lines,
            5,
            b"12345\r\n12345\n",
            &[rec("12345"), rec("12345")],
        );
        for every in 1..=20 {
            let got = feed(Framing::Lines, 5, b"123456\nok\n", every);
            assert_eq!(got.len(), 2, "cut every {every}: {got:?}");
            match &got[0] {
                Piece::Oversize { head, len } => {
                    assert_eq!(head, b"12345");
                    assert!(*len >= 6, "{len}");
                }
                other => panic!("expected oversize, got {other:?}"),
            }
            assert_eq!(got[1], rec("ok"));
        }
    }

    #[test]
    fn an_oversize_record_is_never_held_whole() {
        let long = vec![b'x'; 100_000];
        let mut s = Splitter::new(Framing::Lines, 10, 0);
        let (used, piece) = s.split(&long);
        assert_eq!(used, long.len());
        assert!(matches!(piece, Some(Piece::Oversize { .. })));
        assert!(s.pending() == 0);
        // Not completed: a restart would begin at the oversize record.
        assert_eq!(s.committed(), 0);
        assert_eq!(s.split(b"yy\nz\n"), (3, None));
        assert_eq!(s.committed(), 100_003);
        assert_eq!(s.split(b"z\n"), (2, Some(rec("z"))));
    }

    #[test]
    fn committed_stays_before_an_unfinished_record() {
        let mut s = Splitter::new(Framing::Lines, 64, 100);
        assert_eq!(s.split(b"ab\ncd"), (3, Some(rec("ab"))));
        assert_eq!(s.split(b"cd"), (2, None));
        assert_eq!((s.committed(), s.offset(), s.pending()), (103, 105, 2));
        s.reset(0);
        assert_eq!((s.committed(), s.offset(), s.pending()), (0, 0, 0));
    }
}
