//! Mail: what reaches a real SMTP server, what lands in the mail folder, how failures are
//! reported (transient or permanent, always within the configured timeout), and how deferred
//! mail is retried within its bounds. Every `[mail]` setting goes through the configuration
//! parser, as in production.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::smtp::{Refusal, TestSmtp};
use pagegate::config::MailConfig;
use pagegate::mail::{Delivery, MailError, Mailer, Outgoing};

const WAIT: Duration = Duration::from_secs(10);

/// The `[mail]` part of a configuration parsed from `mail_toml`, relative paths taken from `base`.
fn mail_config(mail_toml: &str, base: &Path) -> MailConfig {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[site]]\nhosts = [\"*\"]\nupstream = \"http://127.0.0.1:9\"\n\n{mail_toml}"
    );
    pagegate::config::parse_str(&text, Path::new("mail-test.toml"), base)
        .unwrap_or_else(|e| panic!("test config is invalid: {e}"))
        .mail
}

fn mailer(mail_toml: &str) -> Mailer {
    Mailer::new(&mail_config(mail_toml, Path::new("."))).expect("mailer")
}

fn code_mail(to: &str, code: &str) -> Outgoing {
    Outgoing {
        to: to.to_string(),
        to_name: Some("Анна Петрова".to_string()),
        subject: format!("Ваш код входа: {code}"),
        text: format!("Здравствуйте!\n\nВаш код: {code}\nОн действует 10 минут.\n"),
        html: format!("<p>Здравствуйте!</p><p>Ваш код: <b>{code}</b></p>"),
    }
}

/// A TCP port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test]
async fn smtp_delivers_both_parts_with_a_russian_subject() {
    let server = TestSmtp::start();
    let mailer = mailer(&server.mail_toml("Школа № 5 <no-reply@school.example>"));
    assert_eq!(
        mailer.describe(),
        format!("smtp://127.0.0.1:{} (no TLS)", server.addr().port())
    );

    mailer
        .send(code_mail("anna@example.org", "482913"))
        .await
        .expect("sent");
    let got = server.wait_for(1, WAIT).await;
    let mail = &got[0];

    assert_eq!(mail.from, "no-reply@school.example");
    assert_eq!(mail.to, ["anna@example.org"]);
    let from = mail.decoded_header("From").expect("From");
    assert!(
        from.contains("Школа № 5") && from.contains("<no-reply@school.example>"),
        "{from}"
    );
    let to = mail.decoded_header("To").expect("To");
    assert!(
        to.contains("Анна Петрова") && to.contains("<anna@example.org>"),
        "{to}"
    );
    assert_eq!(mail.subject().as_deref(), Some("Ваш код входа: 482913"));
    assert!(
        mail.data.is_ascii(),
        "the message is transfer-encoded:\n{}",
        mail.data
    );
    let content_type = mail.header("Content-Type").expect("Content-Type");
    assert!(
        content_type.starts_with("multipart/alternative"),
        "{content_type}"
    );
    assert!(
        mail.header("Message-ID")
            .is_some_and(|id| id.ends_with("@school.example>"))
    );
    assert!(mail.header("Date").is_some());

    let text = mail.text().expect("text part");
    assert!(text.contains("Ваш код: 482913"), "{text}");
    let html = mail.html().expect("html part");
    assert!(html.contains("<b>482913</b>"), "{html}");
    assert_eq!(mail.code(6).as_deref(), Some("482913"));
}

#[tokio::test]
async fn smtp_keeps_sending_over_the_pool_and_from_clones() {
    let server = TestSmtp::start();
    let mailer = mailer(&server.mail_toml("no-reply@school.example"));
    let clone = mailer.clone();
    mailer
        .send(code_mail("a@example.org", "111111"))
        .await
        .expect("first");
    clone
        .send(code_mail("b@example.org", "222222"))
        .await
        .expect("second");
    mailer
        .send(code_mail("c@example.org", "333333"))
        .await
        .expect("third");
    let got = server.wait_for(3, WAIT).await;
    let codes: Vec<_> = got.iter().filter_map(|m| m.code(6)).collect();
    assert_eq!(codes, ["111111", "222222", "333333"]);
}

