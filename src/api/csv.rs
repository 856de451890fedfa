//! A page's client list as CSV: the export, and the import with a report of the rows accepted
//! and rejected.
//!
//! The export's columns are `name,email,until,active,source,created_at,last_login`; `until` is
//! the last day of access (`YYYY-MM-DD`, UTC), empty for unlimited. The import reads the columns
//! `email` (required), `name` and `until` by their header names, in any order, and skips the
//! export's read-only columns, so an export can be edited in a spreadsheet and imported back. An
//! unknown column refuses the whole file: a misspelt `until` must not silently grant unlimited
//! access. A file whose first line has semicolons and no commas (spreadsheets in many locales save
//! so) is read with `;`.
//!
//! Cells that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab or
//! carriage return) are written with a leading `'`, which the import removes again.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::ApiError;
use super::clients::{check_email, check_name, day_end, last_day, rfc3339};
use crate::store::{Client, Source, Timestamp};

/// The export's columns, in order.
pub const EXPORT_COLUMNS: [&str; 7] = [
    "name",
    "email",
    "until",
    "active",
    "source",
    "created_at",
    "last_login",
];

/// Export columns the import skips.
const READ_ONLY_COLUMNS: [&str; 5] = ["active", "source", "created_at", "updated_at", "last_login"];

/// A page's clients as CSV text.
pub fn export(clients: &[Client], now: Timestamp) -> Result<Vec<u8>, ApiError> {
    let failed = |e: ::csv::Error| ApiError::invalid("body", format!("cannot write CSV: {e}"));
    let mut out = ::csv::Writer::from_writer(Vec::new());
    out.write_record(EXPORT_COLUMNS).map_err(failed)?;
    for c in clients {
        out.write_record([
            escape_formula(&c.name),
            escape_formula(&c.email),
            c.access_until.map(last_day).unwrap_or_default(),
            c.has_access(now).to_string(),
            source_name(c.source).to_owned(),
            rfc3339(c.created_at),
            c.last_login.map(rfc3339).unwrap_or_default(),
        ])
        .map_err(failed)?;
    }
    out.into_inner()
        .map_err(|e| ApiError::invalid("body", format!("cannot write CSV: {e}")))
}

fn source_name(source: Source) -> &'static str {
    match source {
        Source::Admin => "admin",
        Source::Cli => "cli",
        Source::Grant => "grant",
        Source::Import => "import",
        Source::Demo => "demo",
    }
}

fn starts_like_formula(text: &str) -> bool {
    text.starts_with(['=', '+', '-', '@', '\t', '\r'])
}

fn escape_formula(text: &str) -> String {
    if starts_like_formula(text) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

fn unescape_formula(text: &str) -> &str {
    match text.strip_prefix('\'') {
        Some(rest) if starts_like_formula(rest) => rest,
        _ => text,
    }
}

/// One accepted row of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRow {
    /// Line of the file the row starts on (the header is line 1).
    pub line: u64,
    /// Normalised email.
    pub email: String,
    /// Name to set; `None` when the file has no `name` column.
    pub name: Option<String>,
    /// Access period to set (`Some(None)` unlimited); `None` when the file has no `until`
    /// column. A day in the past is kept: the client stays listed without access.
    pub access_until: Option<Option<Timestamp>>,
}

/// One rejected row of an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// Line of the file the row starts on.
    pub line: u64,
    /// Why, naming the column.
    pub error: String,
}

/// A parsed import: the rows to apply and the rows refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Import {
    /// Rows to apply, in file order.
    pub rows: Vec<ImportRow>,
    /// Rows refused, in file order.
    pub rejected: Vec<Rejected>,
}

/// Where the columns the import reads are.
struct Columns {
    email: usize,
    name: Option<usize>,
    until: Option<usize>,
    count: usize,
}

