//! The bounded completion ring of one channel.

use std::collections::VecDeque;

use crate::BdevCompletion;

/// Completions waiting for `poll`, at most `depth` of them. Allocated once when the channel
/// opens; pushing within the depth never reallocates.
#[derive(Debug)]
pub struct CompletionRing {
    done: VecDeque<BdevCompletion>,
    depth: usize,
}

impl CompletionRing {
    /// Panics if depth is 0: a channel that can hold no I/O is a caller bug.
    pub fn new(depth: usize) -> CompletionRing {
        assert!(depth > 0, "completion ring depth must be at least 1");
        CompletionRing {
            done: VecDeque::with_capacity(depth),
            depth,
        }
    }

    pub fn depth(&self) -> usize {
        self.depth
    }

    pub fn len(&self) -> usize {
        self.done.len()
    }

    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.done.len() >= self.depth
    }

    /// Panics when full: submit must check `is_full` first and hand the I/O back instead.
    pub fn push(&mut self, completion: BdevCompletion) {
        assert!(
            !self.is_full(),
            "completion ring overflow (depth {})",
            self.depth
        );
        self.done.push_back(completion);
    }

    /// Hands up to `max` completions, oldest first, to `on_complete`; returns how many.
    pub fn poll(&mut self, max: usize, on_complete: &mut dyn FnMut(BdevCompletion)) -> usize {
        let mut count = 0;
        while count < max {
            let Some(completion) = self.done.pop_front() else {
                break;
            };
            on_complete(completion);
            count += 1;
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IoStatus;

    fn done(tag: u64) -> BdevCompletion {
        BdevCompletion {
            tag,
            status: IoStatus::Success,
            buf: None,
        }
    }

    #[test]
    fn bounded_fifo_with_partial_polls() {
        let mut ring = CompletionRing::new(3);
        for tag in 0..3 {
            ring.push(done(tag));
        }
        assert!(ring.is_full());
        let mut tags = Vec::new();
        assert_eq!(ring.poll(2, &mut |c| tags.push(c.tag)), 2);
        assert_eq!(tags, [0, 1]);
        ring.push(done(3));
        assert_eq!(ring.poll(10, &mut |c| tags.push(c.tag)), 2);
        assert_eq!(tags, [0, 1, 2, 3]);
        assert!(ring.is_empty());
        assert_eq!(ring.poll(0, &mut |_| unreachable!()), 0);
    }

    #[test]
    #[should_panic(expected = "overflow")]
    fn push_past_depth_panics() {
        let mut ring = CompletionRing::new(1);
        ring.push(done(0));
        ring.push(done(1));
    }
}
