//! The admin page for people, under `{prefix}/admin/`: every site's pages and, for each page,
//! its clients, with search, paging, add, edit, extend, remove and CSV import and export.
//!
//! | method | path                                   | what                                     |
//! |--------|----------------------------------------|------------------------------------------|
//! | GET    | `/admin/`                              | sites and their pages, with client counts |
//! | GET    | `/admin/pages/{page}?q=&after=&at=`    | the client table, search and paging       |
//! | GET    | `/admin/pages/{page}/clients.csv`      | the client list as CSV                    |
//! | POST   | `/admin/pages/{page}/add`              | add a client                              |
//! | POST   | `/admin/pages/{page}/edit`             | change a client's name and access period  |
//! | POST   | `/admin/pages/{page}/extend`           | extend a client's access by 30 days       |
//! | POST   | `/admin/pages/{page}/remove`           | remove a client (confirmed in the page)   |
//! | POST   | `/admin/pages/{page}/import`           | add or update clients from CSV (multipart: a file or pasted text) |
//!
//! Sign-in (`/admin/login`, `/admin/verify`, `/admin/logout`) is [`crate::auth::admin`]. Every
//! other path needs a signed-in admin whose email is still in `[admin] emails`; every POST needs
//! the admin CSRF token and must come from this origin. Pages are plain HTML forms, so they work
//! without JavaScript (the page's Content-Security-Policy allows none). A change answers
//! `303` to the client table with a one-time message (post/redirect/get); a form with a problem is
//! shown again with what was typed and the problem. Every change is written with its audit entry,
//! whose actor is the admin's email.

use std::collections::HashMap;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::Api;
use super::ApiError;
use super::clients::{self, ClientInput, MAX_DAYS, check_name, last_day, rfc3339};
use super::csv::{self, Fault, HeaderFault, Problem, Reading, Unusable};
use crate::auth::admin::AdminRequest;
use crate::auth::{Auth, FORM_CUT_OFF, Visitor, input, read_urlencoded};
use crate::body::Body;
use crate::config::{Config, HostPattern, PageConfig, SiteConfig};
use crate::error::HttpError;
use crate::routing::SiteId;
use crate::runtime::blocking;
use crate::store::{
    AuditEvent, AuditKind, Client, ClientCounts, ClientEdit, MatchCount, Source, Store, StoreError,
    Timestamp, now,
};
use crate::ui::{
    AddForm, AdminPage, ClientRow, ClientsView, Notice, PageSummary, SiteSummary,
    method_not_allowed, redirect,
};

/// Clients per screen.
const PAGE_SIZE: usize = 50;
/// Days "extend" adds.
const EXTEND_DAYS: u32 = 30;
/// Largest form accepted (the import's file included).
const MAX_BODY: usize = 2 * 1024 * 1024;
/// Most parts a multipart form may have: the import form has three (the token, the pasted text
/// and the file); the rest of [`MAX_BODY`] is no reason to keep a stranger's thousands.
const MAX_PARTS: usize = 16;
/// Longest multipart boundary accepted (RFC 2046 allows 70 characters).
const MAX_BOUNDARY: usize = 200;
/// Most clients one import may hold.
const MAX_IMPORT_ROWS: usize = 10_000;
/// Most problems listed for one import.
const MAX_IMPORT_PROBLEMS: usize = 20;

/// Answers `{prefix}/admin{sub_path}`.
pub async fn handle(
    api: &Arc<Api>,
    site_id: SiteId,
    sub_path: &str,
    req: Request<Incoming>,
    visitor: Visitor,
) -> Result<Response<Body>, HttpError> {
    let config = api.config().clone();
    // No admins configured: there is no admin page.
    if config.admin_emails.is_empty() {
        return Err(HttpError::NotFound);
    }
    let auth = api.auth().clone();
    let ar = auth
        .admin_request(site_id, &req, visitor, &config.admin_emails)
        .await?;
    let response = route(&auth, &config, &ar, sub_path, req).await?;
    Ok(ar.finish(response))
}

