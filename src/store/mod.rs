//! The client lists, one-time codes, sessions, shops' sign-in links, spent grant signatures and
//! audit log, behind one narrow interface.
//!
//! [`Store`] is what the rest of pagegate sees; [`redb::RedbStore`] is the embedded backend and
//! [`postgres::PgStore`] the shared one (several gateways, one database). Secrets never
//! reach the store in clear: codes, sign-in tokens and session ids arrive as keyed hashes.
//!
//! Writes that answer "done" are committed durably before they return. The per-request session
//! check ([`Store::session_access`]) only reads. [`Store::changes`] tells requests that outlive
//! their check (tunnels, long downloads) that the data behind it may have changed.
//!
//! A backup ([`Store::backup_to`]) is a copy of one consistent snapshot, so it can be taken while
//! the gateway serves. It holds the same hashes as the database, never a code or session in
//! clear, but it does list every client's email: keep it as private as the database.

pub mod postgres;
pub mod redb;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch.
pub type Timestamp = i64;

/// A keyed hash of a secret (code, token, session id).
pub type SecretHash = [u8; 32];

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process has the database open (a running gateway): talk to it instead.
    #[error("the database {0} is in use by another pagegate process")]
    Locked(String),
    /// The file was written by a newer or unknown pagegate.
    #[error(
        "the database {path} has schema version {found}, this pagegate understands {expected}: {hint}"
    )]
    Schema {
        /// The file.
        path: String,
        /// Version in the file.
        found: u64,
        /// Version this build writes.
        expected: u64,
        /// What to do.
        hint: &'static str,
    },
    /// A record could not be decoded: damage or a bug.
    #[error("corrupt record in table {table}: {detail}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// Decoder message.
        detail: String,
    },
    /// The storage engine failed (I/O, disk full, …).
    #[error("database error: {0}")]
    Backend(String),
    /// The database server cannot be reached (down, restarting, network): nothing was changed,
    /// and the same call may succeed in a moment. Visitors and API callers get a 503.
    #[error("database unreachable: {0}")]
    Unavailable(String),
}

/// A rate limit: `burst` requests at once, then one per `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Time between two requests once the burst is spent.
    pub interval: Duration,
    /// Requests allowed at once.
    pub burst: u32,
}

/// Who added a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// An admin, by the admin page or API.
    Admin,
    /// The command line.
    Cli,
    /// A shop, through the grant endpoint.
    Grant,
    /// A CSV import.
    Import,
    /// The built-in demo.
    Demo,
}

impl Source {
    /// The source's name, as JSON and CSV exports and the admin page write it.
    pub fn name(self) -> &'static str {
        match self {
            Source::Admin => "admin",
            Source::Cli => "cli",
            Source::Grant => "grant",
            Source::Import => "import",
            Source::Demo => "demo",
        }
    }
}

/// One person on a page's client list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// Normalised email address (the key).
    pub email: String,
    /// Display name; may be empty.
    pub name: String,
    /// When the client was first added.
    pub created_at: Timestamp,
    /// When the record last changed.
    pub updated_at: Timestamp,
    /// End of access (exclusive); `None` is unlimited.
    pub access_until: Option<Timestamp>,
    /// Who added the client.
    pub source: Source,
    /// Last successful sign-in.
    #[serde(default)]
    pub last_login: Option<Timestamp>,
}

impl Client {
    /// Whether the client may use the page at `now`.
    pub fn has_access(&self, now: Timestamp) -> bool {
        self.access_until.is_none_or(|until| now < until)
    }
}

/// A pending one-time code for one email on one site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRecord {
    /// Keyed hash of the code.
    pub code_hash: SecretHash,
    /// Keyed hash of the sign-in link's token, so a new code retires the old link.
    pub token_hash: SecretHash,
    /// The page the code was asked for.
    pub page: String,
    /// Where to send the visitor after sign-in.
    pub next: String,
    /// When the code was issued.
    pub issued_at: Timestamp,
    /// When it stops working.
    pub expires_at: Timestamp,
    /// The browser that asked for the code (a keyed hash of its anti-forgery token): the only
    /// one where the code works and where wrong tries count. `None` for a code stored by an
    /// earlier version, which works in any browser.
    #[serde(default)]
    pub browser: Option<SecretHash>,
}

/// What a sign-in link's token leads to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Site name.
    pub site: String,
    /// Normalised email.
    pub email: String,
    /// The page asked for.
    pub page: String,
    /// Where to go after sign-in.
    pub next: String,
    /// When it stops working.
    pub expires_at: Timestamp,
    /// The browser that asked for the code and link, as in [`CodeRecord::browser`]: opened in
    /// another one, the link asks for a confirmation that names the account.
    #[serde(default)]
    pub browser: Option<SecretHash>,
}