#[tokio::test]
async fn header_injection_through_subject_or_name_goes_nowhere() {
    let server = TestSmtp::start();
    let mailer = mailer(&server.mail_toml("no-reply@school.example"));
    let mut message = code_mail("anna@example.org", "123456");
    message.subject = "Hello\r\nBcc: thief@evil.example".to_string();
    message.to_name = Some("Anna\r\nCc: thief@evil.example".to_string());
    mailer.send(message).await.expect("sent");
    let got = server.wait_for(1, WAIT).await;
    assert_eq!(got[0].to, ["anna@example.org"]);
    assert!(got[0].header("Bcc").is_none() && got[0].header("Cc").is_none());
    assert!(!got[0].data.contains("\r\nBcc:") && !got[0].data.contains("\r\nCc:"));
}

#[tokio::test]
async fn a_bad_recipient_is_a_message_error_and_nothing_is_sent() {
    let server = TestSmtp::start();
    let mailer = mailer(&server.mail_toml("no-reply@school.example"));
    for to in [
        "",
        "anna",
        "anna@example.org, b@example.org",
        "a@b\r\nRCPT TO:<x@y.z>",
    ] {
        let err = mailer
            .send(code_mail(to, "123456"))
            .await
            .expect_err("refused");
        assert!(matches!(err, MailError::Message(_)), "{to:?}: {err}");
    }
    // A good message after them is the first the server receives.
    mailer
        .send(code_mail("anna@example.org", "654321"))
        .await
        .expect("sent");
    let got = server.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1, "only the good message arrived");
    assert_eq!(got[0].to, ["anna@example.org"]);
    assert_eq!(server.rcpt_attempts(), 1, "nothing else was tried");
}

#[tokio::test]
async fn file_transport_writes_one_eml_in_a_private_folder() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = mail_config(
        "[mail]\ntransport = \"file\"\nfrom = \"Школа <no-reply@school.example>\"\ndir = \"outbox\"\n",
        dir.path(),
    );
    let outbox = dir.path().join("outbox");
    assert!(!outbox.exists());
    let mailer = Mailer::new(&config).expect("mailer");
    assert_eq!(mailer.describe(), format!("file ({})", outbox.display()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&outbox)
            .expect("outbox")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    }

    mailer
        .send(code_mail("anna@example.org", "654321"))
        .await
        .expect("written");
    let files: Vec<_> = std::fs::read_dir(&outbox)
        .expect("read outbox")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].extension().and_then(|e| e.to_str()), Some("eml"));
    let raw = std::fs::read_to_string(&files[0]).expect("read eml");
    assert_eq!(
        common::smtp::header(&raw, "Subject").map(|s| common::smtp::decode_words(&s)),
        Some("Ваш код входа: 654321".to_string())
    );
    let text = common::smtp::part(&raw, "text/plain").expect("text part");
    assert!(text.contains("Ваш код: 654321"), "{text}");
    assert!(common::smtp::part(&raw, "text/html").is_some());
}

#[tokio::test]
async fn file_transport_recreates_a_removed_folder() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = mail_config(
        "[mail]\ntransport = \"file\"\ndir = \"outbox\"\n",
        dir.path(),
    );
    let mailer = Mailer::new(&config).expect("mailer");
    std::fs::remove_dir(dir.path().join("outbox")).expect("remove outbox");
    mailer
        .send(code_mail("anna@example.org", "654321"))
        .await
        .expect("written");
    assert_eq!(
        std::fs::read_dir(dir.path().join("outbox"))
            .expect("outbox")
            .count(),
        1
    );
}

#[tokio::test]
async fn console_is_the_default_and_sends() {
    let mailer = mailer("");
    assert!(
        mailer.describe().starts_with("console"),
        "{}",
        mailer.describe()
    );
    mailer
        .send(code_mail("anna@example.org", "000000"))
        .await
        .expect("printed");
}