async fn route(
    auth: &Arc<Auth>,
    config: &Arc<Config>,
    ar: &AdminRequest,
    sub_path: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let prefix = auth.prefix();
    match sub_path {
        "" => return Ok(redirect(StatusCode::FOUND, &format!("{prefix}/admin/"))),
        "/login" | "/verify" | "/logout" => {
            return auth
                .admin_sign_in(ar, sub_path, req, &config.admin_emails)
                .await;
        }
        _ => {}
    }
    let Some(admin) = ar.admin.as_deref() else {
        return Ok(sign_in_first(prefix, &req));
    };
    let ctx = Admin {
        auth,
        config,
        ar,
        admin,
    };
    let method = req.method().clone();
    let get = method == Method::GET || method == Method::HEAD;
    if sub_path == "/" {
        return if get {
            ctx.overview(&req).await
        } else {
            Ok(method_not_allowed("GET, HEAD"))
        };
    }
    let rest = sub_path
        .strip_prefix("/pages/")
        .ok_or(HttpError::NotFound)?;
    let (page_id, action) = rest.split_once('/').unwrap_or((rest, ""));
    let (site, page) = find_page(config, page_id).ok_or(HttpError::NotFound)?;
    let target = Target { site, page };
    match action {
        "" if get => ctx.clients_page(&req, target).await,
        "clients.csv" if get => ctx.export(target).await,
        "" | "clients.csv" => Ok(method_not_allowed("GET, HEAD")),
        "add" | "edit" | "extend" | "remove" | "import" if method == Method::POST => {
            ctx.change(action, req, target).await
        }
        "add" | "edit" | "extend" | "remove" | "import" => Ok(method_not_allowed("POST")),
        _ => Err(HttpError::NotFound),
    }
}

/// A page of the config and the site it belongs to.
#[derive(Clone, Copy)]
struct Target<'a> {
    site: &'a SiteConfig,
    page: &'a PageConfig,
}

fn find_page<'a>(config: &'a Config, id: &str) -> Option<(&'a SiteConfig, &'a PageConfig)> {
    config
        .sites
        .iter()
        .find_map(|site| site.page(id).map(|page| (site, page)))
}

/// The signed-in admin and the request's state.
struct Admin<'a> {
    auth: &'a Arc<Auth>,
    config: &'a Arc<Config>,
    ar: &'a AdminRequest,
    admin: &'a str,
}

/// Where to return after a change: the table as it was (search and screen). A screen is found
/// by keyset, after the last email of the screen before (`after`), so every screen of a long
/// list costs the same; `at`, the position of its first row, is carried along for display only.
#[derive(Debug, Clone, Default)]
struct Back {
    q: String,
    after: Option<String>,
    at: usize,
}

impl Back {
    fn from_map(map: &HashMap<String, String>) -> Back {
        let after = map
            .get("after")
            .map(|a| {
                a.trim()
                    .chars()
                    .take(300)
                    .collect::<String>()
                    .to_lowercase()
            })
            .filter(|a| !a.is_empty());
        Back {
            q: map
                .get("q")
                .map(|q| q.trim().chars().take(200).collect())
                .unwrap_or_default(),
            at: match after {
                Some(_) => map
                    .get("at")
                    .and_then(|o| o.trim().parse().ok())
                    .unwrap_or(1)
                    .max(1),
                None => 1,
            },
            after,
        }
    }

    fn url(&self, base: &str) -> String {
        let mut url = base.to_owned();
        let mut query = form_urlencoded::Serializer::new(String::new());
        if !self.q.is_empty() {
            query.append_pair("q", &self.q);
        }
        if let Some(after) = &self.after {
            query.append_pair("after", after);
            query.append_pair("at", &self.at.to_string());
        }
        let query = query.finish();
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query);
        }
        url
    }
}

/// A form with a problem, shown again.
#[derive(Debug, Default)]
struct Redisplay {
    status: Option<StatusCode>,
    notice: Option<Notice>,
    add: Option<AddForm>,
    add_error: Option<Notice>,
    import_errors: Vec<Notice>,
    import_text: String,
    /// Whether the import shown again applied its good lines (the errors are the lines left
    /// out) rather than nothing.
    import_applied: bool,
}

impl Redisplay {
    fn notice(status: StatusCode, notice: Notice) -> Redisplay {
        Redisplay {
            status: Some(status),
            notice: Some(notice),
            ..Redisplay::default()
        }
    }
}

/// What a change did: a message for the table, or a form to show again.
type Outcome = Result<Option<Notice>, Redisplay>;

