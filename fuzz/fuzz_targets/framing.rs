//! The HTTP/1.1 framing watch. Any byte stream: how it is cut into reads never changes the
//! verdict. A pipeline of generated requests (Content-Length, chunked with extensions and
//! trailers, duplicated or conflicting framing headers, upgrades, bodies that look like
//! requests): the watch names the first ambiguous request and counts the whole requests exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagegate::fuzzing::framing_verdict;
use pagegate_fuzz::Pieces;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let seed = u64::from(mode) << 8 | rest.len() as u64;
    if mode & 1 == 0 {
        let whole = framing_verdict([rest]);
        assert_eq!(framing_verdict(rest.chunks(1)), whole, "byte by byte");
        let max = usize::from(mode >> 1) + 1;
        assert_eq!(
            framing_verdict(Pieces::new(rest, seed, max)),
            whole,
            "in pieces"
        );
    } else {
        let (stream, expected) = Pipeline::new(rest).build();
        assert_eq!(
            framing_verdict([stream.as_slice()]),
            expected,
            "{:?}",
            String::from_utf8_lossy(&stream)
        );
        let max = usize::from(mode >> 1) + 1;
        assert_eq!(
            framing_verdict(Pieces::new(&stream, seed, max)),
            expected,
            "{:?} in pieces of at most {max}",
            String::from_utf8_lossy(&stream)
        );
    }
});

/// Reads choices from the fuzz input; zeros once it is used up.
struct Pipeline<'a> {
    input: &'a [u8],
}

impl Pipeline<'_> {
    fn new(input: &[u8]) -> Pipeline<'_> {
        Pipeline { input }
    }

    fn byte(&mut self) -> u8 {
        match self.input.split_first() {
            Some((&b, rest)) => {
                self.input = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    fn pick<'s>(&mut self, options: &[&'s str]) -> &'s str {
        options[usize::from(self.byte()) % options.len()]
    }

    /// The stream and what the watch must say of it: the first ambiguous request's number,
    /// and the number of whole requests when the watch still follows at the end.
    fn build(mut self) -> (Vec<u8>, (Option<u64>, Option<u64>)) {
        let mut stream = Vec::new();
        let mut whole = 0u64;
        let count = 1 + self.byte() % 6;
        for _ in 0..count {
            let kind = self.byte() % 9;
            let method = match kind {
                8 => "CONNECT",
                _ => self.pick(&["GET", "POST", "PUT", "DELETE"]),
            };
            let target = if kind == 8 { "example.com:443" } else { "/p" };
            stream
                .extend_from_slice(format!("{method} {target} HTTP/1.1\r\nHost: a\r\n").as_bytes());
            let length_name = self.pick(&["Content-Length", "content-length", "CONTENT-LENGTH"]);
            let te_name = self.pick(&["Transfer-Encoding", "transfer-encoding"]);
            let length = usize::from(self.byte() % 40);
            let length_text = match self.byte() % 4 {
                0 => format!("{length}"),
                1 => format!(" {length}"),
                2 => format!("{length} "),
                _ => format!("00{length}"),
            };
            let te = self.pick(&[
                "chunked",
                "Chunked",
                "gzip, chunked",
                "gzip,chunked",
                " chunked ",
            ]);
            let extra = self.byte() % 3;
            for _ in 0..extra {
                let value: String = self
                    .bytes(3)
                    .iter()
                    .map(|b| char::from(b'a' + b % 26))
                    .collect();
                stream.extend_from_slice(format!("X-{value}: {value}\r\n").as_bytes());
            }
            match kind {
                1 | 6 => {
                    stream.extend_from_slice(
                        format!("{length_name}: {length_text}\r\n\r\n").as_bytes(),
                    );
                    let body = self.bytes(length);
                    stream.extend_from_slice(&body);
                    whole += 1;
                }
                2 | 3 => {
                    let second = if kind == 2 { length } else { length + 1 };
                    stream.extend_from_slice(
                        format!("{length_name}: {length}\r\n{length_name}: {second}\r\n\r\n")
                            .as_bytes(),
                    );
                    return (stream, (Some(whole), None));
                }
                4 => {
                    stream.extend_from_slice(format!("{te_name}: {te}\r\n\r\n").as_bytes());
                    self.chunks(&mut stream);
                    whole += 1;
                }
                5 => {
                    let (first, second) = if self.byte() % 2 == 0 {
                        (
                            format!("{te_name}: {te}"),
                            format!("{length_name}: {length}"),
                        )
                    } else {
                        (
                            format!("{length_name}: {length}"),
                            format!("{te_name}: {te}"),
                        )
                    };
                    stream.extend_from_slice(format!("{first}\r\n{second}\r\n\r\n").as_bytes());
                    return (stream, (Some(whole), None));
                }
                7 => {
                    stream.extend_from_slice(b"Connection: upgrade\r\nUpgrade: websocket\r\n\r\n");
                    stream.extend_from_slice(&self.bytes(length));
                    return (stream, (None, None));
                }
                8 => {
                    stream.extend_from_slice(b"\r\n");
                    stream.extend_from_slice(&self.bytes(length));
                    return (stream, (None, None));
                }
                _ => {
                    stream.extend_from_slice(b"\r\n");
                    whole += 1;
                }
            }
        }
        (stream, (None, Some(whole)))
    }

    /// A chunked body: a few chunks with sizes in any hex case, extensions, then the last chunk
    /// and trailers.
    fn chunks(&mut self, stream: &mut Vec<u8>) {
        let n = self.byte() % 4;
        for _ in 0..n {
            let size = usize::from(self.byte() % 20) + 1;
            let size_text = match self.byte() % 3 {
                0 => format!("{size:x}"),
                1 => format!("{size:X}"),
                _ => format!("0{size:x}"),
            };
            let ext = self.pick(&["", ";a=b", ";a=\"x;y\"", ";a"]);
            stream.extend_from_slice(format!("{size_text}{ext}\r\n").as_bytes());
            let data = self.bytes(size);
            stream.extend_from_slice(&data);
            stream.extend_from_slice(b"\r\n");
        }
        let ext = self.pick(&["", ";last"]);
        stream.extend_from_slice(format!("0{ext}\r\n").as_bytes());
        let trailers = self.pick(&["", "X-T: 1\r\n", "X-T: 1\r\nX-U: 2\r\n"]);
        stream.extend_from_slice(trailers.as_bytes());
        stream.extend_from_slice(b"\r\n");
    }
}
