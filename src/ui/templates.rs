//! The page and mail templates: built into the binary, each replaceable by a file of the same name
//! in the configured folder, rendered with minijinja.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use http::StatusCode;
use minijinja::value::{Kwargs, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior};

use super::admin::{AdminFrame, AdminMail, AdminPage, Samples};
use super::i18n;
use crate::config::Language;

/// The built-in templates. A file with one of these names in the override folder replaces it.
const BUILTIN: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("style.css", include_str!("templates/style.css")),
    ("email_form.html", include_str!("templates/email_form.html")),
    ("code_form.html", include_str!("templates/code_form.html")),
    (
        "link_confirm.html",
        include_str!("templates/link_confirm.html"),
    ),
    (
        "signin_confirm.html",
        include_str!("templates/signin_confirm.html"),
    ),
    (
        "signin_gone.html",
        include_str!("templates/signin_gone.html"),
    ),
    (
        "rate_limited.html",
        include_str!("templates/rate_limited.html"),
    ),
    ("logged_out.html", include_str!("templates/logged_out.html")),
    ("message.html", include_str!("templates/message.html")),
    ("error.html", include_str!("templates/error.html")),
    (
        "login_mail_subject.txt",
        include_str!("templates/login_mail_subject.txt"),
    ),
    ("login_mail.txt", include_str!("templates/login_mail.txt")),
    ("login_mail.html", include_str!("templates/login_mail.html")),
    (
        "welcome_mail_subject.txt",
        include_str!("templates/welcome_mail_subject.txt"),
    ),
    (
        "welcome_mail.txt",
        include_str!("templates/welcome_mail.txt"),
    ),
    (
        "welcome_mail.html",
        include_str!("templates/welcome_mail.html"),
    ),
    ("admin_base.html", include_str!("templates/admin_base.html")),
    (
        "admin_login.html",
        include_str!("templates/admin_login.html"),
    ),
    ("admin_code.html", include_str!("templates/admin_code.html")),
    (
        "admin_overview.html",
        include_str!("templates/admin_overview.html"),
    ),
    (
        "admin_clients.html",
        include_str!("templates/admin_clients.html"),
    ),
    (
        "admin_mail_subject.txt",
        include_str!("templates/admin_mail_subject.txt"),
    ),
    ("admin_mail.txt", include_str!("templates/admin_mail.txt")),
    ("admin_mail.html", include_str!("templates/admin_mail.html")),
];

/// File endings taken from the override folder. Other files there are left alone, so the folder
/// may hold notes or images for the admin's own use.
const OVERRIDE_EXTENSIONS: &[&str] = &[".html", ".txt", ".css"];

/// Common fields on every pagegate page.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The site's title, shown above the card.
    pub site_title: &'a str,
    /// The protected page's title, if the page is about one.
    pub page_title: Option<&'a str>,
    /// Path prefix of pagegate's endpoints, e.g. `/_pagegate`, for form actions.
    pub prefix: &'a str,
}