impl Admin<'_> {
    fn store(&self) -> Arc<dyn Store> {
        self.auth.store().clone()
    }

    fn base(&self, page: &PageConfig) -> String {
        format!("{}/admin/pages/{}", self.auth.prefix(), page.id)
    }

    async fn overview(&self, req: &Request<Incoming>) -> Result<Response<Body>, HttpError> {
        let ids: Vec<String> = self
            .config
            .sites
            .iter()
            .flat_map(|s| s.pages.iter().map(|p| p.id.clone()))
            .collect();
        let now = now();
        let mut counts = self
            .auth
            .read(move |store| {
                ids.iter()
                    .map(|id| store.client_counts(id, now))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(HttpError::store)?
            .into_iter();
        let mut sites = Vec::with_capacity(self.config.sites.len());
        for site in &self.config.sites {
            let mut pages = Vec::with_capacity(site.pages.len());
            for page in &site.pages {
                pages.push(summary(page, counts.next().unwrap_or_default()));
            }
            sites.push(SiteSummary {
                name: site.name.clone(),
                title: site.title.clone(),
                hosts: site.hosts.iter().map(host_text).collect(),
                pages,
            });
        }
        let (notice, clear) = self.take_flash(req);
        let mut response = self.auth.admin_render(
            StatusCode::OK,
            &AdminPage::Overview {
                frame: self.auth.admin_frame(self.ar),
                sites: &sites,
                notice: notice.as_ref(),
            },
            self.ar.lang,
        )?;
        if let Some(clear) = clear {
            response.headers_mut().append(header::SET_COOKIE, clear);
        }
        Ok(response)
    }

    async fn clients_page(
        &self,
        req: &Request<Incoming>,
        target: Target<'_>,
    ) -> Result<Response<Body>, HttpError> {
        let query: HashMap<String, String> =
            form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let back = Back::from_map(&query);
        let (notice, clear) = self.take_flash(req);
        let mut response = self
            .render_clients(
                target,
                &back,
                Redisplay {
                    notice,
                    ..Redisplay::default()
                },
            )
            .await?;
        if let Some(clear) = clear {
            response.headers_mut().append(header::SET_COOKIE, clear);
        }
        Ok(response)
    }

    async fn render_clients(
        &self,
        target: Target<'_>,
        back: &Back,
        shown: Redisplay,
    ) -> Result<Response<Body>, HttpError> {
        let page = target.page.id.clone();
        let now = now();
        let q = back.q.clone();
        let after = back.after.clone();
        let store = self.store();
        // Off the async workers: a search may read the whole page's search table.
        let (counts, clients, matching) = tokio::task::spawn_blocking(move || {
            let counts = store.client_counts(&page, now)?;
            let search = (!q.is_empty()).then_some(q.as_str());
            let clients = store.client_page(&page, after.as_deref(), PAGE_SIZE + 1, search)?;
            let matching = match search {
                None => MatchCount {
                    count: counts.total,
                    exact: true,
                },
                // The first screen holds every match: counted without a second pass.
                Some(_) if after.is_none() && clients.len() <= PAGE_SIZE => MatchCount {
                    count: clients.len() as u64,
                    exact: true,
                },
                Some(q) => store.count_matching(&page, q, clients::SEARCH_COUNT_CAP)?,
            };
            Ok::<_, StoreError>((counts, clients, matching))
        })
        .await
        .map_err(|e| HttpError::Internal(format!("admin page: client list task: {e}")))?
        .map_err(HttpError::store)?;
        let next_after = (clients.len() > PAGE_SIZE)
            .then(|| clients.get(PAGE_SIZE - 1).map(|c| c.email.clone()))
            .flatten();
        let rows: Vec<ClientRow> = clients
            .iter()
            .take(PAGE_SIZE)
            .map(|c| ClientRow {
                email: c.email.clone(),
                name: c.name.clone(),
                until: c.access_until.map(end_text),
                active: c.has_access(now),
                source: c.source.name().to_owned(),
                last_login: c.last_login.map(time_text),
                can_extend: c.access_until.is_some(),
            })
            .collect();
        let from = if rows.is_empty() { 0 } else { back.at };
        let view = ClientsView {
            page: summary(target.page, counts),
            site_title: target.site.title.clone(),
            from,
            to: if rows.is_empty() {
                0
            } else {
                back.at + rows.len() - 1
            },
            first: back.after.is_some(),
            next_after,
            next_at: back.at + rows.len(),
            matching: usize::try_from(matching.count).unwrap_or(usize::MAX),
            matching_exact: matching.exact,
            rows,
            q: back.q.clone(),
            after: back.after.clone().unwrap_or_default(),
            at: back.at,
            add: shown.add.unwrap_or_else(|| AddForm {
                access: "unlimited".into(),
                ..AddForm::default()
            }),
            import_text: shown.import_text,
            import_applied: shown.import_applied,
            today: last_day(now + 1),
            extend_days: EXTEND_DAYS,
        };
        self.auth.admin_render(
            shown.status.unwrap_or(StatusCode::OK),
            &AdminPage::Clients {
                frame: self.auth.admin_frame(self.ar),
                view: &view,
                notice: shown.notice.as_ref(),
                add_error: shown.add_error.as_ref(),
                import_errors: &shown.import_errors,
            },
            self.ar.lang,
        )
    }

    async fn export(&self, target: Target<'_>) -> Result<Response<Body>, HttpError> {
        let body = csv::export_body(self.store(), target.page.id.clone(), now());
        let mut response = Response::new(body);
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!(
            "attachment; filename=\"{}-clients.csv\"",
            target.page.id
        )) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        Ok(response)
    }

    /// A POST that changes the list: checks the token, does the change, answers.
    async fn change(
        &self,
        action: &str,
        req: Request<Incoming>,
        target: Target<'_>,
    ) -> Result<Response<Body>, HttpError> {
        let (headers, form) = read_body(req).await?;
        let back = Back::from_map(&form);
        let token = form.get("csrf").map(String::as_str).unwrap_or("");
        if !self.auth.admin_csrf_ok(self.ar, &headers, token) {
            return self
                .render_clients(
                    target,
                    &back,
                    Redisplay::notice(StatusCode::FORBIDDEN, Notice::error("csrf")),
                )
                .await;
        }
        let field = |name: &str| form.get(name).cloned().unwrap_or_default();
        let outcome = match action {
            "add" => self.add(target, &form).await?,
            "edit" => self.edit(target, &form).await?,
            "extend" => self.extend(target, &field("email")).await?,
            "remove" => self.remove(target, &field("email")).await?,
            _ => self.import(target, &form).await?,
        };
        match outcome {
            Ok(notice) => {
                let mut response =
                    redirect(StatusCode::SEE_OTHER, &back.url(&self.base(target.page)));
                if let Some(cookie) =
                    notice.and_then(|n| self.auth.admin_flash(self.ar, &flash_text(&n)))
                {
                    response.headers_mut().append(header::SET_COOKIE, cookie);
                }
                Ok(response)
            }
            Err(shown) => self.render_clients(target, &back, shown).await,
        }
    }

    async fn add(
        &self,
        target: Target<'_>,
        form: &HashMap<String, String>,
    ) -> Result<Outcome, HttpError> {
        let field = |name: &str| form.get(name).cloned().unwrap_or_default();
        let add = AddForm {
            email: field("email"),
            name: field("name"),
            access: field("access"),
            until: field("until"),
            days: field("days"),
        };
        let problem = |add: &AddForm, notice: Notice| {
            Ok(Err(Redisplay {
                status: Some(StatusCode::BAD_REQUEST),
                add: Some(add.clone()),
                add_error: Some(notice),
                ..Redisplay::default()
            }))
        };
        let Some(email) = input::normalize_email(&add.email) else {
            return problem(&add, Notice::error("invalid_email"));
        };
        let (page, asked) = (target.page.id.clone(), email.clone());
        if self
            .auth
            .read(move |store| store.client(&page, &asked))
            .await
            .map_err(HttpError::store)?
            .is_some()
        {
            return problem(
                &add,
                Notice::error("admin_err_exists").with("email", &email),
            );
        }
        let (until, days) = match parse_access(&add.access, &add.until, &add.days, false) {
            Ok(Access::Until(date)) => (Some(date), None),
            Ok(Access::Days(n)) => (None, Some(n)),
            Ok(Access::Unlimited | Access::Keep) => (None, None),
            Err(key) => return problem(&add, Notice::error(key)),
        };
        let name = add.name.trim();
        let input = ClientInput {
            page: target.page.id.clone(),
            email: email.clone(),
            name: (!name.is_empty()).then(|| name.to_owned()),
            until,
            days,
        };
        let (config, store, actor) = (self.config.clone(), self.store(), self.admin.to_owned());
        let added =
            blocking(move || clients::add_client(&config, &*store, &input, Source::Admin, &actor))
                .await;
        match added {
            Ok(_) => Ok(Ok(Some(Notice::ok("admin_added").with("email", email)))),
            Err(ApiError::Invalid { field, .. }) => {
                let key = match field {
                    "name" => "admin_err_name",
                    "until" => "admin_err_until",
                    "days" => "admin_err_days",
                    _ => "invalid_email",
                };
                problem(&add, Notice::error(key))
            }
            Err(e) => Err(api_error(e)),
        }
    }

    async fn edit(
        &self,
        target: Target<'_>,
        form: &HashMap<String, String>,
    ) -> Result<Outcome, HttpError> {
        let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
        let bad = |key| {
            Ok(Err(Redisplay::notice(
                StatusCode::BAD_REQUEST,
                Notice::error(key),
            )))
        };
        let Some(email) = input::normalize_email(field("email")) else {
            return bad("invalid_email");
        };
        let Ok(name) = check_name(field("name")) else {
            return bad("admin_err_name");
        };
        let access = match parse_access(field("access"), field("until"), field("days"), true) {
            Ok(access) => access,
            Err(key) => return bad(key),
        };
        let now = now();
        let new_end = match access {
            Access::Keep => None,
            Access::Unlimited => Some(None),
            Access::Days(n) => Some(Some(now.saturating_add(i64::from(n) * 86_400))),
            Access::Until(date) => match clients::access_end(Some(&date), None, now) {
                Ok(end) => Some(end),
                Err(_) => return bad("admin_err_until"),
            },
        };
        let (store, page, actor) = (self.store(), target.page.id.clone(), self.admin.to_owned());
        let email2 = email.clone();
        let edited = blocking(move || {
            let update = |old: &Client| {
                Some(Client {
                    name: name.clone(),
                    access_until: new_end.unwrap_or(old.access_until),
                    updated_at: now,
                    ..old.clone()
                })
            };
            let audit = |client: &Client| {
                change_event(
                    AuditKind::ClientUpdated,
                    &page,
                    client,
                    &actor,
                    "edited on the admin page",
                )
            };
            store
                .edit_client(&page, &email2, &update, &audit)
                .map_err(HttpError::store)
        })
        .await?;
        if matches!(edited, ClientEdit::Missing) {
            return Ok(Err(missing(&email)));
        }
        Ok(Ok(Some(Notice::ok("admin_updated").with("email", email))))
    }

    async fn extend(&self, target: Target<'_>, raw_email: &str) -> Result<Outcome, HttpError> {
        let Some(email) = input::normalize_email(raw_email) else {
            return Ok(Err(missing(raw_email)));
        };
        let (store, page, actor) = (self.store(), target.page.id.clone(), self.admin.to_owned());
        let email2 = email.clone();
        let result = blocking(move || {
            let now = now();
            // Unlimited access has nothing to extend.
            let update = |old: &Client| {
                let end = old.access_until?;
                Some(Client {
                    access_until: Some(
                        end.max(now).saturating_add(i64::from(EXTEND_DAYS) * 86_400),
                    ),
                    updated_at: now,
                    ..old.clone()
                })
            };
            let audit = |client: &Client| {
                change_event(
                    AuditKind::ClientUpdated,
                    &page,
                    client,
                    &actor,
                    &format!("extended by {EXTEND_DAYS} days on the admin page"),
                )
            };
            store
                .edit_client(&page, &email2, &update, &audit)
                .map_err(HttpError::store)
        })
        .await?;
        match result {
            ClientEdit::Missing | ClientEdit::EmailTaken => Ok(Err(missing(&email))),
            ClientEdit::Unchanged(_) => Ok(Ok(None)),
            ClientEdit::Edited(_) => Ok(Ok(Some(
                Notice::ok("admin_extended")
                    .with("email", email)
                    .with("n", EXTEND_DAYS.to_string()),
            ))),
        }
    }

    async fn remove(&self, target: Target<'_>, raw_email: &str) -> Result<Outcome, HttpError> {
        let Some(email) = input::normalize_email(raw_email) else {
            return Ok(Err(missing(raw_email)));
        };
        let (config, store, actor) = (self.config.clone(), self.store(), self.admin.to_owned());
        let (page, email2) = (target.page.id.clone(), email.clone());
        let removed =
            blocking(move || clients::remove_client(&config, &*store, &page, &email2, &actor))
                .await;
        match removed {
            Ok(()) => Ok(Ok(Some(Notice::ok("admin_removed").with("email", email)))),
            Err(ApiError::NotFound(_)) => Ok(Err(missing(&email))),
            Err(e) => Err(api_error(e)),
        }
    }

    /// Adds or updates the clients of a CSV file or pasted lines. The good lines are applied
    /// (in one transaction) and the bad ones listed with their line numbers, as the admin API
    /// does; a header row that cannot be used, or more than [`MAX_IMPORT_ROWS`] lines, refuses
    /// the whole import.
    async fn import(
        &self,
        target: Target<'_>,
        form: &HashMap<String, String>,
    ) -> Result<Outcome, HttpError> {
        let pasted = form.get("csv").cloned().unwrap_or_default();
        let file = form.get("file").cloned().unwrap_or_default();
        let text = if file.trim().is_empty() {
            &pasted
        } else {
            &file
        };
        let shown_again = |status, notice, errors, applied| {
            Ok(Err(Redisplay {
                status: Some(status),
                notice,
                import_errors: errors,
                import_text: if pasted.len() <= 64 * 1024 {
                    pasted.clone()
                } else {
                    String::new()
                },
                import_applied: applied,
                ..Redisplay::default()
            }))
        };
        let refused = |errors, notice| shown_again(StatusCode::BAD_REQUEST, notice, errors, false);
        if text.trim().is_empty() {
            return refused(Vec::new(), Some(Notice::error("admin_err_import_empty")));
        }
        let import = match csv::read_import(text.as_bytes(), Reading::Typed) {
            Ok(import) => import,
            Err(unusable) => return refused(vec![header_notice(&unusable)], None),
        };
        if import.rows.len() + import.problems.len() > MAX_IMPORT_ROWS {
            return refused(
                Vec::new(),
                Some(Notice::error("admin_err_import_size").with("n", MAX_IMPORT_ROWS.to_string())),
            );
        }
        let errors: Vec<Notice> = import
            .problems
            .iter()
            .take(MAX_IMPORT_PROBLEMS)
            .map(line_notice)
            .collect();
        let (store, page, actor) = (self.store(), target.page.id.clone(), self.admin.to_owned());
        let rows = import.rows;
        let applied = blocking(move || {
            csv::apply_import(&*store, &page, &rows, &actor).map_err(HttpError::store)
        })
        .await?;
        let done = Notice::ok("admin_imported")
            .with("added", applied.created.to_string())
            .with("updated", applied.updated.to_string());
        if errors.is_empty() {
            Ok(Ok(Some(done)))
        } else if applied.created + applied.updated == 0 {
            refused(errors, None)
        } else {
            shown_again(StatusCode::OK, Some(done), errors, true)
        }
    }

    /// The message a change left (signed cookie), and the cookie that clears it.
    fn take_flash(&self, req: &Request<Incoming>) -> (Option<Notice>, Option<HeaderValue>) {
        match self.auth.admin_take_flash(self.ar, req) {
            Some((text, clear)) => (parse_flash(&text), Some(clear)),
            None => (None, None),
        }
    }
}

