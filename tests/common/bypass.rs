//! The path-bypass corpus (see `tests/path_bypass.rs`): payloads built from a few protected
//! targets by inserting, encoding and replacing separators, dots and delimiters, plus well-known
//! tricks. Shared by the full proxy's run and the forward-auth edges' runs.

use std::collections::HashSet;

pub const SECRET: &str = "SECRET-COURSE-CONTENT";
pub const PUBLIC: &str = "PUBLIC-CONTENT";
pub const METHODS: &[&str] = &["GET", "HEAD", "POST", "OPTIONS", "FOO"];
pub const TARGETS: &[&str] = &[
    "/course/lesson1.html",
    "/course/",
    "/downloads/course/notes.txt",
];

pub fn docroot() -> Vec<(&'static str, &'static str)> {
    let secret = "<p>SECRET-COURSE-CONTENT</p>\n";
    let public = "<p>PUBLIC-CONTENT</p>\n";
    vec![
        ("course/index.html", secret),
        ("course/lesson1.html", secret),
        ("downloads/course/notes.txt", secret),
        ("index.html", public),
        ("public/page.html", public),
        ("public/my page.html", public),
        ("course-info.html", public),
        ("downloads/course-list.txt", public),
    ]
}

/// What gets inserted, by name and raw bytes.
pub const TOKENS: &[(&str, &[u8])] = &[
    ("/", b"/"),
    ("//", b"//"),
    ("\\", b"\\"),
    (".", b"."),
    ("./", b"./"),
    ("/.", b"/."),
    ("../x/..", b"../x/.."),
    ("x/../", b"x/../"),
    ("/x/..", b"/x/.."),
    (";", b";"),
    (";x=1", b";x=1"),
    ("%", b"%"),
    ("NUL", b"\0"),
    ("?", b"?"),
    ("#", b"#"),
];

/// Bytes that are encoded in the encoded forms of a token; letters, digits and `=` stay.
pub fn is_special(b: u8) -> bool {
    matches!(b, b'/' | b'\\' | b'.' | b';' | b'%' | b'?' | b'#' | 0)
}

#[derive(Clone, Copy, Debug)]
pub enum Encoding {
    Raw,
    Lower,
    Upper,
    Double,
    /// The first special byte raw, the others encoded (e.g. `.%2e`).
    Half,
}

impl Encoding {
    const ALL: [Encoding; 5] = [
        Encoding::Raw,
        Encoding::Lower,
        Encoding::Upper,
        Encoding::Double,
        Encoding::Half,
    ];

    fn name(self) -> &'static str {
        match self {
            Encoding::Raw => "raw",
            Encoding::Lower => "%xx",
            Encoding::Upper => "%XX",
            Encoding::Double => "%25xx",
            Encoding::Half => "half",
        }
    }

    fn apply(self, token: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut first = true;
        for &b in token {
            if !is_special(b) {
                out.push(b);
                continue;
            }
            let form = match self {
                Encoding::Raw => None,
                Encoding::Lower => Some(format!("%{b:02x}")),
                Encoding::Upper => Some(format!("%{b:02X}")),
                Encoding::Double => Some(format!("%25{b:02x}")),
                Encoding::Half if first => None,
                Encoding::Half => Some(format!("%{b:02x}")),
            };
            first = false;
            match form {
                Some(f) => out.extend_from_slice(f.as_bytes()),
                None => out.push(b),
            }
        }
        out
    }
}

pub struct Payload {
    pub class: String,
    pub target: Vec<u8>,
}

/// Where to insert into a target: at every segment boundary (either side of each `/`, and the
/// end) and in the middle of each segment.
pub fn positions(target: &[u8]) -> Vec<usize> {
    let mut at = Vec::new();
    for i in 0..=target.len() {
        let after_slash = i > 0 && target[i - 1] == b'/';
        let before_slash = target.get(i) == Some(&b'/');
        if after_slash || before_slash || i == target.len() {
            at.push(i);
        }
    }
    let mut start = 1;
    for i in 1..=target.len() {
        if i == target.len() || target[i] == b'/' {
            if i - start >= 2 {
                at.push(start + (i - start) / 2);
            }
            start = i + 1;
        }
    }
    at.sort_unstable();
    at.dedup();
    at
}