/// Reads an import file. A file whose header is unusable is refused whole (400 on `header`);
/// otherwise each row is accepted or rejected on its own. Blank rows are skipped.
pub fn parse_import(bytes: &[u8]) -> Result<Import, ApiError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let first_line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let delimiter = if first_line.contains(&b';') && !first_line.contains(&b',') {
        b';'
    } else {
        b','
    };
    let mut reader = ::csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .has_headers(true)
        .from_reader(bytes);
    let header = reader
        .byte_headers()
        .map_err(|e| ApiError::invalid("header", format!("cannot read the header row: {e}")))?
        .clone();
    let columns = columns(&header)?;
    let mut import = Import::default();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for record in reader.byte_records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                import.rejected.push(Rejected {
                    line: e.position().map_or(0, |p| line_at(bytes, p.byte())),
                    error: format!("cannot read the row: {e}"),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, |p| line_at(bytes, p.byte()));
        if record
            .iter()
            .all(|cell| cell.iter().all(u8::is_ascii_whitespace))
        {
            continue;
        }
        match row(&record, &columns, line) {
            Ok(row) => {
                if let Some(first) = seen.get(&row.email) {
                    import.rejected.push(Rejected {
                        line,
                        error: format!("email: {} is already on line {first}", row.email),
                    });
                } else {
                    seen.insert(row.email.clone(), line);
                    import.rows.push(row);
                }
            }
            Err(error) => import.rejected.push(Rejected { line, error }),
        }
    }
    Ok(import)
}

/// The 1-based line of the first character at or after byte `at`. (The reader's own line count
/// is one short after a CRLF line end, whose LF it counts with the next record.)
fn line_at(bytes: &[u8], at: u64) -> u64 {
    let mut at = usize::try_from(at).unwrap_or(usize::MAX).min(bytes.len());
    while bytes.get(at).is_some_and(|b| matches!(b, b'\r' | b'\n')) {
        at += 1;
    }
    1 + bytes[..at].iter().filter(|&&b| b == b'\n').count() as u64
}

fn columns(header: &::csv::ByteRecord) -> Result<Columns, ApiError> {
    let bad = |message: String| ApiError::invalid("header", message);
    if header.is_empty() {
        return Err(bad(
            "the file is empty: expected a header row name,email,until".into(),
        ));
    }
    let (mut email, mut name, mut until) = (None, None, None);
    for (i, cell) in header.iter().enumerate() {
        let title = std::str::from_utf8(cell)
            .map_err(|_| bad("the header row is not valid UTF-8".into()))?
            .trim()
            .to_ascii_lowercase();
        let slot = match title.as_str() {
            "email" => &mut email,
            "name" => &mut name,
            "until" => &mut until,
            "" => continue,
            other if READ_ONLY_COLUMNS.contains(&other) => continue,
            other => {
                return Err(bad(format!(
                    "unknown column {other:?}; expected name, email, until (and the export's {})",
                    READ_ONLY_COLUMNS.join(", ")
                )));
            }
        };
        if slot.replace(i).is_some() {
            return Err(bad(format!("the column {title:?} appears twice")));
        }
    }
    let email = email.ok_or_else(|| bad("expected an `email` column".into()))?;
    Ok(Columns {
        email,
        name,
        until,
        count: header.len(),
    })
}