/// Not signed in (or no longer an admin): a page view goes to the sign-in form and comes back;
/// anything else is sent to the form without doing anything.
fn sign_in_first(prefix: &str, req: &Request<Incoming>) -> Response<Body> {
    let login = format!("{prefix}/admin/login");
    if req.method() == Method::GET || req.method() == Method::HEAD {
        let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let next: String = form_urlencoded::byte_serialize(target.as_bytes()).collect();
        return redirect(StatusCode::FOUND, &format!("{login}?next={next}"));
    }
    redirect(StatusCode::SEE_OTHER, &login)
}

fn missing(email: &str) -> Redisplay {
    Redisplay::notice(
        StatusCode::NOT_FOUND,
        Notice::error("admin_err_missing").with("email", email),
    )
}

fn summary(page: &PageConfig, counts: ClientCounts) -> PageSummary {
    PageSummary {
        id: page.id.clone(),
        title: page.title.clone(),
        paths: page.paths.clone(),
        clients: usize::try_from(counts.total).unwrap_or(usize::MAX),
        active: usize::try_from(counts.active).unwrap_or(usize::MAX),
    }
}

fn host_text(host: &HostPattern) -> String {
    match host {
        HostPattern::Exact(name) => name.clone(),
        HostPattern::Suffix(suffix) => format!("*{suffix}"),
        HostPattern::Any => "*".into(),
    }
}