pub fn corpus() -> Vec<Payload> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut add = |class: String, target: Vec<u8>| {
        if seen.insert(target.clone()) {
            out.push(Payload { class, target });
        }
    };
    for target in TARGETS {
        let t = target.as_bytes();
        // Inserted tokens.
        for (name, token) in TOKENS {
            for encoding in Encoding::ALL {
                let form = encoding.apply(token);
                for at in positions(t) {
                    let mut p = t[..at].to_vec();
                    p.extend_from_slice(&form);
                    p.extend_from_slice(&t[at..]);
                    add(format!("insert {name} {}", encoding.name()), p);
                }
            }
        }
        // Each separator (not the leading one) replaced.
        for form in [
            "%2f", "%2F", "%252f", "%5c", "%5C", "%255c", "\\", "//", "/./", ";/",
        ] {
            for (i, _) in t.iter().enumerate().skip(1).filter(|(_, b)| **b == b'/') {
                let mut p = t[..i].to_vec();
                p.extend_from_slice(form.as_bytes());
                p.extend_from_slice(&t[i + 1..]);
                add(format!("replace / by {form}"), p);
            }
        }
        // Each dot and each first letter of a segment encoded.
        for (i, &b) in t.iter().enumerate() {
            let first_letter = i > 0 && t[i - 1] == b'/' && b.is_ascii_alphabetic();
            if b == b'.' || first_letter {
                for (class, form) in [
                    ("encode a char %xx", format!("%{b:02x}")),
                    ("encode a char %XX", format!("%{b:02X}")),
                    ("encode a char %25xx", format!("%25{b:02x}")),
                ] {
                    let mut p = t[..i].to_vec();
                    p.extend_from_slice(form.as_bytes());
                    p.extend_from_slice(&t[i + 1..]);
                    add(class.to_string(), p);
                }
            }
        }
        // Case.
        add("case".into(), target.to_ascii_uppercase().into_bytes());
        let mut title = t.to_vec();
        if let Some(c) = title.get_mut(1) {
            *c = c.to_ascii_uppercase();
        }
        add("case".into(), title);
        // Everything encoded, once and twice.
        let all: String = t[1..].iter().map(|b| format!("%{b:02x}")).collect();
        add("encode all".into(), format!("/{all}").into_bytes());
        let all2: String = t[1..].iter().map(|b| format!("%25{b:02x}")).collect();
        add("encode all".into(), format!("/{all2}").into_bytes());
    }
    for classic in CLASSICS {
        add("classic".into(), classic.as_bytes().to_vec());
    }
    out
}

/// Well-known tricks, written out.
pub const CLASSICS: &[&str] = &[
    "/public/../course/lesson1.html",
    "/index.html/../course/lesson1.html",
    "/./course/",
    "//course/",
    "/course%2flesson1.html",
    "/x/..%2fcourse/lesson1.html",
    "/x/%2e%2e/course/lesson1.html",
    "/x/%2e%2e%2fcourse%2flesson1.html",
    "/x/.%2e/course/lesson1.html",
    "/x/%2e./course/lesson1.html",
    "/x/%252e%252e/course/lesson1.html",
    "/x/%252e%252e%252fcourse/lesson1.html",
    "/x/..%252fcourse/lesson1.html",
    "/x/..;/course/lesson1.html",
    "/x;/../course/lesson1.html",
    "/x\\..\\course\\lesson1.html",
    "/x/..\\course/lesson1.html",
    "/x/..%5ccourse/lesson1.html",
    "/x/..%255ccourse/lesson1.html",
    "/%63ourse/lesson1.html",
    "/%2563ourse/lesson1.html",
    "/cours%65/lesson1.html",
    "/COURSE/lesson1.html",
    "/Course/",
    "/course./lesson1.html",
    "/course%20/lesson1.html",
    "/course%09/lesson1.html",
    "/course/lesson1.html%00",
    "/course/lesson1.html%00.txt",
    "/course/lesson1.html%2500",
    "/%c0%ae%c0%ae/course/lesson1.html",
    "/x/%c0%ae%c0%ae/course/lesson1.html",
    "/course%c0%aflesson1.html",
    "/course%e0%80%aflesson1.html",
    "/course%u002flesson1.html",
    "/x/%u002e%u002e/course/lesson1.html",
    "/course/./lesson1.html",
    "/course/x/../lesson1.html",
    "/course//lesson1.html",
    "/course/lesson1.html/.",
    "/course/lesson1.html;",
    "/course;/lesson1.html",
    "/course;jsessionid=1/lesson1.html",
    "/course/lesson1.html?x",
    "/course/lesson1.html#x",
    "/public/page.html#/../../course/lesson1.html",
    "/public/page.html?/../../course/lesson1.html",
    "/%2fcourse/lesson1.html",
    "/%5ccourse/lesson1.html",
    "/..%2fcourse/lesson1.html",
    "/../course/lesson1.html",
    "/../../../../course/lesson1.html",
    "/course/..",
    "/course/../course/lesson1.html",
    "/downloads/x/../course/notes.txt",
    "/downloads//course//notes.txt",
    "/downloads%2fcourse%2fnotes.txt",
    "/downloads/./course/./notes.txt",
    "/DOWNLOADS/COURSE/NOTES.TXT",
    "/downloads/course./notes.txt",
    "http://a.example/course/lesson1.html",
    "http://a.example//course/lesson1.html",
    "http://a.example/x/../course/lesson1.html",
    "*",
    "course/lesson1.html",
];

/// A payload as readable text.
pub fn show(target: &[u8]) -> String {
    target
        .iter()
        .map(|&b| match b {
            0 => "\\0".to_string(),
            b'\\' => "\\\\".to_string(),
            0x20..=0x7e => (b as char).to_string(),
            _ => format!("\\x{b:02x}"),
        })
        .collect()
}