/// A shop's sign-in link, stored under the keyed hash of its token: what opening it leads to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigninRecord {
    /// Site name of the page.
    pub site: String,
    /// The page the grant was for.
    pub page: String,
    /// Normalised email of the buyer.
    pub email: String,
    /// Where the buyer lands after signing in: the page's first path.
    pub next: String,
    /// When it stops working.
    pub expires_at: Timestamp,
    /// The shop's order id, if the grant had one (for the audit log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
}

/// The random part a sign-in link's token is derived from. It is kept with the grant's order
/// record, so a retried order can hand out the same link again while it is live; the token
/// itself is never stored, and cannot be made from the nonce without the secret.
pub type SigninNonce = [u8; 16];

/// The sign-in link a grant asks for (`"signin": true`).
#[derive(Clone, Copy)]
pub struct SigninRequest<'a> {
    /// The link to store if a new one is issued.
    pub record: &'a SigninRecord,
    /// A fresh random nonce, used if a new link is issued.
    pub nonce: SigninNonce,
    /// The hashes a nonce's link is stored under, one per accepted key, current first: how the
    /// store finds an order's earlier link and stores a new one, without knowing any key.
    pub hashes: &'a (dyn Fn(&SigninNonce) -> Vec<SecretHash> + Sync),
    /// The audit entry written when a new link is issued.
    pub audit: &'a AuditEvent,
}

impl std::fmt::Debug for SigninRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigninRequest")
            .field("record", self.record)
            .finish_non_exhaustive()
    }
}

/// The sign-in link a grant hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuedSignin {
    /// The nonce its token is derived from.
    pub nonce: SigninNonce,
    /// The hash it is stored under, which tells under which key its token is derived.
    pub hash: SecretHash,
    /// When it stops working.
    pub expires_at: Timestamp,
    /// Whether this grant issued it; `false` for an earlier grant's link of the same order,
    /// still live, handed out again.
    pub fresh: bool,
}

/// What a grant does about its sign-in link, given the nonce of the link an earlier grant of
/// the same order issued and whether that link is still live (stored and not expired). The
/// rule: a link is handed out only when asked for; a live link of the order is handed out
/// again, so a shop retrying a timed-out call redirects the buyer to the same link; a spent or
/// expired one is replaced by a new link.
pub fn signin_plan(asked: bool, earlier: Option<(SigninNonce, bool)>) -> SigninPlan {
    match (asked, earlier) {
        (false, _) => SigninPlan::None,
        (true, Some((nonce, true))) => SigninPlan::Reuse(nonce),
        (true, Some((nonce, false))) => SigninPlan::Replace(nonce),
        (true, None) => SigninPlan::Issue,
    }
}

/// See [`signin_plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigninPlan {
    /// No link asked for.
    None,
    /// Hand out the order's live link again.
    Reuse(SigninNonce),
    /// Issue a new link in place of the order's spent or expired one (whose records go).
    Replace(SigninNonce),
    /// Issue a new link.
    Issue,
}

/// For a grant that asked for a link, what [`signin_plan`] makes of the order's earlier link:
/// `Err` with that link when it is live and handed out again, else `Ok` with the nonce of a
/// spent or expired one whose records go before a new link is issued.
pub fn earlier_signin(
    earlier: Option<SigninNonce>,
    live: Option<IssuedSignin>,
) -> Result<Option<SigninNonce>, IssuedSignin> {
    match signin_plan(true, earlier.map(|n| (n, live.is_some()))) {
        SigninPlan::Reuse(_) => match live {
            Some(link) => Err(link),
            None => Ok(None),
        },
        SigninPlan::Replace(nonce) => Ok(Some(nonce)),
        SigninPlan::Issue | SigninPlan::None => Ok(None),
    }
}

/// A signed-in visitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Site name the session belongs to.
    pub site: String,
    /// Normalised email.
    pub email: String,
    /// When the visitor signed in.
    pub created_at: Timestamp,
    /// Hard end of the session.
    pub expires_at: Timestamp,
}

/// The outcome of checking a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeCheck {
    /// Right code: it is spent; sign the visitor in.
    Accepted(CodeRecord),
    /// Wrong code, or no code pending for the email in this browser; the failure was counted
    /// (see [`Store::check_code`]).
    Rejected {
        /// Tries left before this browser is locked out of the email.
        attempts_left: u32,
    },
    /// Too many wrong tries: no code works until the window passes.
    Locked,
}