/// `2027-01-31 14:05 UTC`.
fn time_text(ts: Timestamp) -> String {
    jiff::Timestamp::from_second(ts).map_or_else(
        |_| ts.to_string(),
        |t| t.strftime("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

/// An access end as an admin reads it: an end at midnight UTC (access through a whole day, as
/// given by a date) is that last day, `2027-01-31`; any other end is the moment it comes.
fn end_text(end: Timestamp) -> String {
    if end.rem_euclid(86_400) == 0 {
        last_day(end)
    } else {
        time_text(end)
    }
}

/// The access period chosen in a form.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Access {
    Keep,
    Unlimited,
    /// Through this day (`YYYY-MM-DD`).
    Until(String),
    Days(u32),
}

/// Reads the access radio buttons and their fields; the error is a message key. A date or a
/// number typed next to a choice that does not use it is a mistake worth pointing out.
fn parse_access(
    choice: &str,
    until: &str,
    days: &str,
    allow_keep: bool,
) -> Result<Access, &'static str> {
    let (until, days) = (until.trim(), days.trim());
    match choice {
        "until" => {
            if until.is_empty() || clients::access_end(Some(until), None, now()).is_err() {
                return Err("admin_err_until");
            }
            Ok(Access::Until(until.to_owned()))
        }
        "days" => days
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_DAYS).contains(n))
            .map(Access::Days)
            .ok_or("admin_err_days"),
        "unlimited" | "keep" | "" if !until.is_empty() || !days.is_empty() => {
            Err("admin_err_access_choice")
        }
        "keep" if allow_keep => Ok(Access::Keep),
        "unlimited" | "" => Ok(Access::Unlimited),
        _ => Err("admin_err_access_choice"),
    }
}

