use std::path::Path;

use super::templates::{is_safe_href, sample_pages};
use super::*;

fn builtin() -> Templates {
    Templates::new(None).expect("built-in templates compile")
}

const FRAME: Frame<'static> = Frame {
    site_title: "Demo School",
    page_title: Some("Rust course"),
    prefix: "/_pagegate",
};

fn assert_clean(html: &str, what: &str) {
    for leftover in ["{{", "}}", "{%", "%}", "{#"] {
        assert!(
            !html.contains(leftover),
            "{what}: leftover {leftover}\n{html}"
        );
    }
    // A placeholder `fill` did not replace.
    for placeholder in [
        "{page}",
        "{site}",
        "{email}",
        "{n}",
        "{minutes}",
        "{digits}",
    ] {
        assert!(!html.contains(placeholder), "{what}: {placeholder}\n{html}");
    }
}

#[test]
fn every_page_renders_in_every_language() {
    let templates = builtin();
    let bare = Frame {
        page_title: None,
        ..FRAME
    };
    for lang in Language::ALL {
        for frame in [FRAME, bare] {
            for page in sample_pages(frame) {
                let what = format!("{} {lang:?}", page.template_name());
                let html = templates.page(&page, lang).expect(&what);
                assert_clean(&html, &what);
                assert!(html.starts_with("<!doctype html>"), "{what}");
                assert!(
                    html.contains(&format!("<html lang=\"{}\">", lang.code())),
                    "{what}"
                );
                assert!(html.contains("name=\"viewport\""), "{what}");
                assert!(html.contains("<h1>"), "{what}");
                assert!(html.contains("Demo School"), "{what}");
                assert!(!html.contains("<script"), "{what}");
                assert!(
                    !html.contains("http://") && !html.contains("https://"),
                    "{what}"
                );
                if frame.page_title.is_some() && page.template_name() == "email_form.html" {
                    assert!(html.contains("Rust course"), "{what}");
                }
            }
        }
    }
}

