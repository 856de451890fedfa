//! One access log line, written byte by byte into a buffer the caller reuses.
//!
//! The lines read exactly as `tracing_subscriber`'s `fmt` output of the same event used to (the
//! tests below compare the two), so what operators grep for and what log collectors parse did
//! not change when the access log left `tracing`. Only the work did: no `fmt` machinery, no
//! intermediate `String`, no allocation once the buffer has grown to a line's size.
//!
//! Whatever a request carries, a line stays one line with its fields where they belong: in text,
//! quoted values are escaped as Rust's `Debug` escapes them and the unquoted path has every byte
//! outside printable ASCII, `"` and `\` written `\xNN`; in JSON, strings are escaped as JSON
//! requires.

use std::cell::Cell;
use std::io::Write as _;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// How log lines are written: matches `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `TIMESTAMP  INFO pagegate::access: request site="…" …`
    Text,
    /// One JSON object per line, as `tracing_subscriber`'s JSON format writes it.
    Json,
}

/// What one line says.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    /// The site's name, `""` for none.
    pub site: &'a str,
    /// The protected page's id, `""` for none.
    pub page: &'a str,
    /// The request method.
    pub method: &'a str,
    /// The path as logs show it (no query).
    pub path: &'a str,
    /// The status answered.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
    /// From the request's arrival to the body's end.
    pub duration_micros: u64,
    /// The visitor's address.
    pub client: IpAddr,
    /// The signed-in visitor, only when configured.
    pub email: Option<&'a str>,
    /// Whether the whole body was sent.
    pub complete: bool,
}

/// Appends the line for `fields`, stamped `now`, with its newline.
pub fn write(out: &mut Vec<u8>, format: Format, now: SystemTime, fields: &Fields<'_>) {
    match format {
        Format::Text => text(out, now, fields),
        Format::Json => json(out, now, fields),
    }
}

fn text(out: &mut Vec<u8>, now: SystemTime, f: &Fields<'_>) {
    timestamp(out, now);
    out.extend_from_slice(b"  INFO pagegate::access: request site=");
    debug_str(out, f.site);
    out.extend_from_slice(b" page=");
    debug_str(out, f.page);
    out.extend_from_slice(b" method=");
    bare(out, f.method);
    out.extend_from_slice(b" path=");
    bare(out, f.path);
    out.extend_from_slice(b" status=");
    integer(out, u64::from(f.status));
    out.extend_from_slice(b" bytes=");
    integer(out, f.bytes);
    out.extend_from_slice(b" duration_ms=");
    millis(out, f.duration_micros);
    out.extend_from_slice(b" client=");
    address(out, f.client);
    if let Some(email) = f.email {
        out.extend_from_slice(b" email=");
        debug_str(out, email);
    }
    out.extend_from_slice(if f.complete {
        b" complete=true\n"
    } else {
        b" complete=false\n"
    });
}

fn json(out: &mut Vec<u8>, now: SystemTime, f: &Fields<'_>) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(out, now);
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"fields\":{\"message\":\"request\",\"site\":");
    json_str(out, f.site);
    out.extend_from_slice(b",\"page\":");
    json_str(out, f.page);
    out.extend_from_slice(b",\"method\":");
    json_str(out, f.method);
    out.extend_from_slice(b",\"path\":");
    json_str(out, f.path);
    out.extend_from_slice(b",\"status\":");
    integer(out, u64::from(f.status));
    out.extend_from_slice(b",\"bytes\":");
    integer(out, f.bytes);
    out.extend_from_slice(b",\"duration_ms\":");
    millis(out, f.duration_micros);
    out.extend_from_slice(b",\"client\":\"");
    address(out, f.client);
    out.push(b'"');
    if let Some(email) = f.email {
        out.extend_from_slice(b",\"email\":");
        json_str(out, email);
    }
    out.extend_from_slice(if f.complete {
        b",\"complete\":true},\"target\":\"pagegate::access\"}\n"
    } else {
        b",\"complete\":false},\"target\":\"pagegate::access\"}\n"
    });
}

thread_local! {
    /// The second last stamped on this thread and its `YYYY-MM-DDTHH:MM:SS.`: the date is
    /// worked out once a second, not once a line.
    static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
}

/// `2026-11-23T09:06:47.559015Z`: UTC, microseconds.
fn timestamp(out: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (cached, mut prefix) = SECOND.get();
    if cached != secs {
        prefix = date_and_time(secs);
        SECOND.set((secs, prefix));
    }
    out.extend_from_slice(&prefix);
    let micros = since.subsec_micros();
    two(out, micros / 10_000);
    two(out, micros / 100 % 100);
    two(out, micros % 100);
    out.push(b'Z');
}