/// A page pagegate shows. Message and error fields hold keys of the translation table (see
/// [`MESSAGE_KEYS`](super::MESSAGE_KEYS)), not text.
#[derive(Debug, Clone, Copy)]
pub enum Page<'a> {
    /// "Sign in to …": one email field, POSTed to `{prefix}/login`.
    EmailForm {
        /// Common fields.
        frame: Frame<'a>,
        /// Where to go after signing in.
        next: &'a str,
        /// Anti-forgery token.
        csrf: &'a str,
        /// The address to prefill, or "".
        email: &'a str,
        /// Message key of the problem with the last submission.
        error: Option<&'a str>,
    },
    /// After an email was submitted: the code field, POSTed to `{prefix}/verify`, and a "send a
    /// new code" button POSTing the same email to `{prefix}/login`.
    CodeForm {
        /// Common fields.
        frame: Frame<'a>,
        /// The address the code went to.
        email: &'a str,
        /// Where to go after signing in.
        next: &'a str,
        /// Anti-forgery token.
        csrf: &'a str,
        /// Digits per code.
        code_length: usize,
        /// Message key of the problem with the last submission.
        error: Option<&'a str>,
    },
    /// Opened from the mail link: one button that POSTs `token` to `{prefix}/link`, so a mail
    /// scanner that follows the link does not sign anyone in.
    LinkConfirm {
        /// Common fields.
        frame: Frame<'a>,
        /// The link's token.
        token: &'a str,
        /// Where to go after signing in.
        next: &'a str,
        /// Anti-forgery token.
        csrf: &'a str,
        /// The account the link signs into, masked.
        account: &'a str,
        /// The link was asked for in another browser: the visitor must confirm the account.
        elsewhere: bool,
        /// Message key of a problem with the last submission.
        error: Option<&'a str>,
    },
    /// Opened from a shop's sign-in link right after payment: one button that POSTs `token` to
    /// `{prefix}/signin`, so a link scanner that follows the link does not spend it.
    SigninConfirm {
        /// Common fields.
        frame: Frame<'a>,
        /// The link's token.
        token: &'a str,
        /// The id of the link's page, sent back so that a link found spent meanwhile can still
        /// offer the code sign-in for its page.
        page: &'a str,
        /// Anti-forgery token.
        csrf: &'a str,
        /// The account the link signs into, masked.
        account: &'a str,
        /// Message key of a problem with the last submission.
        error: Option<&'a str>,
    },
    /// A shop's sign-in link that was used or has expired: a button to the usual sign-in by
    /// code for the link's page.
    SigninGone {
        /// Common fields.
        frame: Frame<'a>,
        /// The email form's address (a local path), with the page as `next`.
        login: &'a str,
    },
    /// "Too many attempts, try again in N minutes".
    RateLimited {
        /// Common fields.
        frame: Frame<'a>,
        /// Minutes until the visitor may try again (at least 1 is shown).
        retry_after_minutes: u64,
    },
    /// "You are signed out", with a link to `home`.
    LoggedOut {
        /// Common fields.
        frame: Frame<'a>,
        /// Where the link goes: a local path or an http(s) URL.
        home: &'a str,
    },
    /// A generic message (expired link, etc.).
    Message {
        /// Common fields.
        frame: Frame<'a>,
        /// Key of the heading.
        title_key: &'a str,
        /// Key of the text.
        message_key: &'a str,
    },
}

impl Page<'_> {
    /// The template this page is rendered with.
    pub fn template_name(&self) -> &'static str {
        match self {
            Page::EmailForm { .. } => "email_form.html",
            Page::CodeForm { .. } => "code_form.html",
            Page::LinkConfirm { .. } => "link_confirm.html",
            Page::SigninConfirm { .. } => "signin_confirm.html",
            Page::SigninGone { .. } => "signin_gone.html",
            Page::RateLimited { .. } => "rate_limited.html",
            Page::LoggedOut { .. } => "logged_out.html",
            Page::Message { .. } => "message.html",
        }
    }

    fn frame(&self) -> &Frame<'_> {
        match self {
            Page::EmailForm { frame, .. }
            | Page::CodeForm { frame, .. }
            | Page::LinkConfirm { frame, .. }
            | Page::SigninConfirm { frame, .. }
            | Page::SigninGone { frame, .. }
            | Page::RateLimited { frame, .. }
            | Page::LoggedOut { frame, .. }
            | Page::Message { frame, .. } => frame,
        }
    }
}

/// The fields of a login mail.
#[derive(Debug, Clone, Copy)]
pub struct LoginMail<'a> {
    /// The site's title.
    pub site_title: &'a str,
    /// The protected page's title ("" to name the site only).
    pub page_title: &'a str,
    /// The recipient's name ("" for a greeting without a name).
    pub name: &'a str,
    /// The one-time code.
    pub code: &'a str,
    /// The one-click sign-in link (absolute URL).
    pub link: &'a str,
    /// How long the code and link are valid.
    pub valid_minutes: u64,
}

