//! A page's client list as CSV: the export, the import with a report of the rows accepted and
//! rejected, and applying an import's rows. The admin API and the admin page share all three.
//!
//! The export's columns are `name,email,until,active,source,created_at,last_login`; `until` is
//! the last day of access (`YYYY-MM-DD`, UTC), empty for unlimited. The import reads the columns
//! `email` (required), `name` and `until` by their header names, in any order, and skips the
//! export's read-only columns, so an export can be edited in a spreadsheet and imported back. An
//! unknown column refuses the whole file: a misspelt `until` must not silently grant unlimited
//! access. A file whose first line has semicolons and no commas (spreadsheets in many locales save
//! so) is read with `;`.
//!
//! Nothing an export holds may run as a spreadsheet formula, whatever the spreadsheet splits
//! cells on: every cell is quoted, and a `'` is written before a formula character wherever a
//! cell could be read to start (`defuse`); the import removes exactly those again (`restore`),
//! so an export reads back unchanged.
//!
//! The admin page takes lines typed by hand as well as files, and reads them a little more
//! freely ([`Reading::Typed`]): the header row may be left out, `until` may say `unlimited`, and
//! a short row leaves what it lacks as it is.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::clients::{check_email, check_name, day_end, last_day, rfc3339, set_event};
use crate::body::{self, Body};
use crate::store::{Client, ClientSet, Source, Store, StoreError, Timestamp};

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
    export_rows(clients, now, true)
}

/// Chunks of an export kept ready ahead of the download.
const EXPORT_CHUNKS_AHEAD: usize = 4;

/// A page's clients as a CSV body written while it is read: a chunk of clients at a time is
/// read from the store (on a blocking thread) and written out, so an export of a million clients
/// never holds the list. Stops reading when the download is abandoned. A store failure midway
/// cuts the download short (the answer's status has gone out) and is logged.
pub fn export_body(store: Arc<dyn Store>, page: String, now: Timestamp) -> Body {
    let (tx, body) = body::channel(EXPORT_CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        let gone = || StoreError::Backend("the download was abandoned".into());
        let send = |bytes: Result<Vec<u8>, ApiError>| -> Result<(), StoreError> {
            let bytes = bytes.map_err(|e| StoreError::Backend(e.to_string()))?;
            tx.blocking_send(Ok(Bytes::from(bytes))).map_err(|_| gone())
        };
        let written = send(export_rows(&[], now, true)).and_then(|()| {
            store.client_chunks(&page, &mut |chunk| send(export_rows(&chunk, now, false)))
        });
        if let Err(e) = written {
            if !tx.is_closed() {
                tracing::warn!(page = %page, error = %e, "client export cut short");
                let _ = tx.blocking_send(Err(Box::new(e)));
            }
        }
    });
    body
}

/// The CSV lines of `clients`, after the header row when `header` is set.
fn export_rows(clients: &[Client], now: Timestamp, header: bool) -> Result<Vec<u8>, ApiError> {
    let failed = |e: ::csv::Error| ApiError::invalid("body", format!("cannot write CSV: {e}"));
    // Quoted, a cell's commas, semicolons and line breaks are data to every CSV reader, and a
    // reader that splits anyway meets the defused text below.
    let mut out = ::csv::WriterBuilder::new()
        .quote_style(::csv::QuoteStyle::Always)
        .from_writer(Vec::with_capacity(clients.len() * 96));
    if header {
        out.write_record(EXPORT_COLUMNS).map_err(failed)?;
    }
    for c in clients {
        let cells = [
            c.name.clone(),
            c.email.clone(),
            c.access_until.map(last_day).unwrap_or_default(),
            c.has_access(now).to_string(),
            c.source.name().to_owned(),
            rfc3339(c.created_at),
            c.last_login.map(rfc3339).unwrap_or_default(),
        ];
        out.write_record(cells.iter().map(|cell| defuse(cell)))
            .map_err(failed)?;
    }
    out.into_inner()
        .map_err(|e| ApiError::invalid("body", format!("cannot write CSV: {e}")))
}

/// Characters that make a spreadsheet read a cell as a formula when they start it: `=`, `+`,
/// `-`, `@`, tab and carriage return, and the full-width forms of the first four, which some
/// spreadsheets and input methods take for them.
fn is_trigger(c: char) -> bool {
    matches!(
        c,
        '=' | '+' | '-' | '@' | '\t' | '\r' | '\u{FF1D}' | '\u{FF0B}' | '\u{FF0D}' | '\u{FF20}'
    )
}

