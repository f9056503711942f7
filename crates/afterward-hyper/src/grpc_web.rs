//! The status of a gRPC-Web response, read from its body.
//!
//! gRPC-Web (what `tonic-web` serves to browsers) has no HTTP trailers: the
//! status travels in the last frame of the body, flagged `0x80`, as a block
//! of `name: value` lines. Frames are a flag byte, a 4-byte big-endian
//! length, then that many bytes; `application/grpc-web-text` responses
//! carry the same frames in base64. This reads the frames as the body
//! passes, without copying any but the trailer frame.

/// Reads a gRPC-Web body's frames as they pass, for its `grpc-status`.
#[derive(Debug, Clone, Default)]
pub(crate) struct WebFrames {
    /// `application/grpc-web-text`: base64 to decode first.
    text: Option<Base64>,
    /// The header of the frame being read, and how much of it is in.
    header: [u8; 5],
    header_len: usize,
    /// Bytes of the current frame's payload still to come.
    remaining: usize,
    /// The trailer frame's payload, while it is read.
    trailer: Option<Vec<u8>>,
}

/// What a trailer frame may be at most; a larger one is not read.
const MAX_TRAILER: usize = 64 * 1024;

impl WebFrames {
    /// For a `content-type` that is gRPC-Web; `None` for any other.
    pub(crate) fn of(content_type: &[u8]) -> Option<WebFrames> {
        let web = content_type.strip_prefix(b"application/grpc-web")?;
        let text = web.starts_with(b"-text");
        Some(WebFrames {
            text: text.then(Base64::default),
            ..WebFrames::default()
        })
    }

    /// Reads `bytes` of the body; returns the `grpc-status` (`true` for `0`)
    /// of each trailer frame completed in them.
    pub(crate) fn read(&mut self, bytes: &[u8], status: &mut impl FnMut(bool)) {
        match self.text.take() {
            None => self.read_binary(bytes, status),
            Some(mut base64) => {
                let mut decoded = Vec::with_capacity(bytes.len() / 4 * 3 + 3);
                base64.decode(bytes, &mut decoded);
                self.text = Some(base64);
                self.read_binary(&decoded, status);
            }
        }
    }

    fn read_binary(&mut self, mut bytes: &[u8], status: &mut impl FnMut(bool)) {
        while !bytes.is_empty() {
            if self.remaining == 0 && self.header_len < 5 {
                let n = (5 - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                self.header_len += n;
                bytes = &bytes[n..];
                if self.header_len < 5 {
                    return;
                }
                let [flag, length @ ..] = self.header;
                self.remaining = u32::from_be_bytes(length) as usize;
                let is_trailer = flag & 0x80 != 0 && self.remaining <= MAX_TRAILER;
                self.trailer = is_trailer.then(|| Vec::with_capacity(self.remaining));
                if self.remaining == 0 {
                    self.end_frame(status);
                }
                continue;
            }
            let n = self.remaining.min(bytes.len());
            if let Some(trailer) = &mut self.trailer {
                trailer.extend_from_slice(&bytes[..n]);
            }
            self.remaining -= n;
            bytes = &bytes[n..];
            if self.remaining == 0 {
                self.end_frame(status);
            }
        }
    }

    fn end_frame(&mut self, status: &mut impl FnMut(bool)) {
        self.header_len = 0;
        if let Some(ok) = self.trailer.take().and_then(|block| grpc_status(&block)) {
            status(ok);
        }
    }
}

/// The `grpc-status` of a trailer block (`name: value` lines), `true` for
/// `0`.
fn grpc_status(block: &[u8]) -> Option<bool> {
    block.split(|&b| b == b'\n').find_map(|line| {
        let (name, value) = line.split_at(line.iter().position(|&b| b == b':')?);
        name.trim_ascii()
            .eq_ignore_ascii_case(b"grpc-status")
            .then(|| value[1..].trim_ascii() == b"0")
    })
}

/// Base64 decoding across chunks: whole groups of four characters are
/// decoded, a partial group waits for the next chunk. Padding may end any
/// group, since each frame may be encoded on its own.
#[derive(Debug, Clone, Default)]
struct Base64 {
    group: [u8; 4],
    len: usize,
}

impl Base64 {
    fn decode(&mut self, text: &[u8], out: &mut Vec<u8>) {
        for &c in text {
            if c.is_ascii_whitespace() {
                continue;
            }
            self.group[self.len] = c;
            self.len += 1;
            if self.len < 4 {
                continue;
            }
            self.len = 0;
            let mut bits = 0u32;
            let mut chars = 0;
            for &c in &self.group {
                let Some(value) = sextet(c) else { break };
                bits = bits << 6 | u32::from(value);
                chars += 1;
            }
            bits <<= 6 * (4 - chars);
            let bytes = bits.to_be_bytes();
            out.extend_from_slice(&bytes[1..1 + (chars * 6 / 8) as usize]);
        }
    }
}

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::WebFrames;

    fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![flag];
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    fn statuses(mut frames: WebFrames, chunks: &[&[u8]]) -> Vec<bool> {
        let mut seen = Vec::new();
        for chunk in chunks {
            frames.read(chunk, &mut |ok| seen.push(ok));
        }
        seen
    }

    fn base64(bytes: &[u8]) -> Vec<u8> {
        const TABLE: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        for chunk in bytes.chunks(3) {
            let mut group = [0u8; 3];
            group[..chunk.len()].copy_from_slice(chunk);
            let bits = u32::from_be_bytes([0, group[0], group[1], group[2]]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(TABLE[(bits >> (18 - 6 * i) & 63) as usize]);
                } else {
                    out.push(b'=');
                }
            }
        }
        out
    }

    #[test]
    fn the_trailer_frame_gives_the_status_whatever_the_chunking() {
        let mut body = frame(0, b"\x0a\x05hello");
        body.extend(frame(0x80, b"grpc-status:0\r\ngrpc-message:\r\n"));
        for split in 0..body.len() {
            let frames = WebFrames::of(b"application/grpc-web+proto").unwrap();
            let (a, b) = body.split_at(split);
            assert_eq!(statuses(frames, &[a, b]), [true], "split at {split}");
        }
        let failed = frame(0x80, b"Grpc-Status: 13\r\ngrpc-message: boom\r\n");
        let frames = WebFrames::of(b"application/grpc-web").unwrap();
        assert_eq!(statuses(frames, &[&failed]), [false]);
    }

    #[test]
    fn text_mode_decodes_frames_encoded_one_by_one() {
        let mut body = base64(&frame(0, b"\x0a\x01x"));
        body.extend(base64(&frame(0x80, b"grpc-status: 0\r\n")));
        for split in 0..body.len() {
            let frames = WebFrames::of(b"application/grpc-web-text+proto").unwrap();
            let (a, b) = body.split_at(split);
            assert_eq!(statuses(frames, &[a, b]), [true], "split at {split}");
        }
    }

    #[test]
    fn other_content_types_are_not_read() {
        assert!(WebFrames::of(b"application/grpc").is_none());
        assert!(WebFrames::of(b"text/plain").is_none());
    }
}
