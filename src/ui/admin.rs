//! What the admin page shows: the data of each admin page and mail, turned into template values.
//!
//! The admin page (`{prefix}/admin/`) is rendered by [`Templates::admin_page`](super::Templates)
//! from the `admin_*.html` templates. Its sign-in pages use the visitors' card look
//! (`base.html`); the pages after sign-in use `admin_base.html`, which is wide on a desktop and
//! turns the client table into cards on a phone, with CSS only. No page has a script.
//!
//! Messages (a change done, a form's problem) are [`Notice`]s: a key of the translation table
//! and the values for its `{placeholders}`, resolved to text here in the page's language.

use minijinja::value::Value;
use serde::Serialize;

use super::i18n;
use crate::config::Language;

/// Common fields of every admin page.
#[derive(Debug, Clone, Copy)]
pub struct AdminFrame<'a> {
    /// The title of the site the admin page is opened on.
    pub site_title: &'a str,
    /// Path prefix of pagegate's endpoints, e.g. `/_pagegate`.
    pub prefix: &'a str,
    /// Anti-forgery token for the page's forms.
    pub csrf: &'a str,
    /// The signed-in admin's email; `None` on the sign-in pages.
    pub admin: Option<&'a str>,
}

/// A message for the admin: a translation key and the values of its placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Whether it reports success (green) or a problem (red).
    pub ok: bool,
    /// Key in the translation table.
    pub key: &'static str,
    /// `{name}` → value.
    pub args: Vec<(&'static str, String)>,
}

impl Notice {
    /// A success message.
    pub fn ok(key: &'static str) -> Notice {
        Notice {
            ok: true,
            key,
            args: Vec::new(),
        }
    }

    /// A problem.
    pub fn error(key: &'static str) -> Notice {
        Notice {
            ok: false,
            key,
            args: Vec::new(),
        }
    }

    /// The same notice with a value for `{name}`.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Notice {
        self.args.push((name, value.into()));
        self
    }

    /// The text in `lang`, placeholders filled. An unknown key is a bug: it is logged and the
    /// generic error text is shown.
    pub fn text(&self, lang: Language) -> String {
        let mut text = message_text(self.key, lang).to_owned();
        for (name, value) in &self.args {
            text = text.replace(&format!("{{{name}}}"), value);
        }
        text
    }

    fn value(&self, lang: Language) -> Value {
        Value::from_iter([
            ("ok", Value::from(self.ok)),
            ("key", Value::from(self.key)),
            ("text", Value::from(self.text(lang))),
        ])
    }
}

/// A site and its pages, for the first admin page.
#[derive(Debug, Clone, Serialize)]
pub struct SiteSummary {
    /// Site name.
    pub name: String,
    /// Site title.
    pub title: String,
    /// Host patterns, as written in the config.
    pub hosts: Vec<String>,
    /// Its protected pages.
    pub pages: Vec<PageSummary>,
}

/// A protected page and how many clients it has.
#[derive(Debug, Clone, Serialize)]
pub struct PageSummary {
    /// Page id.
    pub id: String,
    /// Page title.
    pub title: String,
    /// Path prefixes.
    pub paths: Vec<String>,
    /// Clients on the list.
    pub clients: usize,
    /// Of those, clients whose access is current.
    pub active: usize,
}

/// One client in the table.
#[derive(Debug, Clone, Serialize)]
pub struct ClientRow {
    /// Email.
    pub email: String,
    /// Name (may be empty).
    pub name: String,
    /// End of access as shown (`2027-01-31`, or `2027-01-31 14:05 UTC`); `None` is unlimited.
    pub until: Option<String>,
    /// Whether access is current.
    pub active: bool,
    /// Who added the client: `admin`, `cli`, `grant`, `import` or `demo`.
    pub source: String,
    /// Last sign-in as shown; `None` is never.
    pub last_login: Option<String>,
    /// Whether "extend" applies (access is limited).
    pub can_extend: bool,
}

/// The values of the add-client form, to show again after a problem.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AddForm {
    /// Email as typed.
    pub email: String,
    /// Name as typed.
    pub name: String,
    /// `unlimited`, `until` or `days`.
    pub access: String,
    /// Date as typed.
    pub until: String,
    /// Days as typed.
    pub days: String,
}

