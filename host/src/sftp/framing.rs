//! SFTP packet framing with the bounds we advertise in `limits@openssh.com`.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest packet accepted (the length field, excluding itself).
pub const MAX_PACKET: u32 = 256 * 1024;
/// Largest READ served and WRITE accepted; leaves room for the headers.
pub const MAX_READ: u32 = MAX_PACKET - 1024;
pub const MAX_WRITE: u32 = MAX_PACKET - 1024;

pub enum Incoming {
    /// Type byte and body of one packet.
    Packet(Bytes),
    /// A packet over `MAX_PACKET` (or of length 0); the session must end.
    /// The request id, when it could be read.
    Oversized { length: u32, id: Option<u32> },
    /// The client closed the stream.
    Closed,
}

pub async fn read_packet<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<Incoming> {
    let length = match reader.read_u32().await {
        Ok(length) => length,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Incoming::Closed),
        Err(e) => return Err(e),
    };
    if length == 0 || length > MAX_PACKET {
        // Read the type and id, if they are there, to answer with the right id.
        let mut head = [0u8; 5];
        let id = match length {
            5.. => reader.read_exact(&mut head).await.ok().map(|_| u32::from_be_bytes([head[1], head[2], head[3], head[4]])),
            _ => None,
        };
        return Ok(Incoming::Oversized { length, id });
    }
    let mut body = BytesMut::zeroed(length as usize);
    reader.read_exact(&mut body).await?;
    Ok(Incoming::Packet(body.freeze()))
}

/// The request id of a raw packet (type byte first), if it has one.
pub fn raw_request_id(packet: &[u8]) -> Option<u32> {
    let id = packet.get(1..5)?;
    Some(u32::from_be_bytes([id[0], id[1], id[2], id[3]]))
}

/// Reads SSH wire strings out of an extended request's payload.
pub struct WireReader<'a>(&'a [u8]);

impl<'a> WireReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self(data)
    }

    pub fn string(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_be_bytes(self.0.get(..4)?.try_into().ok()?) as usize;
        let value = self.0.get(4..4 + len)?;
        self.0 = &self.0[4 + len..];
        Some(value)
    }

    pub fn u64(&mut self) -> Option<u64> {
        let value = u64::from_be_bytes(self.0.get(..8)?.try_into().ok()?);
        self.0 = &self.0[8..];
        Some(value)
    }

    pub fn utf8(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.string()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn oversized_packet_reports_its_id() {
        let mut data = Vec::new();
        data.extend_from_slice(&(MAX_PACKET + 1).to_be_bytes());
        data.push(6);
        data.extend_from_slice(&77u32.to_be_bytes());
        match read_packet(&mut &data[..]).await.unwrap() {
            Incoming::Oversized { id, .. } => assert_eq!(id, Some(77)),
            _ => panic!("expected oversized"),
        }
    }

    #[tokio::test]
    async fn eof_is_closed() {
        assert!(matches!(read_packet(&mut &b""[..]).await.unwrap(), Incoming::Closed));
    }

    #[test]
    fn wire_strings() {
        let data = [0, 0, 0, 2, b'h', b'i', 0, 0, 0, 9];
        let mut r = WireReader::new(&data);
        assert_eq!(r.utf8(), Some("hi"));
        assert_eq!(r.string(), None);
    }
}