/// Characters a spreadsheet may split a cell on: the list separators in use around the world
/// (`,` and `;`), `|`, tab and line breaks. Excel with a `;` list separator reads a comma file's
/// quoted cell `"x;=1+1"` as the two cells `x` and `=1+1`.
fn is_separator(c: char) -> bool {
    matches!(c, ',' | ';' | '|' | '\t' | '\n' | '\r')
}

/// Whether the place a cell could start that `rest` follows gets a `'`: when a formula
/// character comes first once spaces and `'`s are skipped. Skipping spaces covers spreadsheets
/// that trim cells; skipping `'`s makes the mark reversible, since a text that already has a
/// `'` there gets one more and the import takes exactly one away.
fn starts_formula(rest: &str) -> bool {
    rest.trim_start_matches([' ', '\''])
        .chars()
        .next()
        .is_some_and(is_trigger)
}

/// `text` with a `'` put in at every place a cell could start (the start, and right after a
/// separator) where a formula would otherwise start. The `'` makes a spreadsheet take what
/// follows as text. [`restore`] undoes it exactly: it removes one `'` at each such place that
/// is followed by a formula once the spaces and `'`s are skipped, and a `'` was added at
/// precisely those places (the added `'` is no separator, so the places are the same).
fn defuse(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    let mut cell_start = true;
    for (i, c) in text.char_indices() {
        if cell_start && starts_formula(&text[i..]) {
            out.push('\'');
        }
        out.push(c);
        cell_start = is_separator(c);
    }
    out
}

/// The text [`defuse`] was given.
fn restore(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut cell_start = true;
    for (i, c) in text.char_indices() {
        let added = cell_start && c == '\'' && starts_formula(&text[i + 1..]);
        if !added {
            out.push(c);
        }
        cell_start = is_separator(c);
    }
    out
}

/// How an import is read. The front ends differ only where the admin page takes lines a person
/// typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// The admin API's: the first row names the columns, and a cell missing from a short row
    /// reads as empty (an empty `until` is unlimited).
    File,
    /// The admin page's, for a file or pasted lines: a first row naming an `email` column is the
    /// header, otherwise every row is `email,name,until` in this order; a cell missing from a
    /// short row leaves that field as it is; `until` may also be `unlimited`; and a quote never
    /// closed rejects the row it opens in, instead of reading the rest of the text as one cell.
    Typed,
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

/// One rejected row of an import, as the admin API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// Line of the file the row starts on.
    pub line: u64,
    /// Why, naming the column.
    pub error: String,
}

/// What is wrong with a rejected row. The text is the admin API's; the admin page words each
/// kind in the admin's language.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// The CSV reader could not read the row.
    #[error("cannot read the row: {0}")]
    Unreadable(String),
    /// A quote opened in the row is never closed ([`Reading::Typed`] only).
    #[error("a quote is not closed")]
    OpenQuote,
    /// A cell of this column is not UTF-8 text.
    #[error("{0}: not valid UTF-8 text")]
    NotText(&'static str),
    /// The row has more cells than the header has columns.
    #[error("the row has more cells than the header's {0} columns")]
    ExtraCells(usize),
    /// The email is not valid (the text names the field).
    #[error("{0}")]
    Email(String),
    /// The name is too long or has control characters (the text names the field).
    #[error("{0}")]
    Name(String),
    /// `until` is not a date (the text names the field).
    #[error("{0}")]
    Until(String),
    /// The email is on an earlier row.
    #[error("email: {email} is already on line {first}")]
    Repeated {
        /// The normalised email.
        email: String,
        /// The line it was first on.
        first: u64,
    },
}

/// A rejected row: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Line of the file the row starts on.
    pub line: u64,
    /// What is wrong with it.
    pub fault: Fault,
}

impl From<Problem> for Rejected {
    fn from(problem: Problem) -> Rejected {
        Rejected {
            line: problem.line,
            error: problem.fault.to_string(),
        }
    }
}

/// A parsed import: the rows to apply and the rows refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Import {
    /// Rows to apply, in file order.
    pub rows: Vec<ImportRow>,
    /// Rows refused, in file order.
    pub problems: Vec<Problem>,
}