/// The client table of one page.
#[derive(Debug, Clone, Serialize)]
pub struct ClientsView {
    /// The page.
    pub page: PageSummary,
    /// Title of the site the page belongs to.
    pub site_title: String,
    /// The clients shown (one screenful of the matching ones).
    pub rows: Vec<ClientRow>,
    /// The search text.
    pub q: String,
    /// Clients matching the search: exact, or a lower bound when `matching_exact` is false (a
    /// search stops counting at a cap).
    pub matching: usize,
    /// Whether `matching` is exact.
    pub matching_exact: bool,
    /// The email the screen shown starts after ("" for the first screen), kept by the forms.
    pub after: String,
    /// Position of the first row shown, 1-based, kept by the forms.
    pub at: usize,
    /// Position of the first and last row shown, 1-based (0 and 0 when none).
    pub from: usize,
    /// See `from`.
    pub to: usize,
    /// Whether a link back to the first screen is shown (this is a later one).
    pub first: bool,
    /// The `after` of the next screen, if there is one.
    pub next_after: Option<String>,
    /// The position of the next screen's first row.
    pub next_at: usize,
    /// The add form's values.
    pub add: AddForm,
    /// The import form's text, to show again after a problem.
    pub import_text: String,
    /// Whether the import shown again applied its good lines, so the problems listed are the
    /// lines left out (rather than the reasons nothing was imported).
    pub import_applied: bool,
    /// Today (UTC) as `YYYY-MM-DD`, the earliest date the date fields offer.
    pub today: String,
    /// How many days "extend" adds.
    pub extend_days: u32,
}

/// One admin page.
#[derive(Debug, Clone, Copy)]
pub enum AdminPage<'a> {
    /// The admin's email form, POSTed to `{prefix}/admin/login`.
    Login {
        /// Common fields.
        frame: AdminFrame<'a>,
        /// Address to prefill.
        email: &'a str,
        /// Admin path to return to after sign-in.
        next: &'a str,
        /// Message key of the problem with the last submission.
        error: Option<&'a str>,
    },
    /// The code form, POSTed to `{prefix}/admin/verify`.
    Code {
        /// Common fields.
        frame: AdminFrame<'a>,
        /// Address the code went to.
        email: &'a str,
        /// Admin path to return to after sign-in.
        next: &'a str,
        /// Digits per code.
        code_length: usize,
        /// Message key of the problem with the last submission.
        error: Option<&'a str>,
    },
    /// The sites and their pages with client counts.
    Overview {
        /// Common fields.
        frame: AdminFrame<'a>,
        /// Every site.
        sites: &'a [SiteSummary],
        /// A message at the top.
        notice: Option<&'a Notice>,
    },
    /// One page's clients, with search, paging, the add form and the import form.
    Clients {
        /// Common fields.
        frame: AdminFrame<'a>,
        /// The table and forms.
        view: &'a ClientsView,
        /// A message at the top (a change done, or a problem with a row's form).
        notice: Option<&'a Notice>,
        /// Problem with the add form.
        add_error: Option<&'a Notice>,
        /// Problems with the import, line by line.
        import_errors: &'a [Notice],
    },
}

impl AdminPage<'_> {
    /// The template this page is rendered with.
    pub fn template_name(&self) -> &'static str {
        match self {
            AdminPage::Login { .. } => "admin_login.html",
            AdminPage::Code { .. } => "admin_code.html",
            AdminPage::Overview { .. } => "admin_overview.html",
            AdminPage::Clients { .. } => "admin_clients.html",
        }
    }

    /// The values the template sees (besides `lang` and `t`).
    pub(crate) fn context(&self, lang: Language) -> Vec<(&'static str, Value)> {
        let frame = match self {
            AdminPage::Login { frame, .. }
            | AdminPage::Code { frame, .. }
            | AdminPage::Overview { frame, .. }
            | AdminPage::Clients { frame, .. } => frame,
        };
        let mut ctx = vec![
            ("site_title", Value::from(frame.site_title)),
            ("page_title", Value::from(())),
            ("prefix", Value::from(frame.prefix)),
            ("csrf", Value::from(frame.csrf)),
            ("admin", Value::from(frame.admin)),
        ];
        let error_fields = |error: Option<&str>| {
            [
                ("error", Value::from(error)),
                (
                    "error_text",
                    Value::from(error.map(|k| message_text(k, lang))),
                ),
            ]
        };
        match *self {
            AdminPage::Login {
                email, next, error, ..
            } => {
                ctx.push(("email", Value::from(email)));
                ctx.push(("next", Value::from(next)));
                ctx.extend(error_fields(error));
            }
            AdminPage::Code {
                email,
                next,
                code_length,
                error,
                ..
            } => {
                ctx.push(("email", Value::from(email)));
                ctx.push(("next", Value::from(next)));
                ctx.push(("code_length", Value::from(code_length)));
                ctx.extend(error_fields(error));
            }
            AdminPage::Overview { sites, notice, .. } => {
                ctx.push(("sites", Value::from_serialize(sites)));
                ctx.push(("notice", Value::from(notice.map(|n| n.value(lang)))));
            }
            AdminPage::Clients {
                view,
                notice,
                add_error,
                import_errors,
                ..
            } => {
                ctx.push(("view", Value::from_serialize(view)));
                ctx.push(("notice", Value::from(notice.map(|n| n.value(lang)))));
                ctx.push(("add_error", Value::from(add_error.map(|n| n.value(lang)))));
                ctx.push((
                    "import_errors",
                    Value::from_iter(import_errors.iter().map(|n| n.value(lang))),
                ));
            }
        }
        ctx
    }
}