fn row(record: &::csv::ByteRecord, columns: &Columns, line: u64) -> Result<ImportRow, String> {
    let cell = |index: usize, title: &str| -> Result<String, String> {
        let raw = record.get(index).unwrap_or_default();
        let text =
            std::str::from_utf8(raw).map_err(|_| format!("{title}: not valid UTF-8 text"))?;
        Ok(unescape_formula(text.trim()).to_owned())
    };
    let extra = record
        .iter()
        .skip(columns.count)
        .any(|c| !c.iter().all(u8::is_ascii_whitespace));
    if extra {
        return Err(format!(
            "the row has more cells than the header's {} columns",
            columns.count
        ));
    }
    let email = check_email("email", &cell(columns.email, "email")?).map_err(|e| e.to_string())?;
    let name = match columns.name {
        Some(i) => Some(check_name(&cell(i, "name")?).map_err(|e| e.to_string())?),
        None => None,
    };
    let access_until = match columns.until {
        Some(i) => {
            let text = cell(i, "until")?;
            if text.is_empty() {
                Some(None)
            } else {
                Some(Some(day_end(&text).map_err(|e| e.to_string())?))
            }
        }
        None => None,
    };
    Ok(ImportRow {
        line,
        email,
        name,
        access_until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(email: &str, name: &str, until: Option<Timestamp>) -> Client {
        Client {
            email: email.into(),
            name: name.into(),
            created_at: 1_700_000_000,
            updated_at: 1_700_000_000,
            access_until: until,
            source: Source::Grant,
            last_login: None,
        }
    }

    #[test]
    fn export_then_import_round_trips() {
        let end = day_end("2027-01-31").expect("date");
        let clients = [
            client("ann@example.com", "Ann, \"the\" Lee", Some(end)),
            client("bob@example.com", "=HYPERLINK(\"x\")", None),
        ];
        let text = export(&clients, 1_700_000_000).expect("export");
        let text = String::from_utf8(text).expect("utf-8");
        assert!(
            text.starts_with("name,email,until,active,source,created_at,last_login\n"),
            "{text}"
        );
        assert!(text.contains("\"'=HYPERLINK(\"\"x\"\")\""), "{text}");
        assert!(
            text.contains(",2027-01-31,true,grant,2023-11-14T22:13:20Z,"),
            "{text}"
        );
        let import = parse_import(text.as_bytes()).expect("import");
        assert!(import.rejected.is_empty(), "{:?}", import.rejected);
        assert_eq!(
            import.rows,
            [
                ImportRow {
                    line: 2,
                    email: "ann@example.com".into(),
                    name: Some("Ann, \"the\" Lee".into()),
                    access_until: Some(Some(end)),
                },
                ImportRow {
                    line: 3,
                    email: "bob@example.com".into(),
                    name: Some("=HYPERLINK(\"x\")".into()),
                    access_until: Some(None),
                },
            ]
        );
    }

    #[test]
    fn bad_rows_are_reported_with_their_line() {
        let text = "\u{feff}Email;Name\r\nann@example.com;Ann\r\n\r\nnot-an-email;X\r\n;;\r\n\
                    ANN@example.com;Again\r\n\"multi\nline\"@x;Y\r\nbob@example.com;Bob;extra\r\n\
                    cy@example.com;Cy;\r\n";
        let import = parse_import(text.as_bytes()).expect("import");
        let accepted: Vec<(u64, &str, Option<&str>)> = import
            .rows
            .iter()
            .map(|r| (r.line, r.email.as_str(), r.name.as_deref()))
            .collect();
        assert_eq!(
            accepted,
            [
                (2, "ann@example.com", Some("Ann")),
                (10, "cy@example.com", Some("Cy"))
            ]
        );
        assert!(import.rows.iter().all(|r| r.access_until.is_none()));
        let lines: Vec<u64> = import.rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, [4, 6, 7, 9], "{:?}", import.rejected);
        assert!(import.rejected[0].error.starts_with("email:"));
        assert!(import.rejected[1].error.contains("already on line 2"));
        assert!(import.rejected[3].error.contains("more cells"));
    }

    #[test]
    fn until_cells() {
        let text = "email,until\na@x.org,2020-01-01\nb@x.org,\nc@x.org,31.01.2027\n";
        let import = parse_import(text.as_bytes()).expect("import");
        assert_eq!(import.rows[0].access_until, Some(Some(1_577_923_200)));
        assert_eq!(import.rows[1].access_until, Some(None));
        assert_eq!(import.rejected.len(), 1);
        assert!(
            import.rejected[0].error.starts_with("until:"),
            "{:?}",
            import.rejected
        );
    }

    #[test]
    fn unusable_headers_refuse_the_file() {
        for text in [
            "",
            "name,mail\n",
            "email,untill\n",
            "email,email\n",
            "name\nAnn\n",
        ] {
            let err = parse_import(text.as_bytes()).expect_err(text);
            assert_eq!(err.field(), Some("header"), "{text:?}: {err}");
        }
        let only_header = parse_import(b"email,name,until,source\n").expect("header only");
        assert_eq!(only_header, Import::default());
    }
}
