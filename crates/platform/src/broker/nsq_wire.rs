//! NSQ's TCP protocol (V2), as `nsqd` speaks it: the commands this project sends, the frames it
//! reads, and a connection that has said who it is. <https://nsq.io/clients/tcp_protocol_spec.html>
//!
//! A command is a line (`NAME param param\n`), some followed by a body (4-byte big-endian size,
//! then the bytes). A frame is a 4-byte size, a 4-byte type (response, error, message) and its
//! data; a message's data is its timestamp (8 bytes), attempts (2), id (16 ASCII bytes) and body.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Sent first on every connection: the protocol version.
const MAGIC: &[u8] = b"  V2";
/// The response `nsqd` sends every heartbeat interval; the client answers `NOP`.
pub const HEARTBEAT: &[u8] = b"_heartbeat_";
/// Frames larger than this are refused (nsqd's default `--max-msg-size` is 1 MiB; a frame adds
/// its header and the message's 26 bytes).
const MAX_FRAME: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("nsqd answered {0}")]
    Refused(String),
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    #[error("no answer from nsqd within {0:?}")]
    Timeout(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// How many times nsqd has delivered it, this time included.
    pub attempts: u16,
    pub id: [u8; 16],
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Response(Bytes),
    Error(Bytes),
    Message(Message),
}

/// Topic and channel names nsqd takes: 1 to 64 of `.a-zA-Z0-9_-`, optionally ending `#ephemeral`.
pub fn valid_name(name: &str) -> bool {
    let base = name.strip_suffix("#ephemeral").unwrap_or(name);
    (1..=64).contains(&name.len())
        && !base.is_empty()
        && base.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A command line, with its body if it has one.
pub fn command(line: &str, body: Option<&[u8]>) -> Bytes {
    let mut out = BytesMut::with_capacity(line.len() + 5 + body.map_or(0, <[u8]>::len));
    out.put_slice(line.as_bytes());
    out.put_u8(b'\n');
    if let Some(body) = body {
        out.put_u32(body.len() as u32);
        out.put_slice(body);
    }
    out.freeze()
}

pub fn publish(topic: &str, body: &[u8]) -> Bytes {
    command(&format!("PUB {topic}"), Some(body))
}

pub fn finish(id: &[u8; 16]) -> Bytes {
    command(&format!("FIN {}", String::from_utf8_lossy(id)), None)
}

pub fn requeue(id: &[u8; 16], delay: Duration) -> Bytes {
    command(&format!("REQ {} {}", String::from_utf8_lossy(id), delay.as_millis()), None)
}

/// Reads one frame off the front of `buf`, if it holds a whole one.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let size = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    if !(4..=MAX_FRAME).contains(&size) {
        return Err(WireError::Malformed("frame size"));
    }
    if buf.len() < 4 + size {
        buf.reserve(4 + size - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let kind = buf.get_u32();
    let mut data = buf.split_to(size - 4).freeze();
    Ok(Some(match kind {
        0 => Frame::Response(data),
        1 => Frame::Error(data),
        2 => {
            if data.len() < 26 {
                return Err(WireError::Malformed("message shorter than its header"));
            }
            let _timestamp = data.get_i64();
            let attempts = data.get_u16();
            let mut id = [0u8; 16];
            data.copy_to_slice(&mut id);
            Frame::Message(Message { attempts, id, body: data })
        }
        _ => return Err(WireError::Malformed("frame type")),
    }))
}

/// The read half of a connection, with what it has read of the next frame.
pub struct FrameReader {
    half: OwnedReadHalf,
    buf: BytesMut,
}

impl FrameReader {
    /// The next frame; an error once the connection is closed or broken.
    pub async fn next(&mut self) -> Result<Frame, WireError> {
        loop {
            if let Some(frame) = decode(&mut self.buf)? {
                return Ok(frame);
            }
            if self.half.read_buf(&mut self.buf).await? == 0 {
                return Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// The next frame that is not a heartbeat, answering heartbeats on the way.
    pub async fn next_answer(&mut self, writer: &mut OwnedWriteHalf) -> Result<Frame, WireError> {
        loop {
            match self.next().await? {
                Frame::Response(r) if r == HEARTBEAT => writer.write_all(b"NOP\n").await?,
                frame => return Ok(frame),
            }
        }
    }
}

/// What the client tells nsqd about itself (`IDENTIFY`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Identify {
    pub client_id: String,
    pub hostname: String,
    pub user_agent: String,
    pub feature_negotiation: bool,
    /// How often nsqd sends a heartbeat; a connection silent for two of them is dead.
    pub heartbeat_interval: u64,
    /// How long nsqd waits for FIN/REQ/TOUCH before it delivers a message again.
    pub msg_timeout: u64,
    /// `-1`: nsqd writes each message to the socket as it sends it. Its default buffers 16 KiB
    /// and flushes on a 250 ms ticker, so a lone message waited up to 250 ms per hop.
    pub output_buffer_size: i32,
}

impl Identify {
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval)
    }
}

/// Connects, sends the magic and `IDENTIFY`, and (when the server asks for it) `AUTH`.
pub async fn connect(
    addr: &str,
    identify: &Identify,
    auth_secret: Option<&str>,
) -> Result<(FrameReader, OwnedWriteHalf), WireError> {
    let patience = Duration::from_secs(5);
    let handshake = async {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, mut write) = stream.into_split();
        let mut reader = FrameReader { half: read, buf: BytesMut::with_capacity(64 * 1024) };
        let json = serde_json::to_vec(identify).expect("IDENTIFY serializes");
        let mut hello = BytesMut::from(MAGIC);
        hello.put_slice(&command("IDENTIFY", Some(&json)));
        write.write_all(&hello).await?;
        let features = match reader.next_answer(&mut write).await? {
            Frame::Response(r) => r,
            Frame::Error(e) => return Err(WireError::Refused(String::from_utf8_lossy(&e).into_owned())),
            Frame::Message(_) => return Err(WireError::Malformed("a message before SUB")),
        };
        let auth_required = serde_json::from_slice::<serde_json::Value>(&features)
            .ok()
            .and_then(|v| v.get("auth_required")?.as_bool())
            .unwrap_or(false);
        if auth_required {
            let Some(secret) = auth_secret else {
                return Err(WireError::Refused("auth_required, and NSQ_AUTH_SECRET is not set".into()));
            };
            write.write_all(&command("AUTH", Some(secret.as_bytes()))).await?;
            expect_ok(&mut reader, &mut write, true).await?;
        }
        Ok((reader, write))
    };
    tokio::time::timeout(patience, handshake).await.map_err(|_| WireError::Timeout(patience))?
}