fn change_event(
    kind: AuditKind,
    page: &str,
    client: &Client,
    actor: &str,
    what: &str,
) -> AuditEvent {
    let period = client.access_until.map_or_else(
        || "unlimited".to_owned(),
        |t| format!("until {}", rfc3339(t)),
    );
    AuditEvent {
        at: now(),
        kind,
        site: None,
        page: Some(page.to_owned()),
        email: Some(client.email.clone()),
        actor: actor.to_owned(),
        detail: format!("{what}: {period}"),
    }
}

/// Message keys and placeholder names a flash may carry; anything else is ignored.
const FLASH_KEYS: &[&str] = &[
    "admin_added",
    "admin_updated",
    "admin_extended",
    "admin_removed",
    "admin_imported",
];
const FLASH_ARGS: &[&str] = &["email", "n", "added", "updated"];

/// A notice as cookie text: the key, then `name=value` lines.
fn flash_text(notice: &Notice) -> String {
    let mut text = notice.key.to_owned();
    for (name, value) in &notice.args {
        text.push('\n');
        text.push_str(name);
        text.push('=');
        text.push_str(value);
    }
    text
}

fn parse_flash(text: &str) -> Option<Notice> {
    let mut lines = text.split('\n');
    let key = lines.next()?;
    let key = *FLASH_KEYS.iter().find(|k| **k == key)?;
    let mut notice = Notice::ok(key);
    for line in lines {
        let (name, value) = line.split_once('=')?;
        let name = *FLASH_ARGS.iter().find(|n| **n == name)?;
        notice = notice.with(name, value);
    }
    Some(notice)
}