/// `YYYY-MM-DDTHH:MM:SS.` of a Unix time (years past 9999 are not expected).
fn date_and_time(secs: u64) -> [u8; 20] {
    let (year, month, day) = civil_date((secs / 86_400) as i64);
    let year = year.clamp(0, 9999) as u32;
    let of_day = (secs % 86_400) as u32;
    let mut text = Vec::with_capacity(20);
    two(&mut text, year / 100);
    two(&mut text, year % 100);
    text.push(b'-');
    two(&mut text, month);
    text.push(b'-');
    two(&mut text, day);
    text.push(b'T');
    two(&mut text, of_day / 3600);
    text.push(b':');
    two(&mut text, of_day / 60 % 60);
    text.push(b':');
    two(&mut text, of_day % 60);
    text.push(b'.');
    let mut prefix = [0; 20];
    prefix.copy_from_slice(&text);
    prefix
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// "00" to "99", two bytes each.
const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// `n` (below 100) as two digits.
fn two(out: &mut Vec<u8>, n: u32) {
    let at = (n as usize % 100) * 2;
    out.extend_from_slice(&PAIRS[at..at + 2]);
}

/// `n` in decimal, two digits at a time.
fn integer(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        digits[at] = b'0' + n as u8;
    }
    out.extend_from_slice(&digits[at..]);
}

/// Microseconds as milliseconds the way `f64`'s `Debug` shows `micros as f64 / 1000.0`: the
/// shortest decimal, with at least one digit after the point (`3.898`, `12.0`, `0.05`).
fn millis(out: &mut Vec<u8>, micros: u64) {
    integer(out, micros / 1000);
    out.push(b'.');
    let mut fraction = micros % 1000;
    if fraction == 0 {
        out.push(b'0');
        return;
    }
    let digits = [
        b'0' + (fraction / 100) as u8,
        b'0' + (fraction / 10 % 10) as u8,
        b'0' + (fraction % 10) as u8,
    ];
    let mut width = 3;
    while fraction % 10 == 0 {
        fraction /= 10;
        width -= 1;
    }
    out.extend_from_slice(&digits[..width]);
}

fn address(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            integer(out, u64::from(a));
            for octet in [b, c, d] {
                out.push(b'.');
                integer(out, u64::from(octet));
            }
        }
        // Rare behind the usual set-ups, and its shortening rules are many: the standard ones.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Whether `b` goes into a line as it is, quoted or not.
fn plain(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\'
}

/// An unquoted value (method, path): bytes outside printable ASCII, `"` and `\` as `\xNN`, so
/// no byte can end the line, start a field or open a quote.
fn bare(out: &mut Vec<u8>, value: &str) {
    for &b in value.as_bytes() {
        if plain(b) {
            out.push(b);
        } else {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        }
    }
}

/// A quoted value, as `str`'s `Debug` writes it.
fn debug_str(out: &mut Vec<u8>, value: &str) {
    if value.bytes().all(|b| plain(b) || b == b' ') {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{value:?}");
    }
}