/// Reads the answer to a command that answers `OK` (`AUTH` answers JSON: any response is fine).
pub async fn expect_ok(
    reader: &mut FrameReader,
    writer: &mut OwnedWriteHalf,
    any_response: bool,
) -> Result<(), WireError> {
    match reader.next_answer(writer).await? {
        Frame::Response(r) if any_response || r == "OK" => Ok(()),
        Frame::Response(r) | Frame::Error(r) => {
            Err(WireError::Refused(String::from_utf8_lossy(&r).into_owned()))
        }
        Frame::Message(_) => Err(WireError::Malformed("a message instead of an answer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u32, data: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u32(4 + data.len() as u32);
        b.put_u32(kind);
        b.put_slice(data);
        b
    }

    #[test]
    fn frames_decode_whole_or_wait_for_the_rest() {
        let mut data = BytesMut::new();
        data.put_i64(1_700_000_000_000_000_000);
        data.put_u16(3);
        data.put_slice(b"0123456789abcdef");
        data.put_slice(b"payload");
        let mut buf = frame(0, b"OK");
        buf.extend_from_slice(&frame(2, &data));
        buf.extend_from_slice(&frame(1, b"E_INVALID x")[..6]);
        assert_eq!(decode(&mut buf).unwrap(), Some(Frame::Response(Bytes::from_static(b"OK"))));
        let Some(Frame::Message(m)) = decode(&mut buf).unwrap() else { panic!("a message") };
        assert_eq!((m.attempts, &m.id, &m.body[..]), (3, b"0123456789abcdef", &b"payload"[..]));
        assert_eq!(decode(&mut buf).unwrap(), None, "half a frame waits");
        buf.extend_from_slice(&frame(1, b"E_INVALID x")[6..]);
        assert_eq!(decode(&mut buf).unwrap(), Some(Frame::Error(Bytes::from_static(b"E_INVALID x"))));
        assert!(buf.is_empty());
        assert!(decode(&mut frame(2, b"short")).is_err(), "a message shorter than its header");
        assert!(decode(&mut frame(7, b"")).is_err(), "an unknown frame type");
        let mut huge = BytesMut::new();
        huge.put_u32(u32::MAX);
        assert!(decode(&mut huge).is_err(), "a size past the limit");
    }

    #[test]
    fn commands_are_lines_with_sized_bodies() {
        assert_eq!(&publish("ns.cmd", b"hi")[..], b"PUB ns.cmd\n\0\0\0\x02hi");
        assert_eq!(&finish(b"0123456789abcdef")[..], b"FIN 0123456789abcdef\n");
        assert_eq!(
            &requeue(b"0123456789abcdef", Duration::from_millis(1500))[..],
            b"REQ 0123456789abcdef 1500\n"
        );
    }

    #[test]
    fn names_are_what_nsqd_takes() {
        for ok in ["ns.cmd.stock", "stock-worker", "b0123#ephemeral", &"x".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "#ephemeral", "a b", "ns/x", &"x".repeat(65), "é"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