#[tokio::test]
async fn a_server_that_is_down_is_a_quick_transient_error() {
    let port = closed_port();
    let mailer = mailer(&format!(
        "[mail]\ntransport = \"smtp\"\n\n[mail.smtp]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\ntimeout = \"5s\"\n"
    ));
    let started = Instant::now();
    let err = mailer
        .send(code_mail("anna@example.org", "123456"))
        .await
        .expect_err("nobody listens");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            err,
            MailError::Send {
                transient: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_that_never_speaks_is_cut_off_by_the_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Accept and hold every connection without a word.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mailer = mailer(&format!(
        "[mail]\ntransport = \"smtp\"\n\n[mail.smtp]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\ntimeout = \"1s\"\n"
    ));
    for _ in 0..2 {
        let started = Instant::now();
        let err = mailer
            .send(code_mail("anna@example.org", "123456"))
            .await
            .expect_err("no greeting");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(
            matches!(
                err,
                MailError::Send {
                    transient: true,
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_5xx_refusal_is_permanent_and_masks_the_address() {
    for refusal in [Refusal::Rcpt(550), Refusal::Data(554)] {
        let server = TestSmtp::start_refusing(refusal);
        let mailer = mailer(&server.mail_toml("no-reply@school.example"));
        let started = Instant::now();
        let err = mailer
            .send(code_mail("anna.petrova@example.org", "123456"))
            .await
            .expect_err("refused");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{refusal:?}: {:?}",
            started.elapsed()
        );
        assert!(
            matches!(
                err,
                MailError::Send {
                    transient: false,
                    ..
                }
            ),
            "{refusal:?}: {err}"
        );
        assert!(!err.is_transient());
        let shown = err.to_string();
        assert!(!shown.contains("anna.petrova"), "{shown}");
        assert!(server.messages().is_empty());
    }
    // The RCPT refusal echoes the address; it is reported as *@domain.
    let server = TestSmtp::start_refusing(Refusal::Rcpt(550));
    let err = mailer(&server.mail_toml("no-reply@school.example"))
        .send(code_mail("anna.petrova@example.org", "123456"))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("<*@example.org>"), "{err}");
}

#[tokio::test]
async fn a_4xx_refusal_is_transient_and_a_later_try_gets_through() {
    for refusal in [Refusal::Rcpt(450), Refusal::Data(451)] {
        let server = TestSmtp::start_refusing(refusal);
        let mailer = mailer(&server.mail_toml("no-reply@school.example"));
        let err = mailer
            .send(code_mail("anna@example.org", "123456"))
            .await
            .expect_err("deferred");
        assert!(
            matches!(
                err,
                MailError::Send {
                    transient: true,
                    ..
                }
            ),
            "{refusal:?}: {err}"
        );
        assert!(err.is_transient());

        server.set_refusal(Refusal::None);
        mailer
            .send(code_mail("anna@example.org", "777777"))
            .await
            .expect("retry is accepted");
        let got = server.wait_for(1, WAIT).await;
        assert_eq!(got.len(), 1, "{refusal:?}");
        assert_eq!(got[0].code(6).as_deref(), Some("777777"));
    }
}

#[tokio::test]
async fn describe_never_shows_the_password() {
    let mailer = mailer(
        "[mail]\ntransport = \"smtp\"\nfrom = \"no-reply@school.example\"\n\n[mail.smtp]\nhost = \"smtp.example.com\"\nusername = \"mailer@school.example\"\npassword = \"s3cret-Passw0rd\"\n",
    );
    let shown = mailer.describe();
    assert_eq!(shown, "smtp://smtp.example.com:587 (starttls, with login)");
    assert!(!format!("{mailer:?}").contains("s3cret"));

    let tls = self::mailer(
        "[mail]\ntransport = \"smtp\"\n\n[mail.smtp]\nhost = \"smtp.example.com\"\nsecurity = \"tls\"\n",
    );
    assert_eq!(tls.describe(), "smtp://smtp.example.com:465 (tls)");
}

#[test]
fn a_mailer_is_made_outside_a_runtime() {
    // Start-up code may build the mailer before the runtime exists; no connection is made yet.
    let port = closed_port();
    let mailer = mailer(&format!(
        "[mail]\ntransport = \"smtp\"\n\n[mail.smtp]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\n"
    ));
    assert!(mailer.describe().contains(&port.to_string()));
}

/// A scripted SMTP server: every connection is answered normally, except that on the first one
/// the reply to the message data is held back until the client's next command (a reply arriving
/// late). Returns its port and a log of (connection number, command) pairs.
async fn late_reply_server() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<(usize, String)>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log_ = std::sync::Arc::clone(&log);
    tokio::spawn(async move {
        let mut number = 0;
        while let Ok((socket, _)) = listener.accept().await {
            let log = std::sync::Arc::clone(&log_);
            let this = number;
            number += 1;
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                let mut late: Option<&str> = None;
                let mut in_data = false;
                write.write_all(b"220 fake ESMTP\r\n").await.ok();
                while let Ok(Some(line)) = lines.next_line().await {
                    if in_data {
                        if line == "." {
                            in_data = false;
                            log.lock().expect("log").push((this, ".".to_string()));
                            if this == 0 {
                                late = Some("250 queued late\r\n");
                            } else {
                                write.write_all(b"250 queued\r\n").await.ok();
                            }
                        }
                        continue;
                    }
                    if let Some(reply) = late.take() {
                        write.write_all(reply.as_bytes()).await.ok();
                    }
                    let verb = line
                        .split(' ')
                        .next()
                        .unwrap_or_default()
                        .to_ascii_uppercase();
                    log.lock().expect("log").push((this, verb.clone()));
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-fake\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            in_data = true;
                            b"354 go ahead\r\n"
                        }
                        "QUIT" => {
                            write.write_all(b"221 bye\r\n").await.ok();
                            break;
                        }
                        _ => b"250 ok\r\n",
                    };
                    write.write_all(reply).await.ok();
                }
                log.lock().expect("log").push((this, "CLOSED".to_string()));
            });
        }
    });
    (port, log)
}