/// The text of message `key` in `lang`; an unknown key is logged and reads as the generic error.
fn message_text(key: &str, lang: Language) -> &'static str {
    i18n::lookup(lang, key).unwrap_or_else(|| {
        tracing::error!(key, "unknown message key on the admin page");
        i18n::lookup(lang, "error").unwrap_or("Error")
    })
}

/// The fields of an admin's sign-in mail.
#[derive(Debug, Clone, Copy)]
pub struct AdminMail<'a> {
    /// Title of the site the admin signs in on.
    pub site_title: &'a str,
    /// The one-time code.
    pub code: &'a str,
    /// How long the code is valid.
    pub valid_minutes: u64,
}

/// Sample data for the start-up check and the tests: every admin page, with and without
/// messages, every source, limited and unlimited access.
pub(crate) struct Samples {
    pub(crate) sites: Vec<SiteSummary>,
    pub(crate) view: ClientsView,
    pub(crate) empty: ClientsView,
    /// `view` after an import that applied some lines and left others out.
    pub(crate) applied: ClientsView,
    pub(crate) notice: Notice,
    pub(crate) problem: Notice,
    pub(crate) imported: Notice,
    pub(crate) lines: Vec<Notice>,
}

impl Samples {
    pub(crate) fn new() -> Samples {
        let page = PageSummary {
            id: "course".into(),
            title: "Video course".into(),
            paths: vec!["/course/".into()],
            clients: 2,
            active: 1,
        };
        let rows = ["admin", "cli", "grant", "import", "demo"]
            .iter()
            .enumerate()
            .map(|(i, source)| ClientRow {
                email: format!("client{i}@example.com"),
                name: if i == 0 {
                    String::new()
                } else {
                    "Ann Lee".into()
                },
                until: (i % 2 == 0).then(|| "2027-01-31".into()),
                active: i != 2,
                source: (*source).into(),
                last_login: (i == 1).then(|| "2026-11-20 09:15 UTC".into()),
                can_extend: i % 2 == 0,
            })
            .collect();
        let view = ClientsView {
            page: page.clone(),
            site_title: "Demo School".into(),
            rows,
            q: "ann".into(),
            matching: 120,
            matching_exact: true,
            after: "client50@example.com".into(),
            at: 51,
            from: 51,
            to: 100,
            first: true,
            next_after: Some("client100@example.com".into()),
            next_at: 101,
            add: AddForm {
                email: "ann@".into(),
                name: "Ann".into(),
                access: "days".into(),
                until: String::new(),
                days: "30".into(),
            },
            import_text: "ann@example.com,Ann".into(),
            import_applied: false,
            today: "2026-11-23".into(),
            extend_days: 30,
        };
        let empty = ClientsView {
            rows: Vec::new(),
            q: String::new(),
            matching: 0,
            after: String::new(),
            at: 1,
            from: 0,
            to: 0,
            first: false,
            next_after: None,
            next_at: 1,
            add: AddForm {
                access: "unlimited".into(),
                ..AddForm::default()
            },
            import_text: String::new(),
            ..view.clone()
        };
        let applied = ClientsView {
            import_applied: true,
            ..view.clone()
        };
        Samples {
            sites: vec![
                SiteSummary {
                    name: "school".into(),
                    title: "Demo School".into(),
                    hosts: vec!["school.example".into()],
                    pages: vec![page],
                },
                SiteSummary {
                    name: "blog".into(),
                    title: "Blog".into(),
                    hosts: vec!["*".into()],
                    pages: Vec::new(),
                },
            ],
            view,
            empty,
            applied,
            notice: Notice::ok("admin_added").with("email", "ann@example.com"),
            problem: Notice::error("admin_err_exists").with("email", "ann@example.com"),
            imported: Notice::ok("admin_imported")
                .with("added", "1")
                .with("updated", "0"),
            lines: vec![Notice::error("admin_line_email").with("line", "2")],
        }
    }

