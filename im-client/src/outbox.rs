//! The ordered, bounded queue of sends that await their `ack` ([`Outbox`]),
//! and the client message ids that make resending them safe ([`CmidGen`]).
//! Plain structs, tested without sockets.

use std::collections::{BTreeMap, HashMap};

use im_protocol::{ClientFrame, ClientMsgId, ConversationId, RequestId};

use crate::draft::Draft;

/// One `send` awaiting its `ack`.
#[derive(Debug)]
pub(crate) struct Outgoing<R> {
    pub(crate) conv: ConversationId,
    pub(crate) cmid: ClientMsgId,
    /// What to send.
    pub(crate) draft: Draft,
    /// The `rid` it was sent with on the current connection (`None`: not sent yet).
    pub(crate) rid: Option<RequestId>,
    /// Held back after `rate_limited`/`internal`/`unavailable` until [`Outbox::release`].
    pub(crate) held: bool,
    /// Whoever waits for the outcome.
    pub(crate) reply: R,
}

/// Un-acknowledged sends, in the order the app made them, bounded.
///
/// A send stays here until acked (or refused for good), across reconnects;
/// after each reconnect every entry is sent again, in order, with its
/// original `cmid`, which the server deduplicates.
#[derive(Debug)]
pub(crate) struct Outbox<R> {
    entries: BTreeMap<u64, Outgoing<R>>,
    by_rid: HashMap<RequestId, u64>,
    next_seq: u64,
    cap: usize,
}

impl<R> Outbox<R> {
    /// An empty outbox holding at most `cap` sends.
    pub(crate) fn new(cap: usize) -> Self {
        Self { entries: BTreeMap::new(), by_rid: HashMap::new(), next_seq: 0, cap: cap.max(1) }
    }

    /// Queues a send; gives `reply` back when the outbox is full.
    pub(crate) fn push(
        &mut self,
        conv: ConversationId,
        cmid: ClientMsgId,
        draft: Draft,
        reply: R,
    ) -> Result<(), R> {
        if self.entries.len() >= self.cap {
            return Err(reply);
        }
        self.next_seq += 1;
        let entry = Outgoing { conv, cmid, draft, rid: None, held: false, reply };
        self.entries.insert(self.next_seq, entry);
        Ok(())
    }

    /// Number of sends awaiting an ack.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Assigns request ids to the first `max` sends not yet sent on this
    /// connection, in order, and returns their frames.
    pub(crate) fn frames_to_send(
        &mut self,
        max: usize,
        mut next_rid: impl FnMut() -> RequestId,
    ) -> Vec<ClientFrame> {
        let mut frames = Vec::new();
        for (seq, e) in self.entries.iter_mut().filter(|(_, e)| e.rid.is_none() && !e.held).take(max) {
            let rid = next_rid();
            e.rid = Some(rid);
            self.by_rid.insert(rid, *seq);
            frames.push(e.draft.frame(rid, e.conv, e.cmid.clone()));
        }
        frames
    }

    /// Sends written on the current connection and not answered yet.
    pub(crate) fn unanswered(&self) -> usize {
        self.by_rid.len()
    }

    /// Whether `rid` is one of our sends.
    pub(crate) fn is_send(&self, rid: RequestId) -> bool {
        self.by_rid.contains_key(&rid)
    }

    /// Removes and returns the send answered by `rid` (acked, or refused for good).
    pub(crate) fn take(&mut self, rid: RequestId) -> Option<Outgoing<R>> {
        let seq = self.by_rid.remove(&rid)?;
        self.entries.remove(&seq)
    }

    /// The send of `rid` must be sent again later (e.g. `rate_limited`): it
    /// is held back until the next [`release`](Self::release).
    pub(crate) fn requeue(&mut self, rid: RequestId) {
        if let Some(seq) = self.by_rid.remove(&rid) {
            if let Some(e) = self.entries.get_mut(&seq) {
                e.rid = None;
                e.held = true;
            }
        }
    }

    /// Lets held-back sends go again (called on the driver's periodic tick).
    pub(crate) fn release(&mut self) {
        for e in self.entries.values_mut() {
            e.held = false;
        }
    }

    /// The connection is gone: everything not acked is sent again on the next one.
    pub(crate) fn disconnected(&mut self) {
        self.by_rid.clear();
        for e in self.entries.values_mut() {
            e.rid = None;
        }
    }

    /// Empties the outbox (when the client stops), in order.
    pub(crate) fn drain(&mut self) -> Vec<Outgoing<R>> {
        self.by_rid.clear();
        std::mem::take(&mut self.entries).into_values().collect()
    }
}

/// Makes client message ids: a random 128-bit prefix per client plus a
/// counter, so they are unique across devices and restarts without a clock.
#[derive(Debug)]
pub(crate) struct CmidGen {
    prefix: String,
    counter: u64,
}

impl CmidGen {
    pub(crate) fn new() -> Self {
        Self { prefix: format!("{:032x}", rand::random::<u128>()), counter: 0 }
    }

    pub(crate) fn next(&mut self) -> ClientMsgId {
        self.counter += 1;
        // 32 hex digits + '-' + at most 20 digits: always a valid cmid.
        ClientMsgId::new(format!("{}-{}", self.prefix, self.counter)).expect("hex-counter is a valid cmid")
    }
}

#[cfg(test)]
mod tests {
    use im_protocol::GroupId;

    use super::*;

    const G: ConversationId = ConversationId::Group(GroupId(1));

    #[test]
    fn outbox_resends_unacked_in_order_with_the_same_cmid_and_is_bounded() {
        let mut o = Outbox::new(3);
        let mut gen = CmidGen::new();
        let cmids: Vec<ClientMsgId> = (0..3).map(|_| gen.next()).collect();
        for (i, c) in cmids.iter().enumerate() {
            o.push(G, c.clone(), Draft::text(format!("m{i}")), i).unwrap();
        }
        assert_eq!(o.push(G, gen.next(), Draft::text("full"), 9), Err(9));
        let mut rid = 0;
        let first = o.frames_to_send(usize::MAX, || {
            rid += 1;
            rid
        });
        assert_eq!(first.len(), 3);
        assert!(o.frames_to_send(usize::MAX, || 100).is_empty(), "already sent on this connection");
        // The second one is acked; the connection dies.
        assert_eq!(o.take(2).map(|e| e.reply), Some(1));
        o.disconnected();
        let again = o.frames_to_send(usize::MAX, || {
            rid += 1;
            rid
        });
        let got: Vec<(u64, String)> = again
            .iter()
            .map(|f| match f {
                ClientFrame::Send { rid, cmid, .. } => (*rid, cmid.to_string()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, vec![(4, cmids[0].to_string()), (5, cmids[2].to_string())]);
        o.requeue(5);
        assert!(!o.is_send(5));
        assert!(o.frames_to_send(usize::MAX, || 6).is_empty(), "held back until released");
        o.release();
        assert!(o.frames_to_send(0, || 6).is_empty(), "paced: nothing allowed");
        assert_eq!(o.frames_to_send(usize::MAX, || 6).len(), 1);
        assert_eq!(o.len(), 2);
        assert_eq!(o.drain().into_iter().map(|e| e.reply).collect::<Vec<_>>(), vec![0, 2]);
    }

    #[test]
    fn cmids_are_unique_and_valid() {
        let (mut a, mut b) = (CmidGen::new(), CmidGen::new());
        let x = a.next();
        assert_ne!(x, a.next());
        assert_ne!(x, b.next());
        assert!(x.as_str().len() <= 64);
    }
}