/// The fields of a welcome mail: a shop granted access and asked pagegate to tell the buyer.
#[derive(Debug, Clone, Copy)]
pub struct WelcomeMail<'a> {
    /// The site's title.
    pub site_title: &'a str,
    /// The page's title.
    pub page_title: &'a str,
    /// The recipient's name ("" for a greeting without a name).
    pub name: &'a str,
    /// The page's address (absolute URL).
    pub link: &'a str,
    /// The last day of access, as written in the mail (e.g. `2027-01-31`); `None` is unlimited.
    pub until: Option<&'a str>,
}

/// A rendered login mail.
#[derive(Clone, PartialEq, Eq)]
pub struct RenderedMail {
    /// One line, never holding the code.
    pub subject: String,
    /// The text/plain part.
    pub text: String,
    /// The text/html part.
    pub html: String,
}

impl std::fmt::Debug for RenderedMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The parts hold the code and the sign-in link: never print them.
        f.debug_struct("RenderedMail")
            .field("subject", &self.subject)
            .field("text", &"[redacted]")
            .field("html", &"[redacted]")
            .finish()
    }
}

/// The compiled templates and translation tables. Build once at start-up and share.
#[derive(Debug, Clone)]
pub struct Templates {
    env: Environment<'static>,
    /// Template name → the override file it came from.
    overrides: BTreeMap<String, PathBuf>,
    t_en: Value,
    t_ru: Value,
}

impl Templates {
    /// Compiles the built-in templates and the overrides in `override_dir` (every `.html`,
    /// `.txt` and `.css` file there, so an override may `{% include %}` files of its own), then
    /// renders every page and the mail once with sample values, so a broken or misspelt override
    /// stops the start rather than a visitor's request. Errors name the file and line.
    pub fn new(override_dir: Option<&Path>) -> Result<Templates, String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(true);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.set_formatter(format_value);
        env.add_filter("fill", fill);
        env.add_filter("plural", plural);
        env.add_filter("href", href);
        env.add_filter("urlencode", urlencode);
        for (name, source) in BUILTIN {
            env.add_template(name, source)
                .map_err(|e| format!("built-in template {name}: {}", describe(&e)))?;
        }

        let mut overrides = BTreeMap::new();
        if let Some(dir) = override_dir {
            for (name, path) in override_files(dir)? {
                let source = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: cannot read the template: {e}", path.display()))?;
                env.add_template_owned(name.clone(), source)
                    .map_err(|e| located(&path, &e))?;
                overrides.insert(name, path);
            }
        }

