//! An async stream of frames for tokio (feature `tokio`).
//!
//! The subscriber runs on its own thread with its wait strategy and forwards
//! each frame, copied into an owned buffer, through a bounded channel. The
//! copy is the price of handing frames across an `.await`: a borrowed frame
//! cannot outlive the next receive.

use std::pin::Pin;
use std::task::{Context, Poll};

use zerocast_core::frame::{self, FrameBuf};

use crate::{Bus, RecvError, Result, SubscriberOptions};

/// A frame owned by the stream's consumer.
#[derive(Debug, Clone)]
pub struct OwnedFrame {
    /// Topic sequence.
    pub seq: u64,
    /// The frame.
    pub buf: FrameBuf,
}

impl OwnedFrame {
    /// The frame's bytes.
    pub fn bytes(&self) -> &[u8] {
        frame::words_as_bytes(&self.buf.0)
    }
}

/// Frames, lags and losses of one topic as a `futures_core::Stream`.
#[derive(Debug)]
pub struct FrameStream {
    rx: tokio::sync::mpsc::Receiver<Result<OwnedFrame, RecvError>>,
}

/// Subscribes to `topic` on a dedicated thread and streams what it receives.
/// `capacity` bounds the channel; when the async side falls behind, the
/// thread waits, and the ring (not the channel) decides what is lost.
///
/// A frame counts as read (and, for a gating subscriber without
/// `manual_release`, is released) when the thread receives it to put into
/// the channel: a durable subscriber's hold, left when the stream is
/// dropped, is past the frames still in the channel then and past the one
/// the thread received last (which it could no longer send), and the next
/// subscriber of its name does not get them.
pub fn subscribe(
    bus: &Bus,
    topic: &str,
    options: SubscriberOptions,
    capacity: usize,
) -> Result<FrameStream> {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (bus, topic) = (bus.clone(), topic.to_owned());
    std::thread::Builder::new()
        .name(format!("zerocast-stream-{topic}"))
        .spawn(move || {
            let mut sub = match bus.subscriber(&topic, options) {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            sub.run(|r| {
                let item = r.map(|f| {
                    let mut buf = FrameBuf::default();
                    frame::words_as_bytes_mut(&mut buf.0)[..f.bytes.len()].copy_from_slice(f.bytes);
                    OwnedFrame { seq: f.seq, buf }
                });
                if tx.blocking_send(item).is_err() {
                    std::ops::ControlFlow::Break(())
                } else {
                    std::ops::ControlFlow::Continue(())
                }
            });
        })
        .expect("spawn stream thread");
    ready_rx
        .recv()
        .unwrap_or_else(|_| Err(crate::Error::Iceoryx("stream thread exited".to_owned())))?;
    Ok(FrameStream { rx })
}

impl futures_core::Stream for FrameStream {
    type Item = Result<OwnedFrame, RecvError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}
