//! The CSV importer. Any bytes, read as a file (admin API) and as typed lines (admin page):
//! never panics, and every accepted row has a valid, distinct email and a valid name. Any client
//! list exported and imported again gives back the same clients: emails, names, and the access
//! period (to the end of its last day, which is what the export writes).
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use pagegate::api::clients::{check_email, check_name};
use pagegate::api::csv::{Import, ImportRow, Reading, export, parse_import, read_import};
use pagegate::store::{Client, Source};

/// The last end of access an export can write: the end of 9999-12-30, as `until` 9999-12-30.
const LAST_END: i64 = 253_402_214_400;

#[derive(Debug, Arbitrary)]
struct Spec<'a> {
    local: &'a [u8],
    domain: u8,
    name: &'a str,
    until: Option<u64>,
    source: u8,
    created_at: u32,
    last_login: Option<u32>,
}

// The first byte chooses: even, the rest is a file; odd, the rest describes a client list.
fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(import) = parse_import(rest) {
            check_rows(&import, Reading::File);
        }
        if let Ok(import) = read_import(rest, Reading::Typed) {
            check_rows(&import, Reading::Typed);
        }
    } else if let Ok(specs) = Vec::<Spec<'_>>::arbitrary_take_rest(Unstructured::new(rest)) {
        round_trip(&specs);
    }
});

fn check_rows(import: &Import, reading: Reading) {
    let mut seen = HashSet::new();
    for row in &import.rows {
        assert_eq!(
            check_email("email", &row.email).ok().as_ref(),
            Some(&row.email),
            "{reading:?} {row:?}"
        );
        assert!(
            seen.insert(row.email.clone()),
            "{reading:?}: {} twice",
            row.email
        );
        if let Some(name) = &row.name {
            assert_eq!(
                check_name(name).ok().as_ref(),
                Some(name),
                "{reading:?} {row:?}"
            );
        }
        assert!(row.line >= 1);
    }
    let lines: Vec<u64> = import.rows.iter().map(|r| r.line).collect();
    assert!(
        lines.windows(2).all(|w| w[0] < w[1]),
        "{reading:?}: lines {lines:?}"
    );
    assert!(
        import.problems.iter().all(|p| p.line >= 1),
        "{reading:?}: {:?}",
        import.problems
    );
}

/// Characters an email's local part may have, the quoting-free ones.
const LOCAL: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-/=?^_`{|}~.";
const DOMAINS: &[&str] = &[
    "example.com",
    "sub.example.org",
    "xn--80ak6aa92e.com",
    "x.io",
];

fn round_trip(specs: &[Spec<'_>]) {
    let mut emails = HashSet::new();
    let mut clients = Vec::new();
    for spec in specs {
        let local: String = spec
            .local
            .iter()
            .map(|&b| char::from(LOCAL[usize::from(b) % LOCAL.len()]))
            .collect();
        let domain = DOMAINS[usize::from(spec.domain) % DOMAINS.len()];
        let Ok(email) = check_email("email", &format!("{local}@{domain}")) else {
            continue;
        };
        let Ok(name) = check_name(spec.name) else {
            continue;
        };
        if !emails.insert(email.clone()) {
            continue;
        }
        let source = [
            Source::Admin,
            Source::Cli,
            Source::Grant,
            Source::Import,
            Source::Demo,
        ][usize::from(spec.source) % 5];
        clients.push(Client {
            email,
            name,
            created_at: i64::from(spec.created_at),
            updated_at: i64::from(spec.created_at),
            access_until: spec.until.map(|u| (u % (LAST_END as u64 + 1)) as i64),
            source,
            last_login: spec.last_login.map(i64::from),
        });
    }
    let text = export(&clients, 1_700_000_000).unwrap_or_else(|e| panic!("export: {e}"));
    let file = parse_import(&text).unwrap_or_else(|e| panic!("import of an export: {e}"));
    let expected: Vec<ImportRow> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| ImportRow {
            line: i as u64 + 2,
            email: c.email.clone(),
            name: Some(c.name.clone()),
            access_until: Some(
                c.access_until
                    .map(|t| ((t - 1).div_euclid(86_400) + 1) * 86_400),
            ),
        })
        .collect();
    let shown = String::from_utf8_lossy(&text);
    assert!(file.problems.is_empty(), "{shown:?}: {:?}", file.problems);
    assert_eq!(file.rows, expected, "{shown:?}");
    let typed = read_import(&text, Reading::Typed).unwrap_or_else(|e| panic!("typed: {e:?}"));
    assert_eq!(typed, file, "{shown:?} typed");
}