        let templates = Templates {
            env,
            overrides,
            t_en: table_value(Language::En),
            t_ru: table_value(Language::Ru),
        };
        templates.check()?;
        Ok(templates)
    }

    /// Whether a template was replaced by a file in the override folder.
    pub fn is_overridden(&self, name: &str) -> bool {
        self.overrides.contains_key(name)
    }

    /// Renders a page to HTML.
    pub fn page(&self, page: &Page<'_>, lang: Language) -> Result<String, String> {
        let frame = page.frame();
        let mut ctx = self.common(lang);
        ctx.push(("site_title", Value::from(frame.site_title)));
        ctx.push(("page_title", Value::from(frame.page_title)));
        ctx.push(("prefix", Value::from(frame.prefix)));
        match *page {
            Page::EmailForm {
                next,
                csrf,
                email,
                error,
                ..
            } => {
                ctx.push(("next", Value::from(next)));
                ctx.push(("csrf", Value::from(csrf)));
                ctx.push(("email", Value::from(email)));
                ctx.extend(error_fields(error, lang));
            }
            Page::CodeForm {
                email,
                next,
                csrf,
                code_length,
                error,
                ..
            } => {
                ctx.push(("email", Value::from(email)));
                ctx.push(("next", Value::from(next)));
                ctx.push(("csrf", Value::from(csrf)));
                ctx.push(("code_length", Value::from(code_length)));
                ctx.extend(error_fields(error, lang));
            }
            Page::LinkConfirm {
                token,
                next,
                csrf,
                account,
                elsewhere,
                error,
                ..
            } => {
                ctx.push(("token", Value::from(token)));
                ctx.push(("next", Value::from(next)));
                ctx.push(("csrf", Value::from(csrf)));
                ctx.push(("account", Value::from(account)));
                ctx.push(("elsewhere", Value::from(elsewhere)));
                ctx.extend(error_fields(error, lang));
            }
            Page::SigninConfirm {
                token,
                page,
                csrf,
                account,
                error,
                ..
            } => {
                ctx.push(("token", Value::from(token)));
                ctx.push(("page", Value::from(page)));
                ctx.push(("csrf", Value::from(csrf)));
                ctx.push(("account", Value::from(account)));
                ctx.extend(error_fields(error, lang));
            }
            Page::SigninGone { login, .. } => {
                ctx.push(("login", Value::from(login)));
            }
            Page::RateLimited {
                retry_after_minutes,
                ..
            } => {
                ctx.push((
                    "retry_after_minutes",
                    Value::from(retry_after_minutes.max(1)),
                ));
            }
            Page::LoggedOut { home, .. } => {
                ctx.push(("home", Value::from(home)));
            }
            Page::Message {
                title_key,
                message_key,
                ..
            } => {
                ctx.push(("title_key", Value::from(title_key)));
                ctx.push(("title", Value::from(message_text(title_key, lang))));
                ctx.push(("message_key", Value::from(message_key)));
                ctx.push(("message", Value::from(message_text(message_key, lang))));
            }
        }
        self.render(page.template_name(), ctx)
    }

    /// Renders a login mail: subject, text part and HTML part.
    pub fn login_mail(&self, mail: &LoginMail<'_>, lang: Language) -> Result<RenderedMail, String> {
        let mut ctx = self.common(lang);
        ctx.push(("site_title", Value::from(mail.site_title)));
        ctx.push(("page_title", Value::from(mail.page_title)));
        ctx.push(("name", Value::from(mail.name.trim())));
        ctx.push(("code", Value::from(mail.code)));
        ctx.push(("link", Value::from(mail.link)));
        ctx.push(("valid_minutes", Value::from(mail.valid_minutes.max(1))));
        let subject = self.render("login_mail_subject.txt", ctx.clone())?;
        // A header is one line: fold whatever the template produced into one.
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        ctx.push(("subject", Value::from(subject.as_str())));
        let text = self.render("login_mail.txt", ctx.clone())?;
        let html = self.render("login_mail.html", ctx)?;
        Ok(RenderedMail {
            subject,
            text,
            html,
        })
    }

    /// Renders a welcome mail: subject, text part and HTML part.
    pub fn welcome_mail(
        &self,
        mail: &WelcomeMail<'_>,
        lang: Language,
    ) -> Result<RenderedMail, String> {
        let mut ctx = self.common(lang);
        ctx.push(("site_title", Value::from(mail.site_title)));
        ctx.push(("page_title", Value::from(mail.page_title)));
        ctx.push(("name", Value::from(mail.name.trim())));
        ctx.push(("link", Value::from(mail.link)));
        ctx.push(("until", Value::from(mail.until)));
        let subject = self.render("welcome_mail_subject.txt", ctx.clone())?;
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        ctx.push(("subject", Value::from(subject.as_str())));
        let text = self.render("welcome_mail.txt", ctx.clone())?;
        let html = self.render("welcome_mail.html", ctx)?;
        Ok(RenderedMail {
            subject,
            text,
            html,
        })
    }

    /// Renders an admin page to HTML.
    pub fn admin_page(&self, page: &AdminPage<'_>, lang: Language) -> Result<String, String> {
        let mut ctx = self.common(lang);
        ctx.extend(page.context(lang));
        self.render(page.template_name(), ctx)
    }

    /// Renders an admin's sign-in mail: subject, text part and HTML part (the code only, no link).
    pub fn admin_mail(&self, mail: &AdminMail<'_>, lang: Language) -> Result<RenderedMail, String> {
        let mut ctx = self.common(lang);
        ctx.push(("site_title", Value::from(mail.site_title)));
        ctx.push(("code", Value::from(mail.code)));
        ctx.push(("valid_minutes", Value::from(mail.valid_minutes.max(1))));
        let subject = self.render("admin_mail_subject.txt", ctx.clone())?;
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        ctx.push(("subject", Value::from(subject.as_str())));
        let text = self.render("admin_mail.txt", ctx.clone())?;
        let html = self.render("admin_mail.html", ctx)?;
        Ok(RenderedMail {
            subject,
            text,
            html,
        })
    }

    /// Renders the page for an error status. `message` is shown as it is (escaped); the error
    /// texts in [`crate::error`] are English, hence the language parameter is usually `En`.
    pub fn error_html(
        &self,
        status: StatusCode,
        message: &str,
        lang: Language,
    ) -> Result<String, String> {
        let mut ctx = self.common(lang);
        ctx.push(("site_title", Value::from(())));
        ctx.push(("page_title", Value::from(())));
        ctx.push(("status", Value::from(status.as_u16())));
        ctx.push((
            "reason",
            Value::from(status.canonical_reason().unwrap_or("Error")),
        ));
        ctx.push(("message", Value::from(message)));
        self.render("error.html", ctx)
    }

    fn common(&self, lang: Language) -> Vec<(&'static str, Value)> {
        let t = match lang {
            Language::En => self.t_en.clone(),
            Language::Ru => self.t_ru.clone(),
        };
        vec![("lang", Value::from(lang.code())), ("t", t)]
    }

    fn render(&self, name: &str, ctx: Vec<(&'static str, Value)>) -> Result<String, String> {
        let template = self
            .env
            .get_template(name)
            .map_err(|e| self.describe_render(name, &e))?;
        template
            .render(Value::from_iter(ctx))
            .map_err(|e| self.describe_render(name, &e))
    }

    /// Names the file where a render error happened: the override's path, or the built-in's name.
    fn describe_render(&self, rendering: &str, err: &Error) -> String {
        let origin = err.name().unwrap_or(rendering);
        let place = match self.overrides.get(origin) {
            Some(path) => located(path, err),
            None => format!(
                "built-in template {origin}{}: {}",
                err.line().map(|l| format!(":{l}")).unwrap_or_default(),
                describe(err)
            ),
        };
        if origin == rendering {
            place
        } else {
            format!("rendering {rendering}: {place}")
        }
    }

    /// Renders every page kind, with and without an error message, and the mail, in every
    /// language, with sample values.
    fn check(&self) -> Result<(), String> {
        let frame = Frame {
            site_title: "Site",
            page_title: Some("Page"),
            prefix: "/_pagegate",
        };
        let bare = Frame {
            page_title: None,
            ..frame
        };
        for lang in Language::ALL {
            for frame in [frame, bare] {
                for page in sample_pages(frame) {
                    self.page(&page, lang)?;
                }
            }
            for page_title in ["Page", ""] {
                for name in ["Name", ""] {
                    self.login_mail(
                        &LoginMail {
                            site_title: "Site",
                            page_title,
                            name,
                            code: "123456",
                            link: "https://example.com/_pagegate/link?token=x",
                            valid_minutes: 15,
                        },
                        lang,
                    )?;
                }
            }
            for (name, until) in [("Name", Some("2027-01-31")), ("", None)] {
                self.welcome_mail(
                    &WelcomeMail {
                        site_title: "Site",
                        page_title: "Page",
                        name,
                        link: "https://example.com/page/",
                        until,
                    },
                    lang,
                )?;
            }
            self.error_html(StatusCode::NOT_FOUND, "Not here.", lang)?;
            let samples = Samples::new();
            for page in samples.pages(AdminFrame {
                site_title: "Site",
                prefix: "/_pagegate",
                csrf: "csrf",
                admin: Some("admin@example.com"),
            }) {
                self.admin_page(&page, lang)?;
            }
            self.admin_mail(
                &AdminMail {
                    site_title: "Site",
                    code: "123456",
                    valid_minutes: 10,
                },
                lang,
            )?;
        }
        Ok(())
    }
}