/// Why a header row cannot be used. The text is the admin API's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderFault {
    /// There is no row at all.
    #[error("the file is empty: expected a header row name,email,until")]
    Empty,
    /// The CSV reader could not read the header row.
    #[error("cannot read the header row: {0}")]
    Unreadable(String),
    /// The header row is not UTF-8 text.
    #[error("the header row is not valid UTF-8")]
    NotText,
    /// A column the import does not know (its title, lower-cased).
    #[error(
        "unknown column {0:?}; expected name, email, until (and the export's {read_only})",
        read_only = READ_ONLY_COLUMNS.join(", ")
    )]
    Unknown(String),
    /// A column named twice (its title, lower-cased).
    #[error("the column {0:?} appears twice")]
    Twice(String),
    /// No `email` column.
    #[error("expected an `email` column")]
    NoEmail,
}

/// A file refused whole because of its header row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusable {
    /// Line of the header row.
    pub line: u64,
    /// What is wrong with it.
    pub fault: HeaderFault,
}

impl From<Unusable> for ApiError {
    fn from(unusable: Unusable) -> ApiError {
        ApiError::invalid("header", unusable.fault.to_string())
    }
}

/// Where the columns the import reads are.
struct Columns {
    email: usize,
    name: Option<usize>,
    until: Option<usize>,
    count: usize,
}

/// The columns of typed lines without a header row: `email,name,until`.
const POSITIONAL: Columns = Columns {
    email: 0,
    name: Some(1),
    until: Some(2),
    count: 3,
};

/// Reads an import file as the admin API does ([`Reading::File`]); an unusable header is a 400
/// on `header`.
pub fn parse_import(bytes: &[u8]) -> Result<Import, ApiError> {
    Ok(read_import(bytes, Reading::File)?)
}

/// Reads an import. A file whose header is unusable is refused whole; otherwise each row is
/// accepted or rejected on its own. Blank rows are skipped.
pub fn read_import(bytes: &[u8], reading: Reading) -> Result<Import, Unusable> {
    let file = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let first_line = file.split(|&b| b == b'\n').next().unwrap_or_default();
    let delimiter = if first_line.contains(&b';') && !first_line.contains(&b',') {
        b';'
    } else {
        b','
    };
    // Typed lines: the row a quote is left open in is cut off and rejected, not read.
    let open_quote = match reading {
        Reading::File => None,
        Reading::Typed => open_quote_row(file, delimiter),
    };
    let readable = open_quote.map_or(file, |start| &file[..start]);
    let lines = Lines::new(file);
    let mut records = ::csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .has_headers(false)
        .from_reader(readable)
        .into_byte_records()
        .map(|record| match record {
            Ok(r) => (r.position().map_or(0, |p| lines.at(p.byte())), Ok(r)),
            Err(e) => (
                e.position().map_or(0, |p| lines.at(p.byte())),
                Err(e.to_string()),
            ),
        })
        .peekable();
    let columns = match reading {
        Reading::File => match records.next() {
            None => {
                return Err(Unusable {
                    line: 1,
                    fault: HeaderFault::Empty,
                });
            }
            Some((line, Err(e))) => {
                return Err(Unusable {
                    line,
                    fault: HeaderFault::Unreadable(e),
                });
            }
            Some((line, Ok(header))) => {
                columns(&header).map_err(|fault| Unusable { line, fault })?
            }
        },
        Reading::Typed => {
            while records
                .next_if(|(_, r)| r.as_ref().is_ok_and(is_blank))
                .is_some()
            {}
            match records.next_if(|(_, r)| r.as_ref().is_ok_and(names_email)) {
                Some((line, Ok(header))) => {
                    columns(&header).map_err(|fault| Unusable { line, fault })?
                }
                _ => POSITIONAL,
            }
        }
    };
    let mut import = Import::default();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for (line, record) in records {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                import.problems.push(Problem {
                    line,
                    fault: Fault::Unreadable(e),
                });
                continue;
            }
        };
        if is_blank(&record) {
            continue;
        }
        match row(&record, &columns, reading, line) {
            Ok(row) => {
                if let Some(&first) = seen.get(&row.email) {
                    import.problems.push(Problem {
                        line,
                        fault: Fault::Repeated {
                            email: row.email,
                            first,
                        },
                    });
                } else {
                    seen.insert(row.email.clone(), line);
                    import.rows.push(row);
                }
            }
            Err(fault) => import.problems.push(Problem { line, fault }),
        }
    }
    if let Some(start) = open_quote {
        import.problems.push(Problem {
            line: lines.at(start as u64),
            fault: Fault::OpenQuote,
        });
    }
    Ok(import)
}