/// A JSON string, escaped as `serde_json` escapes it.
fn json_str(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    let bytes = value.as_bytes();
    let mut from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[from..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        } else {
            out.extend_from_slice(escape);
        }
        from = i + 1;
    }
    out.extend_from_slice(&bytes[from..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    fn fields<'a>(path: &'a str, email: Option<&'a str>) -> Fields<'a> {
        Fields {
            site: "school",
            page: "course",
            method: "GET",
            path,
            status: 200,
            bytes: 36,
            duration_micros: 3_898,
            client: IpAddr::from([203, 0, 113, 7]),
            email,
            complete: true,
        }
    }

    fn line(format: Format, f: &Fields<'_>) -> String {
        let mut out = Vec::new();
        let now = UNIX_EPOCH + Duration::from_micros(1_795_424_807_559_015);
        write(&mut out, format, now, f);
        String::from_utf8(out).expect("UTF-8")
    }

    /// What `tracing_subscriber` wrote for the same event, the way the access log used to emit
    /// it, with its timestamp replaced by the one [`line`] uses.
    fn as_tracing_wrote(format: Format, f: &Fields<'_>) -> String {
        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("capture").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let capture = Capture::default();
        let writer = capture.clone();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone());
        let emit = || {
            let duration_ms = f.duration_micros as f64 / 1000.0;
            tracing::info!(
                target: "pagegate::access",
                site = f.site,
                page = f.page,
                method = %f.method,
                path = %f.path,
                status = f.status,
                bytes = f.bytes,
                duration_ms,
                client = %f.client,
                email = f.email,
                complete = f.complete,
                "request"
            );
        };
        match format {
            Format::Text => tracing::subscriber::with_default(builder.finish(), emit),
            Format::Json => tracing::subscriber::with_default(builder.json().finish(), emit),
        }
        let text = String::from_utf8(capture.0.lock().expect("capture").clone()).expect("UTF-8");
        // The timestamp is the first 27 characters of either format's value.
        let at = text
            .find(|c: char| c.is_ascii_digit())
            .expect("a timestamp");
        format!(
            "{}2026-11-23T09:06:47.559015Z{}",
            &text[..at],
            &text[at + 27..]
        )
    }

    #[test]
    fn lines_read_as_the_tracing_output_they_replace() {
        let ipv6 = Fields {
            client: "2001:db8::7".parse().expect("address"),
            complete: false,
            duration_micros: 12_000,
            site: "",
            page: "",
            ..fields("/", None)
        };
        for f in [
            fields("/course/lesson-1", None),
            fields("/course/lesson-1", Some("ann@example.com")),
            fields("/course/", Some("ann.o'neil+x@пример.рф")),
            ipv6,
            Fields {
                duration_micros: 50,
                status: 101,
                ..fields("/ws", None)
            },
            Fields {
                site: "a \"quoted\" site",
                page: "tab\there",
                ..fields("/", None)
            },
        ] {
            for format in [Format::Text, Format::Json] {
                assert_eq!(line(format, &f), as_tracing_wrote(format, &f), "{format:?}");
            }
        }
        assert_eq!(
            line(Format::Text, &fields("/course/lesson-1", None)),
            "2026-11-23T09:06:47.559015Z  INFO pagegate::access: request site=\"school\" \
             page=\"course\" method=GET path=/course/lesson-1 status=200 bytes=36 \
             duration_ms=3.898 client=203.0.113.7 complete=true\n"
        );
    }

    #[test]
    fn durations_read_as_f64_debug_does() {
        for micros in [
            0,
            1,
            10,
            50,
            100,
            999,
            1000,
            1001,
            1010,
            1100,
            3_898,
            12_000,
            987_654_321,
        ] {
            let mut out = Vec::new();
            millis(&mut out, micros);
            assert_eq!(
                String::from_utf8(out).expect("UTF-8"),
                format!("{:?}", micros as f64 / 1000.0)
            );
        }
    }

    #[test]
    fn integers_read_as_display_does() {
        for n in (0..1200).chain([9_999, 10_000, 65_535, 1 << 40, u64::MAX]) {
            let mut out = Vec::new();
            integer(&mut out, n);
            assert_eq!(String::from_utf8(out).expect("UTF-8"), n.to_string());
        }
    }

    #[test]
    fn dates_are_right_across_leap_years_and_centuries() {
        for (secs, expected) in [
            (0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, "2000-02-29T00:00:00.000000Z"),
            (4_107_542_399, "2100-02-28T23:59:59.000000Z"),
            (4_107_542_400, "2100-03-01T00:00:00.000000Z"),
            (1_798_761_599, "2026-12-31T23:59:59.000000Z"),
        ] {
            let mut out = Vec::new();
            timestamp(&mut out, UNIX_EPOCH + Duration::from_secs(secs));
            assert_eq!(String::from_utf8(out).expect("UTF-8"), expected);
        }
    }

    #[test]
    fn odd_bytes_in_a_path_cannot_break_the_line_or_forge_another() {
        let forged = "/a b\n2026-11-23T09:06:47.559015Z  INFO pagegate::access: request site=\"x\"";
        let odd = [
            forged,
            "/quote\"d\\back",
            "/\r\x1b[31mred\x7f",
            "/caf\u{e9}/\u{fffd}",
            &String::from_utf8_lossy(b"/not-utf8-\xff\xfe"),
        ];
        for path in odd {
            let text = line(Format::Text, &fields(path, Some("a\"b\n@c")));
            assert_eq!(text.matches('\n').count(), 1, "{text:?}");
            assert!(text.ends_with('\n'));
            let path_field = text
                .split(" path=")
                .nth(1)
                .and_then(|rest| rest.split(" status=").next())
                .expect("the path field");
            assert!(
                path_field
                    .bytes()
                    .all(|b| (0x21..=0x7e).contains(&b) && b != b'"'),
                "{path_field:?}"
            );
            assert!(text.contains(" status=200 "), "{text:?}");

            let json = line(Format::Json, &fields(path, Some("a\"b\n@c")));
            assert_eq!(json.matches('\n').count(), 1, "{json:?}");
            let parsed: serde_json::Value = serde_json::from_str(&json).expect("one JSON object");
            assert_eq!(parsed["fields"]["path"], path);
            assert_eq!(parsed["fields"]["email"], "a\"b\n@c");
            assert_eq!(parsed["fields"]["status"], 200);
        }
        let text = line(Format::Text, &fields("/quote\"d\\back\n", None));
        assert!(text.contains(" path=/quote\\x22d\\x5cback\\x0a "), "{text}");
    }
}