/// One of each page kind, with and without an error, for the start-up check and the tests.
pub(crate) fn sample_pages(frame: Frame<'_>) -> Vec<Page<'_>> {
    let mut pages = Vec::new();
    for error in [None, Some("wrong_code")] {
        pages.push(Page::EmailForm {
            frame,
            next: "/page",
            csrf: "csrf",
            email: "a@example.com",
            error: error.map(|_| "invalid_email"),
        });
        pages.push(Page::CodeForm {
            frame,
            email: "a@example.com",
            next: "/page",
            csrf: "csrf",
            code_length: 6,
            error,
        });
    }
    for (elsewhere, error) in [(false, None), (true, Some("link_confirm_account"))] {
        pages.push(Page::LinkConfirm {
            frame,
            token: "token",
            next: "/page",
            csrf: "csrf",
            account: "a***@example.com",
            elsewhere,
            error,
        });
    }
    for error in [None, Some("csrf")] {
        pages.push(Page::SigninConfirm {
            frame,
            token: "token",
            page: "page",
            csrf: "csrf",
            account: "a***@example.com",
            error,
        });
    }
    pages.push(Page::SigninGone {
        frame,
        login: "/_pagegate/login?next=%2Fpage",
    });
    pages.push(Page::RateLimited {
        frame,
        retry_after_minutes: 5,
    });
    pages.push(Page::LoggedOut { frame, home: "/" });
    pages.push(Page::Message {
        frame,
        title_key: "link_invalid_title",
        message_key: "link_invalid",
    });
    pages
}

/// The override folder's template files, sorted by name.
fn override_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: cannot read the template folder: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| format!("{}: cannot read the template folder: {e}", dir.display()))?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with('.') || !OVERRIDE_EXTENSIONS.iter().any(|ext| name.ends_with(ext)) {
            continue;
        }
        if !path.is_file() {
            continue;
        }
        files.push((name.to_owned(), path));
    }
    files.sort();
    Ok(files)
}

