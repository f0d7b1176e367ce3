//! Who an HTTP producer is serving: how many consumers are subscribed, and whether the last
//! one leaving ends the producer (`stop_on_cancel`), shared by [`stream`](super::stream) and
//! [`poll`](super::poll).

/// The subscribed consumers of an HTTP producer and what it does when the last one leaves.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Audience {
    consumers: usize,
    stop_on_cancel: bool,
}

impl Audience {
    /// No consumer yet; with `stop_on_cancel`, the last to leave ends the producer.
    pub(crate) fn new(stop_on_cancel: bool) -> Audience {
        Audience {
            consumers: 0,
            stop_on_cancel,
        }
    }

    /// A consumer subscribed.
    pub(crate) fn joined(&mut self) {
        self.consumers += 1;
    }

    /// A consumer left. Returns whether the producer ends now: it was the last one and the
    /// producer was built with `stop_on_cancel`.
    #[must_use]
    pub(crate) fn left(&mut self) -> bool {
        self.consumers = self.consumers.saturating_sub(1);
        self.stop_on_cancel && self.consumers == 0
    }
}

#[cfg(test)]
mod tests {
    use super::Audience;

    #[test]
    fn only_the_last_to_leave_ends_it_and_only_when_asked() {
        let mut a = Audience::new(true);
        a.joined();
        a.joined();
        assert!(!a.left());
        assert!(a.left());
        let mut kept = Audience::new(false);
        kept.joined();
        assert!(!kept.left());
    }
}