    pub(crate) fn pages<'a>(&'a self, frame: AdminFrame<'a>) -> Vec<AdminPage<'a>> {
        let bare = AdminFrame {
            admin: None,
            ..frame
        };
        let mut pages = Vec::new();
        for error in [None, Some("invalid_email")] {
            pages.push(AdminPage::Login {
                frame: bare,
                email: "a@example.com",
                next: "/_pagegate/admin/",
                error,
            });
            pages.push(AdminPage::Code {
                frame: bare,
                email: "a@example.com",
                next: "/_pagegate/admin/",
                code_length: 6,
                error: error.map(|_| "wrong_code"),
            });
        }
        for notice in [None, Some(&self.notice)] {
            pages.push(AdminPage::Overview {
                frame,
                sites: &self.sites,
                notice,
            });
            pages.push(AdminPage::Clients {
                frame,
                view: &self.empty,
                notice,
                add_error: None,
                import_errors: &[],
            });
        }
        pages.push(AdminPage::Clients {
            frame,
            view: &self.view,
            notice: Some(&self.problem),
            add_error: Some(&self.problem),
            import_errors: &self.lines,
        });
        pages.push(AdminPage::Clients {
            frame,
            view: &self.applied,
            notice: Some(&self.imported),
            add_error: None,
            import_errors: &self.lines,
        });
        pages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::Templates;

    const FRAME: AdminFrame<'static> = AdminFrame {
        site_title: "Demo School",
        prefix: "/_pagegate",
        csrf: "tok",
        admin: Some("admin@example.com"),
    };