/// Limits for counting wrong codes. Tries count per (email, browser that asked for the code),
/// so a stranger who asks for a code for someone else's email and guesses wrong locks only their
/// own browser out; an overall count per email stops guessing spread over many browsers.
#[derive(Debug, Clone, Copy)]
pub struct AttemptPolicy {
    /// Wrong codes allowed per email in one browser.
    pub max_attempts: u32,
    /// Wrong codes allowed per email over all browsers.
    pub max_attempts_per_email: u32,
    /// How long failures are remembered, in seconds.
    pub window: i64,
}

/// A session and the client records for the pages a request falls under.
#[derive(Debug, Clone)]
pub struct SessionAccess {
    /// The session.
    pub session: SessionRecord,
    /// For each page asked about, in order, the client record of the session's email.
    pub clients: Vec<Option<Client>>,
}

/// What happened, for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A code was issued and sent.
    CodeSent,
    /// A visitor signed in.
    Login,
    /// A wrong code was entered.
    LoginFailed,
    /// An email was locked after too many wrong codes.
    Locked,
    /// A visitor signed out.
    Logout,
    /// A client was added.
    ClientAdded,
    /// A client was changed.
    ClientUpdated,
    /// A client was removed.
    ClientRemoved,
    /// Access was granted by a shop.
    Grant,
    /// Sessions were revoked by an admin.
    SessionsRevoked,
    /// A grant issued a shop's sign-in link.
    SigninLinkIssued,
    /// A buyer signed in with a shop's sign-in link.
    SigninLinkUsed,
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When.
    pub at: Timestamp,
    /// What.
    pub kind: AuditKind,
    /// Site name, where relevant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Page id, where relevant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// The client's email, where relevant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Who did it: "visitor", "cli", an admin's email, an API key's name.
    pub actor: String,
    /// Free text (client address, reason); never a secret.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// What a grant did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantResult {
    /// The client was added (`created`) or their access extended.
    Applied {
        /// The record now stored.
        client: Client,
        /// Whether the client is new on the page.
        created: bool,
        /// The sign-in link, when the grant asked for one.
        signin: Option<IssuedSignin>,
    },
    /// The order was granted before: nothing changed (but a new sign-in link, see
    /// [`signin_plan`]); this is the first answer again.
    Replayed {
        /// The record as the first grant left it.
        client: Client,
        /// Whether the first grant created the client.
        created: bool,
        /// The sign-in link, when this grant asked for one.
        signin: Option<IssuedSignin>,
    },
    /// The order id was used before for another page or email.
    Conflict,
    /// The grant's signature was spent before: nothing changed.
    SignatureSpent,
}

/// A webhook signature that a grant spends, so that the same signed request is refused from
/// then on, after a restart too and by every gateway sharing the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpentSignature {
    /// A hash of the key's secret digest and the MAC: the same signature always gives the same
    /// hash, and the hash gives away neither.
    pub hash: SecretHash,
    /// When the signature's timestamp is stale: from then on it is refused anyway, and the
    /// record may go.
    pub until: Timestamp,
}

/// A grant to apply.
#[derive(Debug, Clone)]
pub struct Grant<'a> {
    /// Page id.
    pub page: &'a str,
    /// Normalised email.
    pub email: &'a str,
    /// Name to set (kept when `None` or empty on an existing client).
    pub name: Option<&'a str>,
    /// End of access granted; `None` is unlimited.
    pub access_until: Option<Timestamp>,
    /// `(key name, order id)` for idempotency.
    pub order: Option<(&'a str, &'a str)>,
    /// The signature the request was signed with, to spend in the grant's own transaction: a
    /// signature spent before refuses the grant ([`GrantResult::SignatureSpent`]). An order
    /// replayed spends it too; a conflict does not, since it changes nothing.
    pub signature: Option<SpentSignature>,
    /// Who added the client, if new.
    pub source: Source,
    /// The sign-in link asked for, if any.
    pub signin: Option<SigninRequest<'a>>,
    /// Now.
    pub now: Timestamp,
}

/// The client record after a grant: a new client, or an existing one whose access is extended.
/// A later end wins and unlimited stays unlimited; a grant never shortens access.
pub fn merge_grant(existing: Option<Client>, grant: &Grant<'_>) -> Client {
    let name = grant.name.map(str::trim).filter(|n| !n.is_empty());
    match existing {
        None => Client {
            email: grant.email.to_owned(),
            name: name.unwrap_or("").to_owned(),
            created_at: grant.now,
            updated_at: grant.now,
            access_until: grant.access_until,
            source: grant.source,
            last_login: None,
        },
        Some(old) => {
            // An ended access period is renewed from now, not from its old end.
            let access_until = match (old.access_until, grant.access_until) {
                (None, _) | (_, None) => None,
                (Some(a), Some(b)) => Some(a.max(b)),
            };
            Client {
                name: name.map_or(old.name.clone(), str::to_owned),
                updated_at: grant.now,
                access_until,
                ..old
            }
        }
    }
}