fn is_blank(record: &::csv::ByteRecord) -> bool {
    record
        .iter()
        .all(|cell| cell.iter().all(u8::is_ascii_whitespace))
}

/// Whether a row names an `email` column, which makes it a header among typed lines.
fn names_email(record: &::csv::ByteRecord) -> bool {
    record
        .iter()
        .any(|cell| std::str::from_utf8(cell).is_ok_and(|c| c.trim().eq_ignore_ascii_case("email")))
}

/// Where the row starts that holds a quote never closed, if the text ends inside one: the CSV
/// reader would take everything after that quote as one cell. Follows the reader's rules: a
/// quote opens a quoted cell only as the cell's first character, `""` inside is a quote, and
/// line ends outside quotes end the row.
fn open_quote_row(bytes: &[u8], delimiter: u8) -> Option<usize> {
    let (mut quoted, mut cell_start, mut row_start) = (false, true, 0);
    let mut iter = bytes.iter().enumerate().peekable();
    while let Some((i, &b)) = iter.next() {
        if quoted {
            if b == b'"' && iter.next_if(|(_, next)| **next == b'"').is_none() {
                quoted = false;
            }
        } else if b == b'"' && cell_start {
            quoted = true;
            cell_start = false;
        } else if b == b'\n' || b == b'\r' {
            cell_start = true;
            row_start = i + 1;
        } else {
            cell_start = b == delimiter;
        }
    }
    quoted.then_some(row_start)
}

/// Line numbers of byte offsets in an import, from the line ends found in one pass: LF, CRLF or
/// a lone CR, as the reader's records end. (The reader's own line count is one short after a
/// CRLF line end, whose LF it counts with the next record, and ignores lone CRs.)
struct Lines<'a> {
    bytes: &'a [u8],
    ends: Vec<usize>,
}

impl Lines<'_> {
    fn new(bytes: &[u8]) -> Lines<'_> {
        let ends = bytes
            .iter()
            .enumerate()
            .filter(|&(i, &b)| b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n')))
            .map(|(i, _)| i)
            .collect();
        Lines { bytes, ends }
    }

    /// The 1-based line of the first character at or after byte `at`.
    fn at(&self, at: u64) -> u64 {
        let mut at = usize::try_from(at)
            .unwrap_or(usize::MAX)
            .min(self.bytes.len());
        while self
            .bytes
            .get(at)
            .is_some_and(|b| matches!(b, b'\r' | b'\n'))
        {
            at += 1;
        }
        1 + self.ends.partition_point(|&end| end < at) as u64
    }
}

fn columns(header: &::csv::ByteRecord) -> Result<Columns, HeaderFault> {
    if header.is_empty() {
        return Err(HeaderFault::Empty);
    }
    let (mut email, mut name, mut until) = (None, None, None);
    for (i, cell) in header.iter().enumerate() {
        let title = std::str::from_utf8(cell)
            .map_err(|_| HeaderFault::NotText)?
            .trim()
            .to_ascii_lowercase();
        let slot = match title.as_str() {
            "email" => &mut email,
            "name" => &mut name,
            "until" => &mut until,
            "" => continue,
            other if READ_ONLY_COLUMNS.contains(&other) => continue,
            _ => return Err(HeaderFault::Unknown(title)),
        };
        if slot.replace(i).is_some() {
            return Err(HeaderFault::Twice(title));
        }
    }
    let email = email.ok_or(HeaderFault::NoEmail)?;
    Ok(Columns {
        email,
        name,
        until,
        count: header.len(),
    })
}

