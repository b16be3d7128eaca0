//! Incremental decoders for streamed responses: Server-Sent Events and the streamed JSON array
//! Gemini sends without `alt=sse`.
//!
//! Both are fed the body's chunks as they arrive, split anywhere, and call back once per
//! complete event (every blank-line-terminated block, comments included) with its own raw bytes
//! (so a caller can forward them unchanged) and
//! its parsed fields. They keep only the unfinished tail; a tail that outgrows `max_pending`
//! (a runaway event) is abandoned and counted, never buffered without bound.

use std::borrow::Cow;

/// One SSE event. `data` joins multiple `data:` lines with '\n'.
#[derive(Debug, PartialEq, Eq)]
pub struct SseEvent<'a> {
    pub event: Option<&'a str>,
    pub data: Cow<'a, [u8]>,
    /// The event's bytes as received, blank-line terminator included.
    pub raw: &'a [u8],
}

#[derive(Debug)]
pub struct SseDecoder {
    pending: Vec<u8>,
    /// Offset in `pending` where scanning for the next line resumes.
    scan_from: usize,
    max_pending: usize,
    pub overflowed: bool,
}

impl SseDecoder {
    pub fn new(max_pending: usize) -> Self {
        Self {
            pending: Vec::new(),
            scan_from: 0,
            max_pending,
            overflowed: false,
        }
    }

    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(&SseEvent<'_>)) {
        if self.overflowed {
            return;
        }
        self.pending.extend_from_slice(chunk);
        let mut event_start = 0;
        let mut line_start = self.scan_from;
        while let Some(nl) = memchr::memchr(b'\n', &self.pending[line_start..]) {
            let line_end = line_start + nl;
            let line = trim_cr(&self.pending[line_start..line_end]);
            line_start = line_end + 1;
            if line.is_empty() {
                let raw = &self.pending[event_start..line_start];
                on_event(&parse_event(raw));
                event_start = line_start;
            }
        }
        self.pending.drain(..event_start);
        self.scan_from = line_start - event_start;
        if self.pending.len() > self.max_pending {
            self.overflowed = true;
            self.pending = Vec::new();
        }
    }

    /// At end of stream: an unterminated last event still counts (some servers omit the final
    /// blank line). Returns its raw bytes, if any, after reporting it.
    pub fn finish(&mut self, mut on_event: impl FnMut(&SseEvent<'_>)) -> Vec<u8> {
        let rest = std::mem::take(&mut self.pending);
        self.scan_from = 0;
        if !rest.is_empty() {
            on_event(&parse_event(&rest));
        }
        rest
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Fields of one block. Comment-only and empty blocks come out as events with no name and no
/// data: callers that forward events by their `raw` bytes must see every byte.
fn parse_event(raw: &[u8]) -> SseEvent<'_> {
    let mut event = None;
    let mut data: Option<Cow<'_, [u8]>> = None;
    for line in raw.split(|b| *b == b'\n').map(trim_cr) {
        let (field, value) = match memchr::memchr(b':', line) {
            Some(0) => continue,
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => event = std::str::from_utf8(value).ok(),
            b"data" => {
                data = Some(match data.take() {
                    None => Cow::Borrowed(value),
                    Some(prev) => {
                        let mut joined = prev.into_owned();
                        joined.push(b'\n');
                        joined.extend_from_slice(value);
                        Cow::Owned(joined)
                    }
                })
            }
            _ => {}
        }
    }
    SseEvent {
        event,
        data: data.unwrap_or(Cow::Borrowed(&[])),
        raw,
    }
}

/// Splits `[ {...}, {...} ]` streamed in arbitrary chunks into its top-level elements.
#[derive(Debug)]
pub struct JsonArraySplitter {
    depth: u32,
    in_string: bool,
    escaped: bool,
    element: Vec<u8>,
    max_pending: usize,
    pub overflowed: bool,
}

impl JsonArraySplitter {
    pub fn new(max_pending: usize) -> Self {
        Self {
            depth: 0,
            in_string: false,
            escaped: false,
            element: Vec::new(),
            max_pending,
            overflowed: false,
        }
    }

    pub fn feed(&mut self, chunk: &[u8], mut on_element: impl FnMut(&[u8])) {
        if self.overflowed {
            return;
        }
        let mut start = (self.depth >= 2).then_some(0);
        for (i, &b) in chunk.iter().enumerate() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'[' | b'{' => {
                    self.depth += 1;
                    if self.depth == 2 {
                        start = Some(i);
                    }
                }
                b']' | b'}' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 1
                        && let Some(s) = start.take()
                    {
                        self.element.extend_from_slice(&chunk[s..=i]);
                        on_element(&self.element);
                        self.element.clear();
                    }
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            self.element.extend_from_slice(&chunk[s..]);
            if self.element.len() > self.max_pending {
                self.overflowed = true;
                self.element = Vec::new();
            }
        }
    }
}

#[cfg(test)]
mod tests;