/// The translation table as a template value.
fn table_value(lang: Language) -> Value {
    Value::from_iter(
        i18n::table(lang)
            .iter()
            .map(|(key, text)| (*key, Value::from(*text))),
    )
}

/// `error` (the key, or none) and `error_text` (its text, or none) for a form page.
fn error_fields(error: Option<&str>, lang: Language) -> [(&'static str, Value); 2] {
    [
        ("error", Value::from(error)),
        (
            "error_text",
            Value::from(error.map(|k| message_text(k, lang))),
        ),
    ]
}

/// The text for a message key. An unknown key is the flow's bug: it is logged, and the visitor
/// reads the generic error message rather than a broken page.
fn message_text(key: &str, lang: Language) -> &'static str {
    i18n::lookup(lang, key).unwrap_or_else(|| {
        tracing::error!(key, "unknown message key for a pagegate page");
        i18n::lookup(lang, "error").unwrap_or("Error")
    })
}

fn describe(err: &Error) -> String {
    match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    }
}

fn located(path: &Path, err: &Error) -> String {
    format!(
        "{}{}: {}",
        path.display(),
        err.line().map(|l| format!(":{l}")).unwrap_or_default(),
        describe(err)
    )
}

/// Prints a value. In HTML templates strings are escaped with [`escape_html`](super::escape_html)
/// (which, unlike minijinja's default, leaves `/` alone, so URLs stay readable); everything else
/// goes to minijinja's formatter.
fn format_value(out: &mut Output<'_>, state: &State<'_, '_>, value: &Value) -> Result<(), Error> {
    if matches!(state.auto_escape(), AutoEscape::Html) && !value.is_safe() {
        if let Some(text) = value.as_str() {
            return Ok(out.write_str(&super::escape_html(text))?);
        }
    }
    minijinja::escape_formatter(out, state, value)
}