fn row(
    record: &::csv::ByteRecord,
    columns: &Columns,
    reading: Reading,
    line: u64,
) -> Result<ImportRow, Fault> {
    // The text of a column's cell: `None` when the file has no such column, or when a typed row
    // stops before it; in a file, a short row's missing cells are empty.
    let cell = |index: Option<usize>, title: &'static str| -> Result<Option<String>, Fault> {
        let Some(index) = index else {
            return Ok(None);
        };
        let raw = match record.get(index) {
            Some(raw) => raw,
            None if reading == Reading::File => b"".as_slice(),
            None => return Ok(None),
        };
        let text = std::str::from_utf8(raw).map_err(|_| Fault::NotText(title))?;
        Ok(Some(restore(text.trim())))
    };
    let extra = record
        .iter()
        .skip(columns.count)
        .any(|c| !c.iter().all(u8::is_ascii_whitespace));
    if extra {
        return Err(Fault::ExtraCells(columns.count));
    }
    let email = cell(Some(columns.email), "email")?.unwrap_or_default();
    let email = check_email("email", &email).map_err(|e| Fault::Email(e.to_string()))?;
    let name = match cell(columns.name, "name")? {
        Some(text) => Some(check_name(&text).map_err(|e| Fault::Name(e.to_string()))?),
        None => None,
    };
    let access_until = match cell(columns.until, "until")? {
        None => None,
        Some(text) if text.is_empty() => Some(None),
        Some(text) if reading == Reading::Typed && text.eq_ignore_ascii_case("unlimited") => {
            Some(None)
        }
        Some(text) => Some(Some(
            day_end(&text).map_err(|e| Fault::Until(e.to_string()))?,
        )),
    };
    Ok(ImportRow {
        line,
        email,
        name,
        access_until,
    })
}

/// What applying an import's rows did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Clients new on the page.
    pub created: usize,
    /// Clients already there, changed.
    pub updated: usize,
}

/// Rows one transaction of an import applies: a large import is a series of short write
/// transactions, so sign-ins and grants never wait long behind it, and none holds a huge
/// transaction's worth of changes.
pub const IMPORT_BATCH: usize = 2_000;

/// Rows between two progress lines in the log.
const IMPORT_PROGRESS_EVERY: usize = 50_000;