/// An import's refused header row, as the admin reads it.
fn header_notice(unusable: &Unusable) -> Notice {
    let line = unusable.line.to_string();
    match &unusable.fault {
        HeaderFault::Unknown(column) => Notice::error("admin_line_column")
            .with("line", line)
            .with("column", column.as_str()),
        HeaderFault::Twice(column) => Notice::error("admin_line_column_twice")
            .with("line", line)
            .with("column", column.as_str()),
        // Typed lines always have text, and a header only when it names `email`.
        HeaderFault::Empty
        | HeaderFault::Unreadable(_)
        | HeaderFault::NotText
        | HeaderFault::NoEmail => Notice::error("admin_line_unreadable").with("line", line),
    }
}

/// An import's rejected line, as the admin reads it.
fn line_notice(problem: &Problem) -> Notice {
    let key = match problem.fault {
        Fault::OpenQuote => "admin_line_quote",
        Fault::ExtraCells(_) => "admin_line_cells",
        Fault::Email(_) => "admin_line_email",
        Fault::Name(_) => "admin_line_name",
        Fault::Until(_) => "admin_line_until",
        Fault::Repeated { .. } => "admin_line_twice",
        Fault::Unreadable(_) | Fault::NotText(_) => "admin_line_unreadable",
    };
    Notice::error(key).with("line", problem.line.to_string())
}

// ---------------------------------------------------------------------------------------------

/// Reads a POSTed form: `application/x-www-form-urlencoded`, or `multipart/form-data` (the
/// import, whose file arrives as the field `file`). Either way at most [`MAX_BODY`] bytes are
/// read.
async fn read_body(
    req: Request<Incoming>,
) -> Result<(http::HeaderMap, HashMap<String, String>), HttpError> {
    let (parts, body) = req.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let lower = content_type.trim_start().to_ascii_lowercase();
    let form = if lower.starts_with("application/x-www-form-urlencoded") {
        read_urlencoded(body, MAX_BODY).await?
    } else if lower.starts_with("multipart/form-data") {
        let boundary = multer::parse_boundary(&content_type)
            .ok()
            .filter(|b| !b.is_empty() && b.len() <= MAX_BOUNDARY)
            .ok_or(HttpError::BadRequest("The form has no multipart boundary."))?;
        let body = http_body_util::Limited::new(body, MAX_BODY);
        read_multipart(body.into_data_stream(), boundary).await?
    } else {
        return Err(HttpError::BadRequest(
            "Expected a form (application/x-www-form-urlencoded or multipart/form-data).",
        ));
    };
    Ok((parts.headers, form))
}

/// The fields of a `multipart/form-data` body, as text (a file's bytes read as UTF-8, lossy).
/// A field named twice keeps its first value, and parts without a name are skipped, so a
/// browser's extra parts cannot replace the CSRF token or the file.
async fn read_multipart<S, E>(
    stream: S,
    boundary: String,
) -> Result<HashMap<String, String>, HttpError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let unreadable = |e: multer::Error| match e {
        multer::Error::StreamReadFailed(_) => HttpError::BadRequest(FORM_CUT_OFF),
        _ => HttpError::BadRequest("The form could not be read."),
    };
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut fields = HashMap::new();
    let mut parts = 0;
    while let Some(field) = multipart.next_field().await.map_err(unreadable)? {
        parts += 1;
        if parts > MAX_PARTS {
            return Err(HttpError::BadRequest("The form has too many parts."));
        }
        let name = field.name().map(str::to_owned);
        let value = field.bytes().await.map_err(unreadable)?;
        if let Some(name) = name {
            fields
                .entry(name)
                .or_insert_with(|| String::from_utf8_lossy(&value).into_owned());
        }
    }
    Ok(fields)
}