/// A client to set by [`Store::set_clients`]: an admin's or an import's record, which replaces
/// the name (when given) and the access period, unlike a grant, which only extends.
#[derive(Debug, Clone)]
pub struct ClientSet<'a> {
    /// Normalised email.
    pub email: &'a str,
    /// Name to set; `None` keeps an existing client's name (a new client gets "").
    pub name: Option<&'a str>,
    /// End of access to set (`Some(None)` is unlimited); `None` keeps an existing client's
    /// period (a new client gets unlimited).
    pub access_until: Option<Option<Timestamp>>,
    /// Who added the client, if new.
    pub source: Source,
    /// Now.
    pub now: Timestamp,
}

/// The client record after a set: a new client, or an existing one with the given fields
/// replaced. `created_at`, `source` and `last_login` of an existing client are kept.
pub fn merge_set(existing: Option<Client>, set: &ClientSet<'_>) -> Client {
    let name = set.name.map(|n| n.trim().to_owned());
    match existing {
        None => Client {
            email: set.email.to_owned(),
            name: name.unwrap_or_default(),
            created_at: set.now,
            updated_at: set.now,
            access_until: set.access_until.flatten(),
            source: set.source,
            last_login: None,
        },
        Some(old) => Client {
            name: name.unwrap_or(old.name.clone()),
            access_until: set.access_until.unwrap_or(old.access_until),
            updated_at: set.now,
            ..old
        },
    }
}

// ---- large lists: paging, searching, counting and streaming a page's clients ----

/// A page's client counts, read without reading the list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCounts {
    /// Clients on the page.
    pub total: u64,
    /// Of those, clients whose access is current.
    pub active: u64,
}

/// How many clients match a search, counted up to a cap: counting every match of a term that
/// matches most of a million clients would cost a scan per answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchCount {
    /// Matches counted, at most the cap.
    pub count: u64,
    /// `false` when counting stopped at the cap: there may be more.
    pub exact: bool,
}

/// Clients one chunk of [`Store::client_chunks`] holds: enough to make each read worth its
/// round trip, few enough that an export's memory does not grow with the list.
pub const CLIENT_CHUNK: usize = 1000;

/// Search text as the stores compare it: trimmed and lower-cased; `None` for nothing to search.
pub fn search_needle(q: &str) -> Option<String> {
    let needle = q.trim().to_lowercase();
    (!needle.is_empty()).then_some(needle)
}

/// What a client's search matches, lower-cased: the email, a line break, the name. The line break cannot be typed into a search ([`search_needle`] trims it, and a
/// needle holding one matches nothing), so a search never matches across the two.
pub fn search_text(client: &Client) -> String {
    let mut text = String::with_capacity(client.email.len() + client.name.len() + 1);
    text.push_str(&client.email.to_lowercase());
    text.push('\n');
    text.push_str(&client.name.to_lowercase());
    text
}

/// What [`Store::edit_client`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEdit {
    /// The record now stored (under its new email if the edit changed it).
    Edited(Client),
    /// The page has no client with that email.
    Missing,
    /// The edit changes the email to one the page already lists: nothing changed.
    EmailTaken,
    /// The update left the record as it was (the record as stored); nothing was written.
    Unchanged(Client),
}

/// What pruning removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Expired codes and tokens.
    pub codes: usize,
    /// Expired sessions.
    pub sessions: usize,
    /// Stale failure counters.
    pub attempts: usize,
    /// Audit entries older than the audit retention.
    pub audit: usize,
    /// Grant order records older than the grant retention.
    pub grants: usize,
    /// Spent signatures whose timestamp is stale.
    pub signatures: usize,
    /// Expired sign-in links of shops.
    pub signin_links: usize,
}

impl Pruned {
    /// Whether a retention limit stopped the pass with more old records left: the caller should
    /// run the next pass soon rather than at its usual, slower pace.
    pub fn hit_limit(&self) -> bool {
        self.audit >= PRUNE_BATCH || self.grants >= PRUNE_BATCH
    }
}

/// Most audit entries, and most grant order records, one pruning pass removes. A first pass
/// after a retention was shortened may find millions; removing them in slices keeps each write
/// transaction short, so sign-ins and grants never wait long behind it.
pub const PRUNE_BATCH: usize = 10_000;