/// Sets each row's client on `page` (name and access period replaced, history kept, new clients
/// `source: import`), with an audit entry each naming `actor`, in transactions of
/// [`IMPORT_BATCH`] rows. A failure leaves the batches before it applied and the rest not (it is
/// logged with how many rows were applied); applying the same rows again is harmless, since a
/// row sets the client to what it says.
pub fn apply_import(
    store: &dyn Store,
    page: &str,
    rows: &[ImportRow],
    actor: &str,
) -> Result<Applied, StoreError> {
    let mut applied = Applied {
        created: 0,
        updated: 0,
    };
    let now = crate::store::now();
    let audit =
        |client: &Client, created: bool| set_event(now, page, actor, "import", client, created);
    let started = std::time::Instant::now();
    let mut since_progress = 0;
    for batch in rows.chunks(IMPORT_BATCH) {
        let sets: Vec<ClientSet<'_>> = batch
            .iter()
            .map(|row| ClientSet {
                email: &row.email,
                name: row.name.as_deref(),
                access_until: row.access_until,
                source: Source::Import,
                now,
            })
            .collect();
        let stored = match store.set_clients(page, &sets, &audit) {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(
                    page = %page,
                    applied = applied.created + applied.updated,
                    left = rows.len() - applied.created - applied.updated,
                    error = %e,
                    "client import stopped"
                );
                return Err(e);
            }
        };
        let created = stored.iter().filter(|(_, created)| *created).count();
        applied.created += created;
        applied.updated += stored.len() - created;
        since_progress += batch.len();
        if since_progress >= IMPORT_PROGRESS_EVERY {
            since_progress = 0;
            tracing::info!(
                page = %page,
                applied = applied.created + applied.updated,
                of = rows.len(),
                "client import going on"
            );
        }
    }
    if rows.len() > IMPORT_BATCH {
        tracing::info!(
            page = %page,
            created = applied.created,
            updated = applied.updated,
            ms = started.elapsed().as_millis() as u64,
            "client import applied"
        );
    }
    Ok(applied)
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
            text.starts_with(
                "\"name\",\"email\",\"until\",\"active\",\"source\",\"created_at\",\"last_login\"\n"
            ),
            "{text}"
        );
        assert!(text.contains("\"'=HYPERLINK(\"\"x\"\")\""), "{text}");
        assert!(
            text.contains(",\"2027-01-31\",\"true\",\"grant\",\"2023-11-14T22:13:20Z\",\"\"\n"),
            "{text}"
        );
        let import = parse_import(text.as_bytes()).expect("import");
        assert!(import.problems.is_empty(), "{:?}", import.problems);
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

    /// Texts that start a formula somewhere a spreadsheet could start a cell, and their
    /// neighbours that must pass untouched.
    const TRICKY: &[&str] = &[
        "x;=HYPERLINK(\"http://evil\",\"click\")",
        "=1+1",
        "+1",
        "-1",
        "@SUM(A1)",
        "\t=1",
        "\r=1",
        "a,=1",
        "a, =1",
        "a;@x",
        "a|+x",
        "a\n-x",
        "a\r\n=x",
        "a,\t=x",
        "a;;=x",
        "'=x",
        "''=x",
        "' =x",
        "a;'=x",
        "a;''-x",
        "\u{FF1D}1+1",
        "a;\u{FF20}x",
        "",
        "'",
        "a;'",
        "O'Brien",
        "Ann-Marie",
        "ann+tag@example.com",
        "a;b,c|d",
        "a;' b",
        "1 + 1 = 2",
    ];

    /// Whether a spreadsheet would run `piece` as a formula: a formula character after any
    /// spaces (a `'` in front makes it text).
    fn runs(piece: &str) -> bool {
        piece.trim_start_matches(' ').starts_with(is_trigger)
    }

    #[test]
    fn defused_text_starts_no_formula_wherever_it_is_split_and_reads_back_exactly() {
        for text in TRICKY {
            let defused = defuse(text);
            assert_eq!(restore(&defused), *text, "{defused:?}");
            for piece in defused.split(is_separator) {
                assert!(!runs(piece), "{text:?}: piece {piece:?}");
            }
            if !text.contains(|c| is_separator(c) || c == '\'') && !starts_formula(text) {
                assert_eq!(defused, *text, "left alone");
            }
        }
        assert_eq!(defuse("x;=HYPERLINK(\"a\")"), "x;'=HYPERLINK(\"a\")");
        assert_eq!(defuse("a, +1"), "a,' +1");
        assert_eq!(defuse("'=x"), "''=x");
    }

    #[test]
    fn an_export_defuses_every_cell_and_reads_back_exactly() {
        // Names cannot hold control characters: those texts are for the functions alone.
        let names: Vec<&str> = TRICKY
            .iter()
            .copied()
            .filter(|n| !n.contains(char::is_control))
            .collect();
        let clients: Vec<Client> = names
            .iter()
            .enumerate()
            .map(|(i, name)| client(&format!("c{i:02}@example.com"), name, None))
            .collect();
        let text = export(&clients, 1_700_000_000).expect("export");
        let text = String::from_utf8(text).expect("utf-8");
        for piece in text.split(is_separator) {
            assert!(
                !runs(piece.trim_start_matches('"')),
                "piece {piece:?} of\n{text}"
            );
        }
        let import = parse_import(text.as_bytes()).expect("import");
        assert!(import.problems.is_empty(), "{:?}", import.problems);
        let read: Vec<&str> = import
            .rows
            .iter()
            .map(|r| r.name.as_deref().unwrap_or("?"))
            .collect();
        assert_eq!(read, names);
        assert!(names.len() > 20, "most texts are names");
    }

    #[test]
    fn quotes_before_a_formula_character_survive_the_round_trip() {
        let clients = [
            client("'+a@example.com", "'=SUM(1)", None),
            client("''-b@example.com", "'", None),
            client("c@example.com", "''@x", None),
            client("d@example.com", "'plain", None),
        ];
        let text = export(&clients, 1_700_000_000).expect("export");
        let text = String::from_utf8(text).expect("utf-8");
        let import = parse_import(text.as_bytes()).expect("import");
        assert!(import.problems.is_empty(), "{:?}", import.problems);
        let back: Vec<(&str, Option<&str>)> = import
            .rows
            .iter()
            .map(|r| (r.email.as_str(), r.name.as_deref()))
            .collect();
        assert_eq!(
            back,
            [
                ("'+a@example.com", Some("'=SUM(1)")),
                ("''-b@example.com", Some("'")),
                ("c@example.com", Some("''@x")),
                ("d@example.com", Some("'plain")),
            ]
        );
        // A cell a spreadsheet would run still starts with a quote, which makes it text.
        assert!(
            text.contains("\n\"''=SUM(1)\",\"''+a@example.com\","),
            "{text}"
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
        let rejected: Vec<Rejected> = import.problems.into_iter().map(Rejected::from).collect();
        let lines: Vec<u64> = rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, [4, 6, 7, 9], "{rejected:?}");
        assert!(rejected[0].error.starts_with("email:"));
        assert!(rejected[1].error.contains("already on line 2"));
        assert!(rejected[3].error.contains("more cells"));
    }

    #[test]
    fn lines_ended_by_a_lone_carriage_return_are_counted() {
        // Spreadsheets on older Macs end lines with CR alone.
        let text = "email,name\rann@example.com,Ann\rnot-an-email,X\rbob@example.com,Bob\r";
        for import in [
            parse_import(text.as_bytes()).expect("file"),
            read_import(text.as_bytes(), Reading::Typed).expect("typed"),
        ] {
            let lines: Vec<u64> = import.rows.iter().map(|r| r.line).collect();
            assert_eq!(lines, [2, 4], "{import:?}");
            let problems: Vec<u64> = import.problems.iter().map(|p| p.line).collect();
            assert_eq!(problems, [3], "{import:?}");
        }
    }

    #[test]
    fn a_file_at_the_size_limit_is_numbered_in_one_pass() {
        // Line numbers once came from counting the line ends before each row again: quadratic,
        // minutes for a file of short rows at the size limit.
        let mut text = String::from("email\n");
        let mut rows = 0;
        while text.len() + 24 < crate::api::CSV_LIMIT {
            text.push_str(&format!("u{rows}@example.com\n"));
            rows += 1;
        }
        let import = parse_import(text.as_bytes()).expect("import");
        assert_eq!(import.rows.len(), rows);
        assert_eq!(import.rows.last().map(|r| r.line), Some(rows as u64 + 1));
    }

    #[test]
    fn until_cells() {
        let text = "email,until\na@x.org,2020-01-01\nb@x.org,\nc@x.org,31.01.2027\n";
        let import = parse_import(text.as_bytes()).expect("import");
        assert_eq!(import.rows[0].access_until, Some(Some(1_577_923_200)));
        assert_eq!(import.rows[1].access_until, Some(None));
        assert_eq!(import.problems.len(), 1);
        assert!(
            import.problems[0].fault.to_string().starts_with("until:"),
            "{:?}",
            import.problems
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

    /// `text` read as typed lines.
    fn typed(text: &str) -> Import {
        read_import(text.as_bytes(), Reading::Typed).expect("typed lines")
    }

    #[test]
    fn typed_lines_read_an_export_back() {
        let end = day_end("2027-01-31").expect("date");
        let clients = [
            client("ann@example.com", "Ann, \"the\" Lee", Some(end)),
            client("bob@example.com", "=HYPERLINK(\"x\")", None),
        ];
        let text = export(&clients, 1_700_000_000).expect("export");
        let file = parse_import(&text).expect("file");
        assert_eq!(typed(&String::from_utf8(text).expect("utf-8")), file);
    }

    #[test]
    fn typed_lines_without_a_header_are_email_name_until() {
        let import = typed("\u{feff}Ann@Example.com\r\n\r\ncy@example.com,Cy,2027-01-31\r\n");
        assert!(import.problems.is_empty(), "{:?}", import.problems);
        assert_eq!(import.rows.len(), 2, "{:?}", import.rows);
        assert_eq!(import.rows[0].email, "ann@example.com");
        assert_eq!(
            import.rows[1].access_until,
            Some(day_end("2027-01-31").ok())
        );
        let one_cell = typed("ann@example.com\nbob@example.com;Bob\n");
        assert_eq!(one_cell.rows.len(), 1);
        assert_eq!(one_cell.problems.len(), 1);
        assert_eq!(one_cell.problems[0].line, 2);
        assert!(matches!(one_cell.problems[0].fault, Fault::Email(_)));
        let rows = typed("ann@example.com\nbob@example.com,Bob\ncy@example.com,Cy,\n").rows;
        assert_eq!(rows[0].name, None);
        assert_eq!(rows[0].access_until, None, "no until column: keep");
        assert_eq!(rows[1].name.as_deref(), Some("Bob"));
        assert_eq!(
            rows[2].access_until,
            Some(None),
            "an empty until is unlimited"
        );
        let rows = typed("email;name\nann@example.com;Ann\n").rows;
        assert_eq!(rows[0].name.as_deref(), Some("Ann"));
        let rows = typed("email,until\nann@example.com,Unlimited\n").rows;
        assert_eq!(
            rows[0].access_until,
            Some(None),
            "typed lines may say unlimited"
        );
        let file = parse_import(b"email,until\nann@example.com,unlimited\n").expect("file");
        assert!(
            matches!(file.problems[0].fault, Fault::Until(_)),
            "a file may not"
        );
    }

    #[test]
    fn a_short_row_keeps_in_typed_lines_and_empties_in_a_file() {
        let text = "email,name,until\nann@example.com\n";
        let typed_row = &typed(text).rows[0];
        assert_eq!((&typed_row.name, typed_row.access_until), (&None, None));
        let file_row = &parse_import(text.as_bytes()).expect("file").rows[0];
        assert_eq!(
            (file_row.name.as_deref(), file_row.access_until),
            (Some(""), Some(None))
        );
    }

    #[test]
    fn every_bad_typed_line_is_reported_and_the_good_ones_kept() {
        let import = typed(
            "email,name,until\nann@example.com,Ann,\nnot-an-email,X,\nbob@example.com,Bob,31.01.2027\n\
             ANN@example.com,Again,\ncy@example.com,Cy,,extra\ndee@example.com,Dee,2999-12-31\n",
        );
        let kept: Vec<(u64, &str)> = import
            .rows
            .iter()
            .map(|r| (r.line, r.email.as_str()))
            .collect();
        assert_eq!(kept, [(2, "ann@example.com"), (7, "dee@example.com")]);
        let problems: Vec<(u64, &Fault)> =
            import.problems.iter().map(|p| (p.line, &p.fault)).collect();
        assert!(
            matches!(
                problems[..],
                [
                    (3, Fault::Email(_)),
                    (4, Fault::Until(_)),
                    (5, Fault::Repeated { first: 2, .. }),
                    (6, Fault::ExtraCells(3)),
                ]
            ),
            "{problems:?}"
        );
        let err =
            read_import(b"email,plan\nann@example.com,gold\n", Reading::Typed).expect_err("column");
        assert_eq!(
            err,
            Unusable {
                line: 1,
                fault: HeaderFault::Unknown("plan".into())
            }
        );
        let err = read_import(b"\n\nemail,Email\n", Reading::Typed).expect_err("twice");
        assert_eq!(
            err,
            Unusable {
                line: 3,
                fault: HeaderFault::Twice("email".into())
            }
        );
    }

    #[test]
    fn a_quote_left_open_rejects_its_row_in_typed_lines() {
        let only = typed("ann@example.com,\"Ann\n");
        assert!(only.rows.is_empty(), "{:?}", only.rows);
        assert_eq!(
            only.problems,
            [Problem {
                line: 1,
                fault: Fault::OpenQuote
            }]
        );
        let after_good = typed("bob@example.com,\"Bob, Jr\"\r\n\r\ncy@example.com,\"Cy\"\"\n");
        assert_eq!(after_good.rows.len(), 1);
        assert_eq!(after_good.rows[0].name.as_deref(), Some("Bob, Jr"));
        assert_eq!(
            after_good.problems,
            [Problem {
                line: 3,
                fault: Fault::OpenQuote
            }]
        );
        for closed in [
            "a@x.org,\"A\"\"B\"\n",
            "a@x.org,\"A\"x\"\n",
            "a@x.org,A\"\n",
        ] {
            assert_eq!(open_quote_row(closed.as_bytes(), b','), None, "{closed:?}");
        }
        let header = typed("\"email,name\nann@example.com,Ann\n");
        assert!(header.rows.is_empty());
        assert_eq!(header.problems[0].fault, Fault::OpenQuote);
        // A file is read as the CSV reader reads it: the rest of the text is the cell.
        let file = parse_import(b"email,name\nann@example.com,\"Ann\n").expect("file");
        assert_eq!(file.rows[0].name.as_deref(), Some("Ann"));
    }
}