    #[test]
    fn every_admin_page_renders_in_every_language() {
        let templates = Templates::new(None).expect("templates");
        let samples = Samples::new();
        for lang in Language::ALL {
            for page in samples.pages(FRAME) {
                let what = format!("{} {lang:?}", page.template_name());
                let html = templates.admin_page(&page, lang).expect(&what);
                for leftover in ["{{", "}}", "{%", "%}", "{email}", "{n}", "{line}", "{from}"] {
                    assert!(!html.contains(leftover), "{what}: {leftover}\n{html}");
                }
                assert!(html.starts_with("<!doctype html>"), "{what}");
                assert!(html.contains("name=\"viewport\""), "{what}");
                assert!(!html.contains("<script"), "{what}");
                assert!(
                    !html.contains("http://") && !html.contains("https://"),
                    "{what}: no external resources"
                );
                // Every form that changes something carries the token.
                for form in html.split("<form").skip(1) {
                    let form = &form[..form.find("</form>").expect("closed form")];
                    if form.contains("method=\"post\"") {
                        assert!(
                            form.contains("name=\"csrf\" value=\"tok\""),
                            "{what}: {form}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_client_table_shows_every_column_and_action() {
        let templates = Templates::new(None).expect("templates");
        let samples = Samples::new();
        let html = templates
            .admin_page(
                &AdminPage::Clients {
                    frame: FRAME,
                    view: &samples.view,
                    notice: Some(&samples.notice),
                    add_error: None,
                    import_errors: &samples.lines,
                },
                Language::En,
            )
            .expect("render");
        for want in [
            "client1@example.com",
            "Ann Lee",
            "2027-01-31",
            "unlimited",
            "2026-11-20 09:15 UTC",
            "never",
            "command line",
            "ann@example.com was added.",
            "Line 2: not a valid email address.",
            "action=\"/_pagegate/admin/pages/course/add\"",
            "action=\"/_pagegate/admin/pages/course/edit\"",
            "action=\"/_pagegate/admin/pages/course/extend\"",
            "action=\"/_pagegate/admin/pages/course/remove\"",
            "action=\"/_pagegate/admin/pages/course/import\"",
            "href=\"/_pagegate/admin/pages/course/clients.csv\"",
            "enctype=\"multipart/form-data\"",
            "after=client100%40example.com&amp;at=101",
            "data-label=\"Email\"",
            "51–100 of 120",
        ] {
            assert!(html.contains(want), "missing {want:?}\n{html}");
        }
        let ru = templates
            .admin_page(
                &AdminPage::Clients {
                    frame: FRAME,
                    view: &samples.view,
                    notice: None,
                    add_error: None,
                    import_errors: &[],
                },
                Language::Ru,
            )
            .expect("render");
        assert!(ru.contains("без ограничения"), "{ru}");
    }

    #[test]
    fn import_problems_say_whether_the_other_lines_were_taken() {
        let templates = Templates::new(None).expect("templates");
        let samples = Samples::new();
        for (view, heading, other) in [
            (&samples.view, "Nothing was imported.", "were not imported"),
            (
                &samples.applied,
                "These lines were not imported.",
                "Nothing",
            ),
        ] {
            let html = templates
                .admin_page(
                    &AdminPage::Clients {
                        frame: FRAME,
                        view,
                        notice: None,
                        add_error: None,
                        import_errors: &samples.lines,
                    },
                    Language::En,
                )
                .expect("render");
            assert!(html.contains(heading), "{heading}\n{html}");
            assert!(!html.contains(other), "{other}\n{html}");
        }
    }

    #[test]
    fn hostile_client_data_is_escaped() {
        let templates = Templates::new(None).expect("templates");
        let mut samples = Samples::new();
        samples.view.rows[1].name = "<script>alert(1)</script>".into();
        samples.view.q = "\"><img src=x>".into();
        let notice = Notice::ok("admin_added").with("email", "<b>x</b>@example.com");
        let html = templates
            .admin_page(
                &AdminPage::Clients {
                    frame: FRAME,
                    view: &samples.view,
                    notice: Some(&notice),
                    add_error: None,
                    import_errors: &[],
                },
                Language::En,
            )
            .expect("render");
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img src=x>"), "{html}");
        assert!(!html.contains("<b>x</b>"), "{html}");
    }

    #[test]
    fn admin_templates_use_only_known_words() {
        let sources = [
            include_str!("templates/admin_base.html"),
            include_str!("templates/admin_login.html"),
            include_str!("templates/admin_code.html"),
            include_str!("templates/admin_overview.html"),
            include_str!("templates/admin_clients.html"),
            include_str!("templates/admin_mail_subject.txt"),
            include_str!("templates/admin_mail.txt"),
            include_str!("templates/admin_mail.html"),
        ];
        let mut used = 0;
        for source in sources {
            for (at, _) in source.match_indices("t.") {
                let before = source[..at].chars().next_back().unwrap_or(' ');
                if before.is_alphanumeric() || before == '_' || before == '.' {
                    continue;
                }
                let key: String = source[at + 2..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if key.is_empty() {
                    continue;
                }
                used += 1;
                for lang in Language::ALL {
                    assert!(i18n::lookup(lang, &key).is_some(), "{lang:?} lacks `{key}`");
                }
            }
        }
        assert!(used > 40, "the scan found only {used} uses");
    }

    #[test]
    fn admin_mail_has_the_code_and_no_link() {
        let templates = Templates::new(None).expect("templates");
        for lang in Language::ALL {
            let mail = templates
                .admin_mail(
                    &AdminMail {
                        site_title: "Demo School",
                        code: "482913",
                        valid_minutes: 10,
                    },
                    lang,
                )
                .expect("mail");
            assert!(!mail.subject.contains("482913"));
            assert!(mail.text.contains("482913") && mail.html.contains("482913"));
            assert!(!mail.text.contains("http"), "{}", mail.text);
        }
    }

    #[test]
    fn notices_fill_their_placeholders() {
        let n = Notice::ok("admin_imported")
            .with("added", "3")
            .with("updated", "1");
        assert_eq!(n.text(Language::En), "Import done: 3 added, 1 updated.");
        assert_eq!(
            Notice::error("no_such_key").text(Language::En),
            i18n::lookup(Language::En, "error").expect("generic")
        );
    }
}