/// How long records that only matter for a while are kept. `None` keeps them forever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Audit entries older than this many seconds are removed.
    pub audit: Option<i64>,
    /// Grant order records (the idempotency of `order_id`) older than this many seconds are
    /// removed; a repeat of such an order is then applied as a new grant.
    pub grants: Option<i64>,
}

/// What a database holds, by kind: what a backup wrote or a restore put in place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreCounts {
    /// Client records, over all pages.
    pub clients: u64,
    /// Sessions (expired ones not yet pruned included).
    pub sessions: u64,
    /// Audit entries.
    pub audit: u64,
    /// Grant order records kept for idempotency.
    pub grants: u64,
}

impl std::fmt::Display for StoreCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "clients: {}, sessions: {}, audit entries: {}, grants: {}",
            self.clients, self.sessions, self.audit, self.grants
        )
    }
}

/// How many records one transaction of a copy between backends writes, and one batch of its
/// export holds: large enough that a store of millions moves in minutes, small enough that
/// neither side holds much in memory nor keeps a transaction open long.
pub const COPY_BATCH: usize = 1_000;

/// A grant order's first answer, kept so that a retried order is answered the same way: what
/// each backend stores under `key name \0 order id`, in the same JSON, and what a copy between
/// backends moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantOrder {
    /// The page the order granted.
    pub page: String,
    /// The buyer's normalised email.
    pub email: String,
    /// The client record as the first grant left it.
    pub client: Client,
    /// Whether the first grant created the client.
    pub created: bool,
    /// The nonce of the order's latest sign-in link, if one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signin: Option<SigninNonce>,
}

/// One durable record, as a copy between backends moves it ([`Store::export_records`],
/// [`Store::import_records`]). Codes, link tokens, shops' sign-in links, wrong-code counters
/// and rate limits are not records: they last minutes, and a visitor simply asks again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A client of a page, every field as stored.
    Client {
        /// The page id.
        page: String,
        /// The record.
        client: Client,
    },
    /// An audit entry; the target gives it its own id, after those it has.
    Audit(AuditEvent),
    /// A grant order's idempotency record.
    GrantOrder {
        /// The API key's name.
        key: String,
        /// The shop's order id.
        order: String,
        /// The first answer.
        record: GrantOrder,
    },
    /// A webhook signature a grant spent, still refused.
    Signature(SpentSignature),
    /// A signed-in visitor or admin, stored under the keyed hash of the session id.
    Session {
        /// The keyed hash of the session id.
        hash: SecretHash,
        /// The session.
        session: SessionRecord,
    },
}

/// How many records of each kind a store holds, or a copy moved: what `pagegate store copy`
/// compares to verify a copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Clients per page id (pages without clients are absent).
    pub clients: BTreeMap<String, u64>,
    /// Audit entries.
    pub audit: u64,
    /// Grant order records.
    pub grants: u64,
    /// Spent signatures.
    pub signatures: u64,
    /// Sessions.
    pub sessions: u64,
}

impl Inventory {
    /// Counts one more record.
    pub fn count(&mut self, record: &Record) {
        match record {
            Record::Client { page, .. } => *self.clients.entry(page.clone()).or_default() += 1,
            Record::Audit(_) => self.audit += 1,
            Record::GrantOrder { .. } => self.grants += 1,
            Record::Signature(_) => self.signatures += 1,
            Record::Session { .. } => self.sessions += 1,
        }
    }

    /// Clients over all pages.
    pub fn client_total(&self) -> u64 {
        self.clients.values().sum()
    }

    /// Whether nothing of any kind is counted.
    pub fn is_empty(&self) -> bool {
        self.client_total() == 0
            && self.audit == 0
            && self.grants == 0
            && self.signatures == 0
            && self.sessions == 0
    }
}

/// The sink [`Store::export_records`] hands each batch to; its error ends the export.
pub type RecordSink<'a> = &'a mut dyn FnMut(Vec<Record>) -> Result<(), StoreError>;

