//! Helpers shared by the fuzz targets: turning fuzz input into request paths, models of how
//! common upstream servers read a path ([`upstreams`]), a model of how a browser resolves a
//! relative URL ([`browser`]), and cutting a byte stream into reads ([`Pieces`]).
//!
//! The models are written from each server's documented or observed behaviour, independently
//! of pagegate's matcher, so that the differential target compares two views of the same path.

pub mod browser;
pub mod upstreams;

/// Pieces of request paths that matter to path readings: page names, separators and their
/// encodings, dot-segments, parameters, query and fragment marks, case and Windows quirks.
pub const PATH_TOKENS: &[&str] = &[
    "/",
    "//",
    "course",
    "Course",
    "COURSE",
    "c",
    "ourse",
    "%63",
    "%43",
    "%2563",
    "downloads",
    "%64ownloads",
    "admin",
    "ADMIN",
    "v1",
    "v1.",
    "api",
    "caf\u{e9}",
    "caf%C3%A9",
    "CAF%c3%a9",
    "%C3%A9",
    "%25C3%25A9",
    "public",
    "x",
    ".",
    "..",
    "...",
    "%2e",
    "%2E",
    "%2e%2e",
    ".%2e",
    "%252e",
    "%252e%252e",
    "%25252e",
    "%2f",
    "%2F",
    "%252f",
    "%25252f",
    "%5c",
    "%5C",
    "%255c",
    "\\",
    ";",
    ";x=1",
    ";/",
    "%3b",
    "%3B",
    "%253b",
    "?",
    "%3f",
    "%3F",
    "%253f",
    "#",
    "%23",
    "%2523",
    "%",
    "%25",
    "%2525",
    "%252525",
    "+",
    "%2b",
    " ",
    "%20",
    "%2520",
    "%09",
    "%00",
    "%0a",
    "%u002e",
    "%u002f",
    "%U0063",
    "%c0%ae",
    "%c0%af",
    "%e0%80%ae",
    "/..",
    "/../",
    "/./",
    "/x/..",
    "//../",
    "..;/",
    "..%2f",
    "%2e%2e%2f",
    "..\\",
    "(S(x))",
    "~",
    "::$DATA",
    "%7e",
    "%ff",
    "%C0",
    "%e2%80%ae",
    "\u{202e}",
    "\u{ff0f}",
    "%ef%bc%8f",
];

/// A request path built from fuzz input: bytes from 0x80 up pick a token of [`PATH_TOKENS`],
/// ASCII bytes stand for themselves. Always starts with `/`, always UTF-8.
pub fn path_from_tokens(data: &[u8]) -> String {
    let mut path = String::from("/");
    for &b in data {
        if b >= 0x80 {
            path.push_str(PATH_TOKENS[usize::from(b - 0x80) % PATH_TOKENS.len()]);
        } else {
            path.push(char::from(b));
        }
    }
    path
}

/// Cuts a byte stream into reads of sizes drawn from a small generator seeded by the fuzz input,
/// so one input checks one particular cut.
#[derive(Debug, Clone)]
pub struct Pieces<'a> {
    rest: &'a [u8],
    state: u64,
    max: usize,
}

impl<'a> Pieces<'a> {
    /// Reads of 1 to `max` bytes.
    pub fn new(stream: &'a [u8], seed: u64, max: usize) -> Pieces<'a> {
        Pieces {
            rest: stream,
            state: seed | 1,
            max: max.max(1),
        }
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        // xorshift64: cheap, and all it needs is to vary.
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let size = 1 + (self.state % self.max as u64) as usize;
        let (piece, rest) = self.rest.split_at(size.min(self.rest.len()));
        self.rest = rest;
        Some(piece)
    }
}

/// Standard percent-decoding of every valid `%XX`; an invalid `%` stays as it is.
pub fn percent_decode(s: &[u8]) -> Vec<u8> {
    percent_encoding::percent_decode(s).collect()
}

/// The value of the hex digit `b`.
pub fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}