/// The `fill` filter: replaces each `{name}` in the text with the keyword argument `name`.
/// In HTML templates the text and plain values are escaped here and the result is marked safe,
/// so a value already marked safe (`{% set x %}<b>{{ email }}</b>{% endset %}`) keeps its markup.
/// A placeholder without a value, or a value without a placeholder, is an error.
fn fill(state: &State<'_, '_>, text: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let html = matches!(state.auto_escape(), AutoEscape::Html);
    let text_safe = text.is_safe();
    let Some(source) = text.as_str() else {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("fill: expected a string, got {}", text.kind()),
        ));
    };
    let mut out = String::with_capacity(source.len() + 32);
    let push_text = |out: &mut String, piece: &str| {
        if html && !text_safe {
            out.push_str(&super::escape_html(piece));
        } else {
            out.push_str(piece);
        }
    };
    let mut rest = source;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        push_text(&mut out, &rest[..start]);
        let value: Value = kwargs.get(name).map_err(|_| {
            Error::new(
                ErrorKind::MissingArgument,
                format!("fill: no value for {{{name}}}"),
            )
        })?;
        if value.is_undefined() {
            return Err(Error::new(
                ErrorKind::UndefinedError,
                format!("fill: the value for {{{name}}} is undefined"),
            ));
        }
        let value_text = value.to_string();
        if html && !value.is_safe() {
            out.push_str(&super::escape_html(&value_text));
        } else {
            out.push_str(&value_text);
        }
        rest = &after[end + 1..];
    }
    push_text(&mut out, rest);
    kwargs.assert_all_used()?;
    Ok(if html {
        Value::from_safe_string(out)
    } else {
        Value::from(out)
    })
}

/// The `plural` filter: picks the form of a `|`-separated plural entry for `n` by the rules of
/// the template's `lang`, and puts `n` in for `{n}`.
fn plural(state: &State<'_, '_>, forms: &str, n: u64) -> Result<String, Error> {
    let lang = state
        .lookup("lang")
        .and_then(|v| v.as_str().and_then(Language::from_code))
        .unwrap_or(Language::En);
    let forms: Vec<&str> = forms.split('|').collect();
    let index = i18n::plural_index(lang, n).min(forms.len().saturating_sub(1));
    let form = forms.get(index).copied().unwrap_or_default();
    Ok(form.replace("{n}", &n.to_string()))
}

/// The `urlencode` filter: the value percent-encoded for a query parameter (everything but
/// letters, digits and `-._~`).
fn urlencode(value: &str) -> String {
    const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// The `href` filter: the value if it is a local path (`/…`, not `//…`) or an http(s) URL,
/// else `/`. Keeps `javascript:` and the like out of links built from request data.
fn href(value: &str) -> String {
    if is_safe_href(value) {
        value.to_owned()
    } else {
        "/".to_owned()
    }
}

pub(crate) fn is_safe_href(value: &str) -> bool {
    if value
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    {
        return false;
    }
    if let Some(rest) = value.strip_prefix('/') {
        return !rest.starts_with('/');
    }
    let lower = value.get(..8).unwrap_or(value).to_ascii_lowercase();
    (lower.starts_with("https://") && value.len() > 8)
        || (lower.starts_with("http://") && value.len() > 7)
}