fn api_error(e: ApiError) -> HttpError {
    HttpError::Internal(format!("admin page: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines an admin reads for `text` imported as typed lines, and the emails taken.
    fn import_texts(text: &str) -> (Vec<String>, Vec<String>) {
        let texts = |notices: Vec<Notice>| -> Vec<String> {
            notices
                .iter()
                .map(|n| n.text(crate::config::Language::En))
                .collect()
        };
        match csv::read_import(text.as_bytes(), Reading::Typed) {
            Ok(import) => (
                texts(import.problems.iter().map(line_notice).collect()),
                import.rows.into_iter().map(|r| r.email).collect(),
            ),
            Err(unusable) => (texts(vec![header_notice(&unusable)]), Vec::new()),
        }
    }

    #[test]
    fn every_bad_line_is_reported_and_the_good_ones_are_taken() {
        let (lines, taken) = import_texts(
            "email,name,until\nann@example.com,Ann,\nnot-an-email,X,\nbob@example.com,Bob,31.01.2027\n\
             ANN@example.com,Again,\ncy@example.com,Cy,,extra\ndee@example.com,Dee,2999-12-31\n",
        );
        assert_eq!(
            lines,
            [
                "Line 3: not a valid email address.",
                "Line 4: the access end is not a date (YYYY-MM-DD).",
                "Line 5: this email is listed twice.",
                "Line 6: expected at most 3 cells: email, name, until.",
            ]
        );
        assert_eq!(taken, ["ann@example.com", "dee@example.com"]);
        let (lines, _) = import_texts("ann@example.com\nbob@example.com;Bob\n");
        assert_eq!(lines, ["Line 2: not a valid email address."]);
        let (lines, taken) = import_texts("email,plan\nann@example.com,gold\n");
        assert_eq!(
            lines,
            ["Line 1: unknown column “plan”; the columns are email, name and until."]
        );
        assert!(
            taken.is_empty(),
            "an unusable header refuses the whole import"
        );
        let (lines, _) = import_texts("email,name,Name\nann@example.com,A,B\n");
        assert_eq!(lines, ["Line 1: the column “name” appears twice."]);
        let (lines, taken) = import_texts("ann@example.com,\"Ann\n");
        assert_eq!(lines, ["Line 1: a quote is not closed."]);
        assert!(taken.is_empty());
    }

    #[test]
    fn access_choices() {
        assert_eq!(
            parse_access("unlimited", "", "", false),
            Ok(Access::Unlimited)
        );
        assert_eq!(parse_access("", "", "", false), Ok(Access::Unlimited));
        assert_eq!(parse_access("keep", "", "", true), Ok(Access::Keep));
        assert_eq!(
            parse_access("keep", "", "", false),
            Err("admin_err_access_choice")
        );
        assert_eq!(
            parse_access("days", "", " 30 ", false),
            Ok(Access::Days(30))
        );
        assert_eq!(parse_access("days", "", "0", false), Err("admin_err_days"));
        assert_eq!(parse_access("days", "", "x", false), Err("admin_err_days"));
        assert_eq!(
            parse_access("until", "2999-12-31", "", false),
            Ok(Access::Until("2999-12-31".into()))
        );
        assert_eq!(
            parse_access("until", "2000-01-01", "", false),
            Err("admin_err_until")
        );
        assert_eq!(
            parse_access("unlimited", "2999-12-31", "", false),
            Err("admin_err_access_choice")
        );
        assert_eq!(
            parse_access("keep", "", "5", true),
            Err("admin_err_access_choice")
        );
    }

    #[test]
    fn flash_round_trips_and_refuses_strangers() {
        let n = Notice::ok("admin_extended")
            .with("email", "ann@example.com")
            .with("n", "30");
        assert_eq!(parse_flash(&flash_text(&n)), Some(n));
        assert_eq!(parse_flash("admin_err_exists\nemail=x"), None);
        assert_eq!(parse_flash("admin_added\nevil=x"), None);
    }

    /// The body in pieces cut at every few bytes, as a slow client would send it.
    async fn fields_of(body: &str, boundary: &str) -> Result<HashMap<String, String>, HttpError> {
        let pieces: Vec<Result<bytes::Bytes, std::convert::Infallible>> = body
            .as_bytes()
            .chunks(7)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        read_multipart(futures_util::stream::iter(pieces), boundary.to_owned()).await
    }

    #[tokio::test]
    async fn multipart_fields() {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\ntok\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n\
                    Content-Type: text/csv\r\n\r\nemail\r\nann@example.com\r\n\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nother\r\n--XyZ--\r\n";
        let fields = fields_of(body, "XyZ").await.expect("parsed");
        assert_eq!(fields["csrf"], "tok", "the first of two values is kept");
        assert_eq!(fields["file"], "email\r\nann@example.com\r\n");
        assert!(fields_of("garbage", "XyZ").await.is_err());
        assert!(
            fields_of(&body[..body.len() - 10], "XyZ").await.is_err(),
            "cut off"
        );
        let many: String = (0..=MAX_PARTS)
            .map(|i| format!("--XyZ\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nv\r\n"))
            .collect::<String>()
            + "--XyZ--\r\n";
        assert!(matches!(
            fields_of(&many, "XyZ").await,
            Err(HttpError::BadRequest("The form has too many parts."))
        ));
    }

    #[test]
    fn ends_read_as_days_or_moments() {
        let end = clients::day_end("2027-01-31").expect("date");
        assert_eq!(end_text(end), "2027-01-31");
        assert_eq!(end_text(end + 3600 + 300), "2027-02-01 01:05 UTC");
    }
}
