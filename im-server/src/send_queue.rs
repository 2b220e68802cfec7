//! The bounded per-connection send queue between the hub (many producers)
//! and the connection's writer task (one consumer).
//!
//! Built for fan-out: a push is one short lock and, only when the queue was
//! empty, one wake of the writer — so a writer that is busy flushing is not
//! woken again for every frame queued meanwhile, and takes everything
//! queued in one batch. An empty queue holds no allocation, which keeps
//! idle connections small (a `tokio::sync::mpsc` channel allocates its
//! first block of slots up front).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::Poll;

use axum::extract::ws::Utf8Bytes;
use futures::task::AtomicWaker;

/// A drained queue whose buffer grew past this many frames gives the buffer back.
const KEEP_CAPACITY: usize = 16;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue holds its most frames or bytes: the reader is too slow.
    Full,
    /// The writer is gone (the connection is ending).
    Closed,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Utf8Bytes>,
    bytes: usize,
    closed: bool,
}

/// Encoded frames waiting for one connection's writer, bounded in frames
/// and bytes.
pub struct SendQueue {
    state: Mutex<State>,
    writer: AtomicWaker,
    max_frames: usize,
    max_bytes: usize,
}

impl SendQueue {
    /// An empty queue holding at most `max_frames` frames and `max_bytes` bytes.
    pub fn new(max_frames: usize, max_bytes: usize) -> Self {
        Self { state: Mutex::default(), writer: AtomicWaker::new(), max_frames: max_frames.max(1), max_bytes }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame (the bytes are shared, not copied).
    pub fn push(&self, frame: &Utf8Bytes) -> Result<(), PushError> {
        match self.push_within(frame, self.max_frames, self.max_bytes)? {
            true => Ok(()),
            false => Err(PushError::Full),
        }
    }

    /// Queues a frame only while the queue is at most half full, else
    /// drops it (`Ok(false)`): for frames that may be lost (typing), so they
    /// never push a slow reader towards its close.
    pub fn push_optional(&self, frame: &Utf8Bytes) -> Result<bool, PushError> {
        self.push_within(frame, self.max_frames / 2, self.max_bytes / 2)
    }

    /// Queues `frame` if the queue stays within `frames` and `bytes`;
    /// `Ok(false)` if it would not.
    fn push_within(&self, frame: &Utf8Bytes, frames: usize, bytes: usize) -> Result<bool, PushError> {
        let len = frame.as_str().len();
        let was_empty = {
            let mut st = self.lock();
            if st.closed {
                return Err(PushError::Closed);
            }
            if st.frames.len() >= frames || st.bytes + len > bytes {
                return Ok(false);
            }
            st.bytes += len;
            st.frames.push_back(frame.clone());
            st.frames.len() == 1
        };
        // A non-empty queue already has a wake pending or a writer about to
        // take from it: only the first frame needs to wake it.
        if was_empty {
            self.writer.wake();
        }
        Ok(true)
    }

    /// Frames and bytes queued now.
    pub fn len(&self) -> (usize, usize) {
        let st = self.lock();
        (st.frames.len(), st.bytes)
    }

    /// Moves up to `max` frames into `out`, waiting while the queue is
    /// empty. Returns `false` once the queue is closed and empty. For the
    /// one writer of the connection.
    pub async fn take(&self, out: &mut Vec<Utf8Bytes>, max: usize) -> bool {
        std::future::poll_fn(|cx| {
            self.writer.register(cx.waker());
            let mut st = self.lock();
            if st.frames.is_empty() {
                return if st.closed { Poll::Ready(false) } else { Poll::Pending };
            }
            Self::drain_into(&mut st, out, max.max(1));
            Poll::Ready(true)
        })
        .await
    }

    /// Moves up to `max` frames that are queued now into `out`, without waiting.
    pub fn take_ready(&self, out: &mut Vec<Utf8Bytes>, max: usize) {
        Self::drain_into(&mut self.lock(), out, max);
    }

    fn drain_into(st: &mut State, out: &mut Vec<Utf8Bytes>, max: usize) {
        let n = st.frames.len().min(max);
        let mut taken = 0;
        for frame in st.frames.drain(..n) {
            taken += frame.as_str().len();
            out.push(frame);
        }
        st.bytes -= taken;
        if st.frames.is_empty() && st.frames.capacity() > KEEP_CAPACITY {
            st.frames = VecDeque::new();
        }
    }

    /// Refuses further frames (the writer is gone); what is queued stays
    /// for a final `take`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.writer.wake();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn frame(s: &str) -> Utf8Bytes {
        Utf8Bytes::from(s.to_owned())
    }

    #[test]
    fn bounded_in_frames_and_in_bytes() {
        let q = SendQueue::new(3, 10);
        assert_eq!(q.push(&frame("aaaa")), Ok(()));
        assert_eq!(q.push(&frame("bbbb")), Ok(()));
        assert_eq!(q.push(&frame("ccc")), Err(PushError::Full), "11 bytes > 10");
        assert_eq!(q.push(&frame("cc")), Ok(()));
        assert_eq!(q.push(&frame("")), Err(PushError::Full), "4 frames > 3");
        assert_eq!(q.len(), (3, 10));
        q.close();
        assert_eq!(q.push(&frame("")), Err(PushError::Closed));
    }

    #[test]
    fn optional_frames_are_dropped_once_half_full() {
        let q = SendQueue::new(4, 100);
        assert_eq!(q.push_optional(&frame("a")), Ok(true));
        assert_eq!(q.push_optional(&frame("b")), Ok(true));
        assert_eq!(q.push_optional(&frame("c")), Ok(false), "2 of 4 frames queued: half full");
        assert_eq!(q.push(&frame("c")), Ok(()), "required frames still go in");
        assert_eq!(q.len(), (3, 3));
        let q = SendQueue::new(100, 10);
        assert_eq!(q.push_optional(&frame("12345")), Ok(true));
        assert_eq!(q.push_optional(&frame("6")), Ok(false), "6 bytes > half of 10");
        q.close();
        assert_eq!(q.push_optional(&frame("")), Err(PushError::Closed));
    }

    #[tokio::test]
    async fn takes_in_batches_in_order_and_ends_once_closed_and_drained() {
        let q = SendQueue::new(100, 1000);
        for i in 0..5 {
            q.push(&frame(&format!("f{i}"))).unwrap();
        }
        let mut out = Vec::new();
        assert!(q.take(&mut out, 3).await);
        q.take_ready(&mut out, 1);
        assert!(q.take(&mut out, 3).await);
        let got: Vec<&str> = out.iter().map(|f| f.as_str()).collect();
        assert_eq!(got, ["f0", "f1", "f2", "f3", "f4"]);
        assert_eq!(q.len(), (0, 0));
        q.push(&frame("last")).unwrap();
        q.close();
        out.clear();
        assert!(q.take(&mut out, 10).await, "what was queued before closing is still taken");
        assert_eq!(out.len(), 1);
        assert!(!q.take(&mut out, 10).await);
    }

    #[tokio::test]
    async fn a_waiting_writer_is_woken_by_a_push_from_another_task() {
        let q = Arc::new(SendQueue::new(10, 1000));
        let writer = tokio::spawn({
            let q = q.clone();
            async move {
                let mut out = Vec::new();
                while out.len() < 3 {
                    assert!(q.take(&mut out, 10).await);
                }
                out.len()
            }
        });
        for i in 0..3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            q.push(&frame(&i.to_string())).unwrap();
        }
        let n = tokio::time::timeout(Duration::from_secs(5), writer).await.expect("woken").unwrap();
        assert_eq!(n, 3);
    }
}