#[test]
fn forms_post_the_right_fields_to_the_right_endpoints() {
    let templates = builtin();
    let html = templates
        .page(
            &Page::EmailForm {
                frame: FRAME,
                next: "/course/1",
                csrf: "tok",
                email: "a@b.org",
                error: None,
            },
            Language::En,
        )
        .expect("render");
    assert!(html.contains(r#"action="/_pagegate/login""#), "{html}");
    assert!(html.contains(r#"name="email" type="email" value="a@b.org""#));
    assert!(html.contains(r#"autocomplete="email""#));
    assert!(html.contains(r#"<label for="email">"#));
    assert!(html.contains(r#"name="next" value="/course/1""#));
    assert!(html.contains(r#"name="csrf" value="tok""#));
    assert!(html.contains("Sign in to Rust course"));
    assert!(!html.contains("role=\"alert\""));

    let html = templates
        .page(
            &Page::CodeForm {
                frame: FRAME,
                email: "a@b.org",
                next: "/course/1",
                csrf: "tok",
                code_length: 8,
                error: Some("wrong_code"),
            },
            Language::En,
        )
        .expect("render");
    assert!(html.contains(r#"action="/_pagegate/verify""#), "{html}");
    assert!(html.contains(r#"action="/_pagegate/login""#), "{html}");
    assert!(html.contains(r#"inputmode="numeric""#));
    assert!(html.contains(r#"autocomplete="one-time-code""#));
    // Room for a code pasted with spaces or dashes ("123 456"); the server strips them.
    assert!(html.contains(r#"maxlength="16""#));
    assert!(html.contains(r#"<label for="code">"#));
    assert!(html.contains("8 digits"));
    assert!(html.contains("That code is not right or has expired."));
    assert!(html.contains(r#" aria-invalid="true">"#));
    assert!(html.contains("<strong class=\"addr\">a@b.org</strong>"));
    // The code form and the "new code" form each carry email, next and csrf.
    assert_eq!(html.matches(r#"name="email" value="a@b.org""#).count(), 2);
    assert_eq!(html.matches(r#"name="next" value="/course/1""#).count(), 2);
    assert_eq!(html.matches(r#"name="csrf" value="tok""#).count(), 2);
    assert!(
        html.contains(r#"href="/_pagegate/login?next=%2Fcourse%2F1""#),
        "{html}"
    );

    let html = templates
        .page(
            &Page::LinkConfirm {
                frame: FRAME,
                token: "T0K3N",
                next: "/course/1",
                csrf: "tok",
                account: "an***@example.com",
                elsewhere: false,
                error: None,
            },
            Language::En,
        )
        .expect("render");
    assert!(
        html.contains(r#"method="post" action="/_pagegate/link""#),
        "{html}"
    );
    assert!(html.contains(r#"name="token" value="T0K3N""#));
    assert!(html.contains(r#"name="next" value="/course/1""#));
    assert!(html.contains(r#"name="csrf" value="tok""#));
    assert!(html.contains("an***@example.com"), "the account is named");
    assert!(
        !html.contains("confirm_account"),
        "same browser: one button"
    );

    let html = templates
        .page(
            &Page::LinkConfirm {
                frame: FRAME,
                token: "T0K3N",
                next: "/course/1",
                csrf: "tok",
                account: "an***@example.com",
                elsewhere: true,
                error: Some("link_confirm_account"),
            },
            Language::En,
        )
        .expect("render");
    assert!(html.contains(r#"name="confirm_account" value="yes" required"#));
    assert!(html.contains("another browser"), "{html}");
    assert!(html.contains("Please confirm that this is your account."));
}

#[test]
fn a_shops_sign_in_link_posts_its_token_and_a_spent_one_offers_the_code_sign_in() {
    let templates = builtin();
    let html = templates
        .page(
            &Page::SigninConfirm {
                frame: FRAME,
                token: "T0K3N",
                page: "course",
                csrf: "tok",
                account: "an***@example.com",
                error: None,
            },
            Language::En,
        )
        .expect("render");
    assert!(
        html.contains(r#"method="post" action="/_pagegate/signin""#),
        "{html}"
    );
    assert!(html.contains(r#"name="token" value="T0K3N""#));
    assert!(html.contains(r#"name="page" value="course""#));
    assert!(html.contains(r#"name="csrf" value="tok""#));
    assert!(html.contains("an***@example.com"), "the account is named");
    assert!(html.contains("open Rust course"), "{html}");
    assert!(
        !html.contains("another browser") && !html.contains("confirm_account"),
        "the shop asked for it, not a browser: no warning"
    );

    let html = templates
        .page(
            &Page::SigninGone {
                frame: FRAME,
                login: "/_pagegate/login?next=%2Fcourse%2F",
            },
            Language::En,
        )
        .expect("render");
    assert!(html.contains("already used or has expired"), "{html}");
    assert!(
        html.contains(r#"href="/_pagegate/login?next=%2Fcourse%2F""#),
        "{html}"
    );
    let html = templates
        .page(
            &Page::SigninGone {
                frame: FRAME,
                login: "javascript:alert(1)",
            },
            Language::En,
        )
        .expect("render");
    assert!(html.contains(r#"href="/""#), "only local links: {html}");
}

#[test]
fn hostile_input_is_escaped() {
    let templates = builtin();
    let evil = "<script>alert(1)</script>\"'&";
    let frame = Frame {
        site_title: evil,
        page_title: Some(evil),
        prefix: "/_pagegate",
    };
    let pages = [
        Page::EmailForm {
            frame,
            next: evil,
            csrf: evil,
            email: evil,
            error: Some("invalid_email"),
        },
        Page::CodeForm {
            frame,
            email: evil,
            next: evil,
            csrf: evil,
            code_length: 6,
            error: Some(evil),
        },
        Page::LinkConfirm {
            frame,
            token: evil,
            next: evil,
            csrf: evil,
            account: evil,
            elsewhere: true,
            error: None,
        },
        Page::SigninConfirm {
            frame,
            token: evil,
            page: evil,
            csrf: evil,
            account: evil,
            error: Some("csrf"),
        },
        Page::SigninGone { frame, login: evil },
        Page::RateLimited {
            frame,
            retry_after_minutes: 3,
        },
        Page::LoggedOut { frame, home: evil },
        Page::Message {
            frame,
            title_key: evil,
            message_key: evil,
        },
    ];
    for lang in Language::ALL {
        for page in &pages {
            let html = templates.page(page, lang).expect("render");
            assert!(
                !html.contains("<script"),
                "{}\n{html}",
                page.template_name()
            );
            assert!(!html.contains("\"'&"), "{}\n{html}", page.template_name());
        }
    }
    let html = templates
        .error_html(StatusCode::BAD_REQUEST, evil, Language::En)
        .expect("render");
    assert!(!html.contains("<script"), "{html}");
    assert!(html.contains("&lt;script&gt;"), "{html}");
}

#[test]
fn links_built_from_request_data_stay_harmless() {
    let templates = builtin();
    for home in [
        "javascript:alert(1)",
        "//evil.example/",
        "/\\evil.example",
        " /x",
    ] {
        let html = templates
            .page(&Page::LoggedOut { frame: FRAME, home }, Language::En)
            .expect("render");
        assert!(
            html.contains(r#"<a class="btn" href="/">"#),
            "{home}\n{html}"
        );
    }
    // `next` only ever goes into a link as a query value.
    let html = templates
        .page(
            &Page::CodeForm {
                frame: FRAME,
                email: "a@b.org",
                next: "javascript:alert(1)&x=\"y\"",
                csrf: "c",
                code_length: 6,
                error: None,
            },
            Language::En,
        )
        .expect("render");
    assert!(
        html.contains(r#"href="/_pagegate/login?next=javascript%3Aalert%281%29%26x%3D%22y%22""#),
        "{html}"
    );
    assert!(is_safe_href("/"));
    assert!(is_safe_href("/course?x=1"));
    assert!(is_safe_href("https://example.com/"));
    assert!(is_safe_href("HTTP://example.com"));
    assert!(!is_safe_href("https://"));
    assert!(!is_safe_href("javascript:alert(1)"));
    assert!(!is_safe_href("data:text/html,x"));
    assert!(!is_safe_href("//evil.example"));
    assert!(!is_safe_href(""));
}

#[test]
fn unknown_message_keys_fall_back_to_the_generic_error() {
    let templates = builtin();
    let html = templates
        .page(
            &Page::Message {
                frame: FRAME,
                title_key: "no_such_title",
                message_key: "no_such_message",
            },
            Language::En,
        )
        .expect("render");
    assert!(html.contains("Something went wrong on our side"), "{html}");
    assert!(!html.contains("no_such"), "{html}");
}

#[test]
fn messages_and_plurals_in_russian() {
    let templates = builtin();
    let render = |page: Page<'_>| templates.page(&page, Language::Ru).expect("render");
    for (minutes, want) in [
        (1, "1 минуту"),
        (3, "3 минуты"),
        (5, "5 минут"),
        (21, "21 минуту"),
    ] {
        let html = render(Page::RateLimited {
            frame: FRAME,
            retry_after_minutes: minutes,
        });
        assert!(
            html.contains(&format!("через {want}.")),
            "{minutes}\n{html}"
        );
    }
    // Zero would read "try again in 0 minutes".
    let html = render(Page::RateLimited {
        frame: FRAME,
        retry_after_minutes: 0,
    });
    assert!(html.contains("через 1 минуту."), "{html}");
    let html = render(Page::Message {
        frame: FRAME,
        title_key: "link_invalid_title",
        message_key: "link_invalid",
    });
    assert!(html.contains("Ссылка недействительна"), "{html}");
    let html = render(Page::CodeForm {
        frame: FRAME,
        email: "a@b.org",
        next: "/",
        csrf: "c",
        code_length: 6,
        error: Some("csrf"),
    });
    assert!(html.contains("Код состоит из 6 цифр."), "{html}");
    assert!(html.contains("Срок действия формы истёк"), "{html}");
    assert!(!html.contains(r#" aria-invalid="true">"#), "{html}");
}

#[test]
fn every_message_key_renders_in_every_language() {
    let templates = builtin();
    for lang in Language::ALL {
        let generic = templates
            .page(
                &Page::Message {
                    frame: FRAME,
                    title_key: "error_title",
                    message_key: "no_such_key",
                },
                lang,
            )
            .expect("render");
        for key in MESSAGE_KEYS {
            let html = templates
                .page(
                    &Page::Message {
                        frame: FRAME,
                        title_key: "error_title",
                        message_key: key,
                    },
                    lang,
                )
                .expect("render");
            if *key != "error" {
                assert_ne!(
                    html, generic,
                    "{lang:?} {key} falls back to the generic text"
                );
            }
        }
    }
}

/// Every `t.key` a built-in template uses is in every language's table.
#[test]
fn templates_use_only_known_words() {
    let sources = [
        include_str!("templates/base.html"),
        include_str!("templates/email_form.html"),
        include_str!("templates/code_form.html"),
        include_str!("templates/link_confirm.html"),
        include_str!("templates/signin_confirm.html"),
        include_str!("templates/signin_gone.html"),
        include_str!("templates/rate_limited.html"),
        include_str!("templates/logged_out.html"),
        include_str!("templates/message.html"),
        include_str!("templates/error.html"),
        include_str!("templates/login_mail_subject.txt"),
        include_str!("templates/login_mail.txt"),
        include_str!("templates/login_mail.html"),
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
    assert!(used > 30, "the scan found only {used} uses");
}

fn mail(name: &'static str, page_title: &'static str) -> LoginMail<'static> {
    LoginMail {
        site_title: "Demo School",
        page_title,
        name,
        code: "482913",
        link: "https://school.example/_pagegate/link?token=abc&next=%2Fcourse",
        valid_minutes: 15,
    }
}

#[test]
fn login_mail_in_both_languages() {
    let templates = builtin();
    for lang in Language::ALL {
        for (name, page) in [("Ada", "Rust course"), ("", "Rust course"), ("Ada", "")] {
            let what = format!("{lang:?} name={name:?} page={page:?}");
            let m = templates.login_mail(&mail(name, page), lang).expect(&what);
            assert!(!m.subject.contains("482913"), "{what}: code in the subject");
            assert!(!m.subject.contains('\n'), "{what}");
            assert!(m.subject.contains("Demo School"), "{what}: {}", m.subject);
            if !page.is_empty() {
                assert!(m.subject.contains("Rust course"), "{what}: {}", m.subject);
            }
            for part in [&m.text, &m.html] {
                assert_clean(part, &what);
                assert!(part.contains("482913"), "{what}");
                let validity = match lang {
                    Language::En => "15 minutes",
                    Language::Ru => "15 минут",
                };
                assert!(part.contains(validity), "{what}\n{part}");
                if name.is_empty() {
                    assert!(!part.contains("Ada"), "{what}");
                } else {
                    assert!(part.contains("Ada"), "{what}");
                }
            }
            assert!(m.text.contains(mail(name, page).link), "{what}\n{}", m.text);
            assert!(
                m.html.contains(
                    "href=\"https://school.example/_pagegate/link?token=abc&amp;next=%2Fcourse\""
                ),
                "{what}\n{}",
                m.html
            );
            assert!(m.html.contains(&format!("<html lang=\"{}\">", lang.code())));
            // The subject in the HTML title is escaped, the text part is not HTML at all.
            assert!(!m.text.contains("&amp;"), "{what}\n{}", m.text);
        }
    }
    let en = templates
        .login_mail(&mail("Ada", "Rust course"), Language::En)
        .expect("render");
    assert_eq!(en.subject, "Sign in to Rust course — Demo School");
    assert!(
        en.text.starts_with("Hello Ada,\n\nHere is your code"),
        "{}",
        en.text
    );
    assert!(en.text.contains("\n    482913\n"), "{}", en.text);
    assert!(en.text.contains("ignore this mail"));
    let ru = templates
        .login_mail(&mail("", "Rust course"), Language::Ru)
        .expect("render");
    assert_eq!(ru.subject, "Вход на страницу «Rust course» — Demo School");
    assert!(ru.text.starts_with("Здравствуйте!\n\n"), "{}", ru.text);
    assert!(ru.text.contains("действуют 15 минут"), "{}", ru.text);
    assert!(
        !format!("{ru:?}").contains("482913"),
        "Debug prints the code"
    );
}

#[test]
fn hostile_mail_fields_are_escaped_in_html_and_one_line_in_the_subject() {
    let templates = builtin();
    let m = templates
        .login_mail(
            &LoginMail {
                site_title: "<b>S</b>\r\nBcc: x@evil.example",
                page_title: "<script>x</script>",
                name: "<img src=x>",
                code: "123456",
                link: "javascript:alert(1)",
                valid_minutes: 1,
            },
            Language::En,
        )
        .expect("render");
    assert!(
        !m.subject.contains('\n') && !m.subject.contains('\r'),
        "{}",
        m.subject
    );
    assert!(!m.html.contains("<script") && !m.html.contains("<img") && !m.html.contains("<b>"));
    assert!(!m.html.contains("javascript:alert(1)\""), "{}", m.html);
    assert!(m.text.contains("1 minute "), "{}", m.text);
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write override");
}

#[test]
fn an_override_replaces_a_template() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        dir.path(),
        "email_form.html",
        "{% extends \"base.html\" %}{% block heading %}Members only: {{ page_title }}{% endblock %}\
         {% block content %}{% include \"extra.html\" %}<form action=\"{{ prefix }}/login\">{{ t.send_code }}</form>{% endblock %}",
    );
    write(
        dir.path(),
        "extra.html",
        "<p class=\"extra\">{{ email }}</p>",
    );
    write(dir.path(), "style.css", "body { background: papayawhip; }");
    write(dir.path(), "notes.md", "{{ not a template");
    let templates = Templates::new(Some(dir.path())).expect("overrides compile");
    assert!(templates.is_overridden("email_form.html"));
    assert!(!templates.is_overridden("code_form.html"));
    let html = templates
        .page(
            &Page::EmailForm {
                frame: FRAME,
                next: "/",
                csrf: "c",
                email: "<x@y>",
                error: None,
            },
            Language::Ru,
        )
        .expect("render");
    assert!(
        html.contains("<h1>Members only: Rust course</h1>"),
        "{html}"
    );
    assert!(
        html.contains("<p class=\"extra\">&lt;x@y&gt;</p>"),
        "{html}"
    );
    assert!(html.contains("Получить код"), "{html}");
    assert!(html.contains("papayawhip"), "{html}");
    // Pages not overridden keep the built-in template (with the overridden style).
    let html = templates
        .page(
            &Page::RateLimited {
                frame: FRAME,
                retry_after_minutes: 2,
            },
            Language::En,
        )
        .expect("render");
    assert!(html.contains("Too many attempts"), "{html}");
}

#[test]
fn a_broken_override_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "code_form.html", "<p>\n{% if %}\n");
    let err = Templates::new(Some(dir.path())).expect_err("syntax error");
    let path = dir.path().join("code_form.html");
    assert!(err.contains(&format!("{}:2", path.display())), "{err}");
    assert!(err.contains("syntax error"), "{err}");
}

#[test]
fn an_override_with_a_misspelt_word_is_an_error_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        dir.path(),
        "login_mail.txt",
        "{{ t.mail_greting }}\n{{ code }}\n",
    );
    let err = Templates::new(Some(dir.path())).expect_err("undefined word");
    assert!(
        err.contains(&dir.path().join("login_mail.txt").display().to_string()),
        "{err}"
    );
    assert!(err.contains("undefined"), "{err}");

    // A broken base.html is reported as the base, whichever page found it.
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        dir.path(),
        "base.html",
        "{{ frame.nope }}{% block heading %}{% endblock %}",
    );
    let err = Templates::new(Some(dir.path())).expect_err("undefined variable");
    assert!(
        err.contains(&dir.path().join("base.html").display().to_string()),
        "{err}"
    );
}

#[test]
fn a_missing_override_folder_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope");
    let err = Templates::new(Some(&missing)).expect_err("missing folder");
    assert!(err.contains(&missing.display().to_string()), "{err}");
}

#[test]
fn html_response_headers() {
    let response = html_response(StatusCode::OK, "<p>x</p>".into());
    let h = response.headers();
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(get("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(get("cache-control"), Some("no-store"));
    assert_eq!(get("x-frame-options"), Some("DENY"));
    assert_eq!(get("x-content-type-options"), Some("nosniff"));
    assert_eq!(get("referrer-policy"), Some("no-referrer"));
    assert_eq!(
        get("content-security-policy"),
        Some("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
    );
}

#[tokio::test]
async fn error_page_uses_the_common_look() {
    use http_body_util::BodyExt;
    let response = error_page(StatusCode::BAD_GATEWAY, "Upstream <down> & out");
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        response
            .headers()
            .get("referrer-policy")
            .and_then(|v| v.to_str().ok()),
        Some("no-referrer")
    );
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let html = String::from_utf8(body.to_vec()).expect("utf-8");
    assert_clean(&html, "error page");
    assert!(html.contains("<h1>502 Bad Gateway</h1>"), "{html}");
    assert!(html.contains("Upstream &lt;down&gt; &amp; out"), "{html}");
    assert!(html.contains("<title>502 Bad Gateway</title>"), "{html}");
    assert!(html.contains("class=\"card\""), "{html}");
}

#[test]
fn plain_fallback_escapes() {
    let html = plain_error_html(StatusCode::NOT_FOUND, "<x>");
    assert!(html.contains("&lt;x&gt;") && html.contains("404 Not Found"));
}

#[test]
fn escapes_markup() {
    assert_eq!(
        escape_html("<a href=\"x\">'&'</a>"),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
}

/// Renders every page and the mail, in every language, to files: into a temporary folder, or
/// into `PAGEGATE_UI_DUMP` for a look in a browser
/// (`PAGEGATE_UI_DUMP=/tmp/pagegate-ui cargo test --lib ui::tests::dump_samples`).
#[test]
fn dump_samples() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = std::env::var_os("PAGEGATE_UI_DUMP")
        .map_or_else(|| temp.path().to_path_buf(), std::path::PathBuf::from);
    let dir = dir.as_path();
    std::fs::create_dir_all(dir).expect("dump folder");
    let templates = builtin();
    let email = "ada.lovelace@example.com";
    for lang in Language::ALL {
        let pages = [
            (
                "email_form",
                Page::EmailForm {
                    frame: FRAME,
                    next: "/course/",
                    csrf: "c",
                    email: "",
                    error: None,
                },
            ),
            (
                "email_form_error",
                Page::EmailForm {
                    frame: FRAME,
                    next: "/course/",
                    csrf: "c",
                    email: "ada@",
                    error: Some("invalid_email"),
                },
            ),
            (
                "code_form",
                Page::CodeForm {
                    frame: FRAME,
                    email,
                    next: "/course/",
                    csrf: "c",
                    code_length: 6,
                    error: None,
                },
            ),
            (
                "code_form_error",
                Page::CodeForm {
                    frame: FRAME,
                    email,
                    next: "/course/",
                    csrf: "c",
                    code_length: 6,
                    error: Some("wrong_code"),
                },
            ),
            (
                "link_confirm",
                Page::LinkConfirm {
                    frame: FRAME,
                    token: "t",
                    next: "/course/",
                    csrf: "c",
                    account: "an***@example.com",
                    elsewhere: true,
                    error: None,
                },
            ),
            (
                "signin_confirm",
                Page::SigninConfirm {
                    frame: FRAME,
                    token: "t",
                    page: "course",
                    csrf: "c",
                    account: "an***@example.com",
                    error: None,
                },
            ),
            (
                "signin_gone",
                Page::SigninGone {
                    frame: FRAME,
                    login: "/_pagegate/login?next=%2Fcourse%2F",
                },
            ),
            (
                "rate_limited",
                Page::RateLimited {
                    frame: FRAME,
                    retry_after_minutes: 15,
                },
            ),
            (
                "logged_out",
                Page::LoggedOut {
                    frame: FRAME,
                    home: "/",
                },
            ),
            (
                "message",
                Page::Message {
                    frame: FRAME,
                    title_key: "link_invalid_title",
                    message_key: "link_invalid",
                },
            ),
        ];
        let code = lang.code();
        for (name, page) in pages {
            let html = templates.page(&page, lang).expect(name);
            std::fs::write(dir.join(format!("{name}_{code}.html")), html).expect("write");
        }
        let mail = templates
            .login_mail(&mail("Ada", "Rust course"), lang)
            .expect("mail");
        std::fs::write(dir.join(format!("mail_{code}.html")), &mail.html).expect("write");
        std::fs::write(
            dir.join(format!("mail_{code}.txt")),
            format!("Subject: {}\n\n{}", mail.subject, mail.text),
        )
        .expect("write");
    }
    let html = templates
        .error_html(
            StatusCode::BAD_GATEWAY,
            "The site behind this gateway cannot be reached right now. Please try again shortly.",
            Language::En,
        )
        .expect("error page");
    std::fs::write(dir.join("error_en.html"), html).expect("write");
    let written: Vec<_> = std::fs::read_dir(dir)
        .expect("read dump")
        .filter_map(Result::ok)
        .collect();
    assert!(
        written.len() >= 2 * 6,
        "expected every page in both languages, got {}",
        written.len()
    );
    for file in written {
        let text = std::fs::read_to_string(file.path()).expect("read sample");
        assert!(
            !text.trim().is_empty() && !text.contains("{{"),
            "{}",
            file.path().display()
        );
    }
}

#[test]
fn welcome_mail_in_both_languages_uses_known_words_and_escapes() {
    let templates = builtin();
    for source in [
        include_str!("templates/welcome_mail_subject.txt"),
        include_str!("templates/welcome_mail.txt"),
        include_str!("templates/welcome_mail.html"),
    ] {
        for (at, _) in source.match_indices("t.") {
            let key: String = source[at + 2..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if source[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue;
            }
            for lang in Language::ALL {
                assert!(i18n::lookup(lang, &key).is_some(), "{lang:?} lacks `{key}`");
            }
        }
    }
    let mail = |name, until| crate::ui::WelcomeMail {
        site_title: "Demo <School>",
        page_title: "Rust course",
        name,
        link: "https://school.example/course/",
        until,
    };
    let en = templates
        .welcome_mail(&mail("Ada", Some("2027-01-31")), Language::En)
        .expect("en");
    assert_eq!(en.subject, "Your access to Rust course — Demo <School>");
    assert!(en.text.contains("Hello Ada,"), "{}", en.text);
    assert!(en.text.contains("through 2027-01-31"), "{}", en.text);
    assert!(en.text.contains("https://school.example/course/"));
    assert!(en.html.contains("href=\"https://school.example/course/\""));
    assert!(en.html.contains("Demo &lt;School&gt;"), "escaped in HTML");
    let ru = templates
        .welcome_mail(&mail("", None), Language::Ru)
        .expect("ru");
    assert!(
        ru.subject.starts_with("Доступ к «Rust course»"),
        "{}",
        ru.subject
    );
    assert!(ru.text.contains("Здравствуйте!"), "{}", ru.text);
    assert!(ru.text.contains("бессрочный"), "{}", ru.text);
}