#[tokio::test]
async fn a_send_cut_off_mid_conversation_does_not_poison_the_pool() {
    let (port, log) = late_reply_server().await;
    let mailer = mailer(&format!(
        "[mail]\ntransport = \"smtp\"\n\n[mail.smtp]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\ntimeout = \"1s\"\n"
    ));
    let err = mailer
        .send(code_mail("anna@example.org", "111111"))
        .await
        .expect_err("no reply to the data");
    assert!(err.is_transient(), "{err}");

    // Had the first connection gone back to the pool, this message would travel on it and read
    // the late reply meant for the first one. It must go on a fresh connection: the cut-off one
    // is closed, not kept.
    until(WAIT, "the cut-off connection closed", || {
        log.lock()
            .expect("log")
            .contains(&(0, "CLOSED".to_string()))
    })
    .await;
    mailer
        .send(code_mail("anna@example.org", "222222"))
        .await
        .expect("second message");
    let log = log.lock().expect("log").clone();
    let mail_from: Vec<usize> = log
        .iter()
        .filter(|(_, verb)| verb == "MAIL")
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(mail_from, [0, 1], "{log:?}");
}

/// A mailer for `server` that retries for `retry_for`.
fn retrying_mailer(server: &TestSmtp, retry_for: Duration) -> Mailer {
    let mut config = mail_config(&server.mail_toml("no-reply@school.example"), Path::new("."));
    config.retry_for = retry_for;
    Mailer::new(&config).expect("mailer")
}

