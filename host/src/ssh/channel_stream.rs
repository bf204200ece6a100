//! A session channel as a byte stream that does not close the channel when
//! dropped. russh's `Channel::into_stream` sends CLOSE from its destructor,
//! which leaves no room to send `exit-status` first; OpenSSH's `scp` (SFTP
//! mode) exits 1 without it. Here the write half stays with the caller, who
//! sends exit-status, EOF and CLOSE in that order.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use russh::{ChannelMsg, ChannelReadHalf};
use tokio::io::{AsyncRead, ReadBuf};

type NextMessage = Pin<Box<dyn Future<Output = (ChannelReadHalf, Option<ChannelMsg>)> + Send>>;

/// Reads a channel's data (not its extended data) until EOF or close.
pub struct ChannelReader {
    /// The read half, while no receive is in flight.
    idle: Option<ChannelReadHalf>,
    receiving: Option<NextMessage>,
    /// Data received and not yet read.
    pending: Bytes,
    ended: bool,
}

impl ChannelReader {
    pub fn new(half: ChannelReadHalf) -> Self {
        Self { idle: Some(half), receiving: None, pending: Bytes::new(), ended: false }
    }
}

impl AsyncRead for ChannelReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            let receiving = match (&mut this.receiving, this.idle.take()) {
                (Some(receiving), _) => receiving,
                (None, Some(mut half)) => this.receiving.insert(Box::pin(async move {
                    let message = half.wait().await;
                    (half, message)
                })),
                (None, None) => {
                    this.ended = true;
                    continue;
                }
            };
            let (half, message) = match receiving.as_mut().poll(cx) {
                Poll::Ready(done) => done,
                Poll::Pending => return Poll::Pending,
            };
            this.receiving = None;
            this.idle = Some(half);
            match message {
                Some(ChannelMsg::Data { data }) => this.pending = data,
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => this.ended = true,
                // Window adjustments, requests, extended data: not part of the stream.
                Some(_) => {}
            }
        }
    }
}