/// Why a backup was not written. The destination is never left half-written: the copy goes to
/// a temporary file next to it, which is removed on failure.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The destination exists and replacing it was not asked for.
    #[error("{} already exists", .0.display())]
    Exists(PathBuf),
    /// The destination could not be written (missing folder, permissions, full disk).
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Reading the database or writing the copy failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The narrow interface every backend provides. Methods are synchronous; callers run writes off
/// the async workers.
pub trait Store: Send + Sync + 'static {
    /// One client of a page.
    fn client(&self, page: &str, email: &str) -> Result<Option<Client>, StoreError>;
    /// All clients of a page, ordered by email.
    fn clients(&self, page: &str) -> Result<Vec<Client>, StoreError>;
    /// Adds or replaces a client and records `audit` in the same transaction.
    fn put_client(&self, page: &str, client: &Client, audit: &AuditEvent)
    -> Result<(), StoreError>;
    /// Removes a client; `false` when there was none. Records `audit` when removed.
    fn remove_client(
        &self,
        page: &str,
        email: &str,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError>;

    /// Stores a new code and its link token for (site, email), replacing any earlier one.
    fn issue_code(
        &self,
        site: &str,
        email: &str,
        code: &CodeRecord,
        token: &TokenRecord,
    ) -> Result<(), StoreError>;
    /// Whether (site, email) is locked at `now` for the browser `browser` (its binding hash
    /// under each accepted key, current first): by too many wrong codes in that browser, or
    /// over all browsers.
    fn is_locked(
        &self,
        site: &str,
        email: &str,
        browser: &[SecretHash],
        now: Timestamp,
        policy: AttemptPolicy,
    ) -> Result<bool, StoreError>;
    /// Checks a code typed in browser `browser` atomically: `matches` compares the stored hash
    /// in constant time. A right code is consumed. A wrong one counts against the email in that
    /// browser, and against the email over all browsers only while a code asked for in that
    /// browser is pending: a stranger typing codes for someone's email locks out only their own
    /// browser, and gets the same answers whether or not the email is listed.
    fn check_code(
        &self,
        site: &str,
        email: &str,
        browser: &[SecretHash],
        now: Timestamp,
        policy: AttemptPolicy,
        matches: &dyn Fn(&CodeRecord) -> bool,
    ) -> Result<CodeCheck, StoreError>;
    /// A link token's record without spending it (for the confirm page, and to see in which
    /// browser it was asked for before spending it).
    fn peek_token(
        &self,
        token_hash: &SecretHash,
        now: Timestamp,
    ) -> Result<Option<TokenRecord>, StoreError>;
    /// Spends a link token (and the code issued with it).
    fn take_token(
        &self,
        token_hash: &SecretHash,
        now: Timestamp,
    ) -> Result<Option<TokenRecord>, StoreError>;

    /// Records a new session, the sign-in on each page, and the audit entry.
    fn create_session(
        &self,
        session_hash: &SecretHash,
        session: &SessionRecord,
        pages: &[String],
        audit: &AuditEvent,
    ) -> Result<(), StoreError>;
    /// The session and the clients of `pages` for its email, in one read.
    fn session_access(
        &self,
        session_hash: &SecretHash,
        pages: &[&str],
    ) -> Result<Option<SessionAccess>, StoreError>;
    /// Ends one session.
    fn delete_session(
        &self,
        session_hash: &SecretHash,
        audit: Option<&AuditEvent>,
    ) -> Result<(), StoreError>;
    /// Ends every session of `email` on `site`, the site of `page`, and records `audit`; returns
    /// how many there were. Only when `page` lists the email (checked in the same transaction):
    /// otherwise nothing ends and `None` comes back. A session opens every page of its site, so
    /// whoever may act on one page may end only the sessions of that page's clients.
    fn revoke_sessions(
        &self,
        site: &str,
        page: &str,
        email: &str,
        audit: &AuditEvent,
    ) -> Result<Option<usize>, StoreError>;
    /// How many sessions are live at `now`, per the `site` their records carry (a site's name
    /// for visitors, an admin namespace for admins), ordered by it. Reads only; for the metrics,
    /// which call it at scrape time off the async workers.
    fn count_active_sessions(&self, now: Timestamp) -> Result<Vec<(String, u64)>, StoreError>;

    /// Whether a read may wait on the network (a database server), so that a connection
    /// worker must hand it to a blocking thread rather than wait; `false` for an embedded
    /// backend, whose reads are a memory or page-cache lookup and stay inline.
    fn reads_wait(&self) -> bool {
        false
    }

    /// Whether this gateway hears other gateways' changes as they happen (a shared store's
    /// listening connection is up); `None` for a store no other gateway writes to. For the
    /// metrics: while `false`, changes still arrive by polling, within the documented bound.
    fn hears_changes(&self) -> Option<bool> {
        None
    }

    /// Whether rate limits live in this store, shared by every gateway that uses it; else each
    /// gateway keeps its own in memory and [`Store::take_rates`] is not called.
    fn shares_rate_limits(&self) -> bool {
        false
    }

    /// Takes one request from each rate limit in `limits` in turn (GCRA: `rate.burst` at once,
    /// then one per `rate.interval`), atomically per limit and for every gateway, stopping at the
    /// first that refuses (the ones before it keep the request, as in-memory limiters do).
    /// `Some(wait)` when one refused.
    fn take_rates(&self, limits: &[(&str, Rate)]) -> Result<Option<Duration>, StoreError> {
        let _ = limits;
        Err(StoreError::Backend(
            "this store keeps no rate limits; they are kept in memory".into(),
        ))
    }

    /// The answer [`Store::session_access`] would give, when the backend keeps it in memory and
    /// it is still current; `None` means "ask `session_access`". Never waits: a backend whose
    /// reads wait ([`Store::reads_wait`]) answers the per-request check from here, so a signed-in
    /// visitor costs no database round trip.
    fn kept_session_access(
        &self,
        _session_hash: &SecretHash,
        _pages: &[&str],
    ) -> Option<Option<SessionAccess>> {
        None
    }

    /// A count that moves forward whenever something that decides access may have changed
    /// (client lists, sessions), and never goes back. Requests that stay open long after their
    /// check (WebSocket tunnels, long downloads) compare it to know when to check again, so a
    /// backend shared by several gateways must move it for every gateway's writes, not only its
    /// own. Moving it more often than needed only costs a check; missing a change would leave
    /// such a request open after access ended. Cheap: called once a second, and read without a
    /// transaction.
    fn changes(&self) -> u64;

    /// Changes one client atomically: `update` gets the stored record and returns the new one,
    /// or `None` to leave it as it is. When the new email differs, the record moves to it,
    /// unless the page already lists that email. Records the audit entry `audit` makes of the
    /// new record when the client was edited. Reading and writing in one transaction is what
    /// keeps a grant landing meanwhile from being overwritten.
    fn edit_client(
        &self,
        page: &str,
        email: &str,
        update: &dyn Fn(&Client) -> Option<Client>,
        audit: &dyn Fn(&Client) -> AuditEvent,
    ) -> Result<ClientEdit, StoreError>;
    /// Sets several clients of a page in one transaction (see [`merge_set`]), appending the audit
    /// entry `audit` makes of each stored record and whether it is new. Returns the same, in
    /// order; a later row for the same email sees the earlier one.
    fn set_clients(
        &self,
        page: &str,
        rows: &[ClientSet<'_>],
        audit: &dyn Fn(&Client, bool) -> AuditEvent,
    ) -> Result<Vec<(Client, bool)>, StoreError>;

    // ---- large lists ----

    /// Up to `limit` clients of a page in email order, after the email `after` (exclusive), and
    /// only those matching `search` (see [`search_needle`]: case-insensitive "contains" on the
    /// email or the name). Keyset paging: each page costs the same wherever it is in the list.
    fn client_page(
        &self,
        page: &str,
        after: Option<&str>,
        limit: usize,
        search: Option<&str>,
    ) -> Result<Vec<Client>, StoreError>;
    /// How many clients a page has, and how many of them have access at `now`, from counts kept
    /// with every write rather than by reading the list.
    fn client_counts(&self, page: &str, now: Timestamp) -> Result<ClientCounts, StoreError>;
    /// How many clients of a page match `search`, counting no further than `cap`.
    fn count_matching(&self, page: &str, search: &str, cap: u64) -> Result<MatchCount, StoreError>;
    /// Every client of a page in email order, handed to `each` [`CLIENT_CHUNK`] at a time, so a
    /// caller can write them out as they come. Each chunk is one read; a change made between
    /// two chunks shows or not depending on where it falls, as with any keyset paging. An error
    /// from `each` stops the walk and is returned.
    fn client_chunks(
        &self,
        page: &str,
        each: &mut dyn FnMut(Vec<Client>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut after: Option<String> = None;
        loop {
            let chunk = self.client_page(page, after.as_deref(), CLIENT_CHUNK, None)?;
            let done = chunk.len() < CLIENT_CHUNK;
            after = chunk.last().map(|c| c.email.clone());
            if !chunk.is_empty() {
                each(chunk)?;
            }
            if done {
                return Ok(());
            }
        }
    }

    // ---- end of large lists ----

    /// Applies a grant atomically with its idempotency record, its spent signature, its
    /// sign-in link and its audit entries: an order seen before changes nothing and answers as
    /// the first time (its sign-in link as [`signin_plan`] says); a signature spent before
    /// refuses the grant.
    fn grant(&self, grant: &Grant<'_>, audit: &AuditEvent) -> Result<GrantResult, StoreError>;
    /// A live sign-in link stored under one of `hashes` (its token's hash under each accepted
    /// key), without spending it (for the confirm page).
    fn peek_signin(
        &self,
        hashes: &[SecretHash],
        now: Timestamp,
    ) -> Result<Option<SigninRecord>, StoreError>;
    /// Spends the sign-in link stored under one of `hashes` if it is live and belongs to
    /// `site`, recording the audit entry `audit` makes of it in the same transaction. A link
    /// of another site is left alone; an expired one is removed and refused.
    fn take_signin(
        &self,
        hashes: &[SecretHash],
        site: &str,
        now: Timestamp,
        audit: &dyn Fn(&SigninRecord) -> AuditEvent,
    ) -> Result<Option<SigninRecord>, StoreError>;

    /// Appends an audit entry on its own.
    fn audit(&self, event: &AuditEvent) -> Result<(), StoreError>;
    /// Audit entries after `after` (exclusive), oldest first, at most `limit`.
    fn audit_log(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, AuditEvent)>, StoreError>;

    /// Removes expired codes, tokens, sign-in links, sessions, spent signatures and stale
    /// counters, and audit
    /// entries and grant order records past their `retention` (at most [`PRUNE_BATCH`] of each
    /// per call).
    fn prune(
        &self,
        now: Timestamp,
        policy: AttemptPolicy,
        retention: Retention,
    ) -> Result<Pruned, StoreError>;

    /// Writes a copy of one consistent snapshot of everything to `dest`, durably, while other
    /// calls go on. `dest` is replaced only when `overwrite` is set; either way it appears
    /// complete or not at all. Returns what the copy holds.
    fn backup_to(&self, dest: &Path, overwrite: bool) -> Result<StoreCounts, BackupError>;

    /// Hands every durable record to `sink`, in batches of at most [`COPY_BATCH`], all from one
    /// consistent snapshot, kind by kind: clients by page and email, grant orders, signatures
    /// still refused at `now`, sessions live at `now`, then audit entries oldest first. Only a
    /// batch at a time is in memory, so a store of any size can be moved.
    fn export_records(&self, now: Timestamp, sink: RecordSink<'_>) -> Result<(), StoreError>;
    /// Writes a batch of records in one transaction. Audit entries are appended after the
    /// store's own, in the batch's order. A record whose key is taken fails the whole batch:
    /// a copy goes into an empty store.
    fn import_records(&self, batch: &[Record]) -> Result<(), StoreError>;
    /// How many records of each kind [`Store::export_records`] reads, counted as stored
    /// (expired sessions and stale signatures not yet pruned included).
    fn inventory(&self) -> Result<Inventory, StoreError>;
    /// Deletes every record of every kind, short-lived ones included, in one transaction: a
    /// forced copy replaces whatever its target held.
    fn clear(&self) -> Result<(), StoreError>;
}

/// The store namespace ("site") of a site's admin codes and sessions, which share the visitors'
/// tables. Site names cannot hold `\0`, so this never equals a site's own name.
pub fn admin_namespace(site_name: &str) -> String {
    format!("admin\u{0}{site_name}")
}

/// The site of an admin namespace made by [`admin_namespace`]; `None` for anything else (a
/// site's own name).
pub fn site_of_admin_namespace(namespace: &str) -> Option<&str> {
    namespace.strip_prefix("admin\u{0}")
}

/// Seconds since the epoch, now.
pub fn now() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as Timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sign_in_link_is_handed_out_again_only_while_it_is_live() {
        let earlier = [7; 16];
        assert_eq!(signin_plan(false, None), SigninPlan::None);
        assert_eq!(signin_plan(false, Some((earlier, true))), SigninPlan::None);
        assert_eq!(signin_plan(true, None), SigninPlan::Issue);
        assert_eq!(
            signin_plan(true, Some((earlier, true))),
            SigninPlan::Reuse(earlier)
        );
        assert_eq!(
            signin_plan(true, Some((earlier, false))),
            SigninPlan::Replace(earlier)
        );
    }

    #[test]
    fn new_audit_kinds_have_snake_case_names() {
        for (kind, name) in [
            (AuditKind::SigninLinkIssued, "signin_link_issued"),
            (AuditKind::SigninLinkUsed, "signin_link_used"),
            (AuditKind::SessionsRevoked, "sessions_revoked"),
        ] {
            assert_eq!(serde_json::to_value(kind).expect("json"), name);
        }
    }

    #[test]
    fn source_names_are_their_json_names() {
        for source in [
            Source::Admin,
            Source::Cli,
            Source::Grant,
            Source::Import,
            Source::Demo,
        ] {
            assert_eq!(serde_json::to_value(source).expect("json"), source.name());
        }
    }
}