/// Waits until `condition` holds, checking every 10 ms; panics after `limit` with `what`.
async fn until(limit: Duration, what: &str, condition: impl Fn() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn deferred_mail_is_retried_until_the_server_takes_it_once() {
    let server = TestSmtp::start_refusing(Refusal::RcptFirst(451, 2));
    let mailer = retrying_mailer(&server, Duration::from_secs(600));
    assert_eq!(mailer.waiting(), 0);

    let sending = tokio::spawn({
        let mailer = mailer.clone();
        async move {
            mailer
                .deliver(code_mail("anna@example.org", "246810"), Delivery::default())
                .await
        }
    });
    until(WAIT, "a first refusal", || server.rcpt_attempts() >= 1).await;
    assert_eq!(mailer.waiting(), 1, "the deferred message waits");
    sending.await.expect("task").expect("delivered in the end");

    assert_eq!(server.rcpt_attempts(), 3, "two refusals, then accepted");
    let got = server.messages();
    assert_eq!(got.len(), 1, "exactly one message");
    assert_eq!(got[0].code(6).as_deref(), Some("246810"));
    assert_eq!(mailer.waiting(), 0);
}

#[tokio::test]
async fn a_permanent_refusal_is_not_retried() {
    let server = TestSmtp::start_refusing(Refusal::Rcpt(550));
    let mailer = retrying_mailer(&server, Duration::from_secs(600));
    let started = Instant::now();
    let err = mailer
        .deliver(code_mail("anna@example.org", "123456"), Delivery::default())
        .await
        .expect_err("refused");
    assert!(!err.is_transient(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // `deliver` returns once it has given up, and nothing is left waiting for a retry.
    assert_eq!(mailer.waiting(), 0);
    assert_eq!(server.rcpt_attempts(), 1, "tried once");
}

#[tokio::test]
async fn retries_stop_at_retry_for_and_at_the_end_of_the_message_s_use() {
    let server = TestSmtp::start_refusing(Refusal::Rcpt(451));
    // Bounded by mail.retry_for …
    let mailer = retrying_mailer(&server, Duration::from_secs(3));
    let started = Instant::now();
    let err = mailer
        .deliver(code_mail("anna@example.org", "123456"), Delivery::default())
        .await
        .expect_err("never accepted");
    let took = started.elapsed();
    assert!(err.is_transient(), "the last failure: {err}");
    assert!(
        took < Duration::from_secs(4),
        "gave up within the bound: {took:?}"
    );
    let tries = server.rcpt_attempts();
    assert!(tries >= 2, "retried: {tries} tries");
    assert_eq!(mailer.waiting(), 0);

    // … and by the message's own use, when that is shorter (a code about to expire).
    let mailer = retrying_mailer(&server, Duration::from_secs(600));
    let started = Instant::now();
    let delivery = Delivery {
        useful_for: Some(Duration::from_secs(2)),
        key: None,
    };
    mailer
        .deliver(code_mail("anna@example.org", "123456"), delivery)
        .await
        .expect_err("never accepted");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(server.rcpt_attempts() > tries, "retried again");
    // Given up for good: nothing is left waiting for a retry.
    assert_eq!(mailer.waiting(), 0);

    // With retry_for = 0s, a message is tried once.
    let once = TestSmtp::start_refusing(Refusal::Rcpt(451));
    let mailer = retrying_mailer(&once, Duration::ZERO);
    mailer
        .deliver(code_mail("anna@example.org", "123456"), Delivery::default())
        .await
        .expect_err("deferred");
    assert_eq!(once.rcpt_attempts(), 1);
}

#[tokio::test]
async fn a_newer_code_replaces_the_one_waiting_so_only_the_newest_arrives() {
    let server = TestSmtp::start_refusing(Refusal::Rcpt(451));
    let mailer = retrying_mailer(&server, Duration::from_secs(600));
    let key = || Delivery {
        useful_for: Some(Duration::from_secs(600)),
        key: Some("school\0anna@example.org".into()),
    };
    let old = tokio::spawn({
        let mailer = mailer.clone();
        async move {
            mailer
                .deliver(code_mail("anna@example.org", "111111"), key())
                .await
        }
    });
    until(WAIT, "the old code deferred", || {
        server.rcpt_attempts() >= 1
    })
    .await;
    server.set_refusal(Refusal::None);
    mailer
        .deliver(code_mail("anna@example.org", "222222"), key())
        .await
        .expect("the new code is sent");
    let old = old.await.expect("task").expect_err("replaced");
    assert!(matches!(old, MailError::Replaced), "{old}");
    let codes: Vec<_> = server.messages().iter().filter_map(|m| m.code(6)).collect();
    assert_eq!(codes, ["222222"]);
    assert_eq!(mailer.waiting(), 0);
}

#[tokio::test]
async fn closing_drops_waiting_mail_at_once() {
    let server = TestSmtp::start_refusing(Refusal::Rcpt(451));
    let mailer = retrying_mailer(&server, Duration::from_secs(600));
    let waiting = tokio::spawn({
        let mailer = mailer.clone();
        async move {
            mailer
                .deliver(code_mail("anna@example.org", "123456"), Delivery::default())
                .await
        }
    });
    until(WAIT, "a first refusal", || server.rcpt_attempts() >= 1).await;
    let started = Instant::now();
    mailer.close();
    let err = waiting.await.expect("task").expect_err("dropped");
    assert!(matches!(err, MailError::Stopped), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(mailer.waiting(), 0);
    let late = mailer
        .deliver(code_mail("anna@example.org", "123456"), Delivery::default())
        .await
        .expect_err("closed");
    assert!(matches!(late, MailError::Stopped), "{late}");
}
